//! Tests of the safetensors reader/writer and of loading HF directories.

use super::*;
use crate::weights::load_model_source;
use rtllm_plugin_api::quant;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn fp8_and_i8_tensors_load_as_stored_and_are_never_converted_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let fp8 = [0x38u8, 0xb8, 0x7e, 0x01]; // 1, -1, 448, 2^-9
    let ints = [0x01u8, 0xff];
    write_safetensors(&path, &[("w", DType::F8_E4M3, &[2, 2], &fp8), ("n", DType::I8, &[2], &ints)], &BTreeMap::new())
        .unwrap();
    let header = parse_header(&std::fs::read(&path).unwrap()).unwrap();
    let names: Vec<_> = header.tensors.iter().map(|t| (t.name.as_str(), t.dtype)).collect();
    assert!(names.contains(&("w", Some(DType::F8_E4M3))) && names.contains(&("n", Some(DType::I8))), "{names:?}");
    let raw = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    assert!(std::str::from_utf8(&raw[8..8 + header_len]).unwrap().contains("\"F8_E4M3\""), "safetensors' own name");
    let mut store = WeightStore::new();
    load_safetensors(&path, &mut store).unwrap();
    let w = store.get("w").unwrap();
    assert_eq!((w.dtype, w.shape.clone(), w.bytes()), (DType::F8_E4M3, vec![2, 2], fp8.as_slice()));
    let err = store.to_f32("w").unwrap_err().to_string();
    assert!(err.contains("scale"), "{err}");
    assert!(store.to_f32("n").unwrap_err().to_string().contains("integer"));
}

#[test]
fn write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let a = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b: Vec<u8> = vec![0x80, 0x3f, 0x00, 0x40]; // bf16 1.0, 2.0
    let q = quant::quantize_row_to_vec(DType::Q4_0, &[0.5; 64]).unwrap();
    let ids = 7i64.to_le_bytes().to_vec();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(
        &path,
        &[
            ("a", DType::F32, &[2, 3], &a),
            ("b", DType::BF16, &[2], &b),
            ("q", DType::Q4_0, &[2, 32], &q),
            ("i", DType::I64, &[1], &ids),
        ],
        &meta,
    )
    .unwrap();
    let mut store = WeightStore::new();
    let header = load_safetensors(&path, &mut store).unwrap();
    assert_eq!(header.metadata, meta);
    assert_eq!(store.get("a").unwrap().shape, vec![2, 3]);
    assert_eq!(store.to_f32("a").unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(store.to_f32("b").unwrap(), vec![1.0, 2.0]);
    assert_eq!(store.to_f32("q").unwrap(), vec![0.5; 64]);
    assert_eq!(store.get("i").unwrap().bytes(), ids.as_slice());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!((8 + u64::from_le_bytes(bytes[..8].try_into().unwrap())) % 8, 0, "data is 8-byte aligned");
}

fn file_with_header(header: &str, data: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.resize(out.len() + data, 0);
    out
}

#[test]
fn malformed_headers_are_rejected_with_reasons() {
    let err = |h: &str, data: usize| parse_header(&file_with_header(h, data)).unwrap_err();
    assert!(err(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4).contains("outside the data section"));
    assert!(
        err(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8).contains("do not hold shape [3] of F32")
    );
    assert!(err(r#"{"w":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}}"#, 8).contains("unknown dtype \"X9\""));
    assert!(err(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, 8).contains("tensor `w`"));
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(err(overlap, 8).contains("overlap"));
    assert!(err("[1]", 0).contains("not a JSON object"));
    assert!(err("{", 0).contains("not valid JSON"));
    assert!(parse_header(&[1, 2, 3]).unwrap_err().contains("shorter than the 8-byte header length"));
    let mut huge = file_with_header("{}", 0);
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse_header(&huge).unwrap_err().contains("exceeds the file"));
}

#[test]
fn unsupported_dtypes_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, file_with_header(r#"{"w.weight":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, 8))
        .unwrap();
    let err = load_safetensors(&path, &mut WeightStore::new()).unwrap_err().to_string();
    assert!(err.contains("tensor `w.weight` has unsupported dtype F64") && err.contains("m.safetensors"), "{err}");
}

const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 4,
  "hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}"#;

#[test]
fn hf_directory_with_sharded_index_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let embd = f32_bytes(&[0.0; 16]);
    let norm = f32_bytes(&[1.0; 4]);
    let none = BTreeMap::new();
    let shard1 = dir.path().join("model-00001-of-00002.safetensors");
    let shard2 = dir.path().join("model-00002-of-00002.safetensors");
    write_safetensors(&shard1, &[("model.embed_tokens.weight", DType::F32, &[4, 4], &embd)], &none).unwrap();
    write_safetensors(&shard2, &[("model.norm.weight", DType::F32, &[4], &norm)], &none).unwrap();
    let index = r#"{"metadata": {}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();

    let m = load_model_source(dir.path()).unwrap();
    assert_eq!(m.config.num_key_value_heads, 1);
    assert_eq!(m.weights.len(), 2);
    assert_eq!(m.weights.to_f32("model.norm.weight").unwrap(), vec![1.0; 4]);
    assert_eq!(m.tokenizer_json, Some(dir.path().join("tokenizer.json")));
    assert_eq!(m.tokenizer_config_json, None);
    assert!(m.tokenizer.is_none());
    // Also reachable through the config.json path.
    assert_eq!(load_model_source(&dir.path().join("config.json")).unwrap().weights.len(), 2);

    // An index entry whose tensor is not in its shard is an error naming both.
    let bad = index.replace("model.norm.weight\"", "model.norm.bias\"");
    std::fs::write(dir.path().join("model.safetensors.index.json"), bad).unwrap();
    let err = load_model_source(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.norm.bias") && err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn hf_directory_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_model_source(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no config.json"), "{err}");
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    let err = load_model_source(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no *.safetensors"), "{err}");
    std::fs::write(
        dir.path().join("config.json"),
        CONFIG.replace("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3"),
    )
    .unwrap();
    let err = load_model_source(dir.path()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("`num_key_value_heads` (3)"), "{err}");
    let err = load_model_source(&dir.path().join("nope.gguf")).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
}
