//! Tests of the GGUF parser and the GGUF → model mapping on synthetic files written with
//! [`GgufWriter`], and on the real SmolLM2 file when it has been fetched.

use super::model::{hf_tensor_name, unpermute_rows};
use super::*;
use crate::tokenizer::spec::{TokenType, TokenizerModel};
use crate::weights::{load_gguf, load_model_source, GgufWriter, WeightError};
use rtllm_plugin_api::quant;
use std::path::PathBuf;

/// llama.cpp's `permute` (convert_hf_to_gguf.py): HF row `h*hd + j*hd/2 + i` → row `h*hd + 2i + j`.
fn permute(rows: &[Vec<f32>], n_head: usize) -> Vec<Vec<f32>> {
    let hd = rows.len() / n_head;
    let mut out = rows.to_vec();
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                out[h * hd + 2 * i + j] = rows[h * hd + j * hd / 2 + i].clone();
            }
        }
    }
    out
}

fn matrix(rows: usize, cols: usize, seed: f32) -> Vec<Vec<f32>> {
    (0..rows).map(|r| (0..cols).map(|c| ((r * 31 + c * 7) as f32 * 0.01 + seed).sin()).collect()).collect()
}

fn quantized(dtype: DType, rows: &[Vec<f32>]) -> Vec<u8> {
    rows.iter().flat_map(|r| quant::quantize_row_to_vec(dtype, r).unwrap()).collect()
}

/// Dims of the tiny model: hidden 64, 4 heads (head_dim 16), 2 KV heads, ffn 96, vocab 8.
const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const FFN: usize = 96;
const TOKENS: [&str; 8] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "Ġa", "ab", "Ġab"];

struct Tiny {
    q: Vec<Vec<f32>>,
    k: Vec<Vec<f32>>,
    k_bias: Vec<f32>,
}

/// Writes a tiny llama-like (or qwen2) GGUF with Q/K stored as llama.cpp stores them.
fn tiny_model(arch: &str, qdtype: DType, tied: bool) -> (GgufWriter, Tiny) {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", arch).kv_str("general.name", "tiny");
    w.kv_u32(&format!("{arch}.context_length"), 256)
        .kv_u32(&format!("{arch}.embedding_length"), HIDDEN as u32)
        .kv_u32(&format!("{arch}.block_count"), 2)
        .kv_u32(&format!("{arch}.feed_forward_length"), FFN as u32)
        .kv_u32(&format!("{arch}.attention.head_count"), HEADS as u32)
        .kv_u32(&format!("{arch}.attention.head_count_kv"), KV_HEADS as u32)
        .kv_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5)
        .kv_f32(&format!("{arch}.rope.freq_base"), 100000.0);
    w.kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "smollm")
        .kv_strs("tokenizer.ggml.tokens", &TOKENS);
    w.kv("tokenizer.ggml.token_type", GgufValue::Array([3, 3, 3, 1, 1, 1, 1, 1].map(GgufValue::I32).to_vec()));
    w.kv_strs("tokenizer.ggml.merges", &["a b", "Ġ a", "Ġa b"]);
    w.kv_u32("tokenizer.ggml.bos_token_id", 1).kv_u32("tokenizer.ggml.eos_token_id", 2);
    w.kv_u32("tokenizer.ggml.eot_token_id", 0).kv_u32("tokenizer.ggml.padding_token_id", 0);
    w.kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
    w.kv_str("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}");

    let q = matrix(HEADS * HEAD_DIM, HIDDEN, 0.0);
    let k = matrix(KV_HEADS * HEAD_DIM, HIDDEN, 1.0);
    let k_bias: Vec<f32> = (0..KV_HEADS * HEAD_DIM).map(|i| i as f32).collect();
    let permuted = arch == "llama";
    let (q_st, k_st) = if permuted { (permute(&q, HEADS), permute(&k, KV_HEADS)) } else { (q.clone(), k.clone()) };
    let bias_st: Vec<f32> = if permuted {
        permute(&k_bias.iter().map(|v| vec![*v]).collect::<Vec<_>>(), KV_HEADS).concat()
    } else {
        k_bias.clone()
    };
    let embd = matrix(TOKENS.len(), HIDDEN, 2.0);
    w.tensor("token_embd.weight", DType::Q8_0, &[TOKENS.len(), HIDDEN], quantized(DType::Q8_0, &embd)).unwrap();
    w.tensor_f32("output_norm.weight", &[HIDDEN], &[1.0; HIDDEN]).unwrap();
    if !tied {
        w.tensor("output.weight", DType::F16, &[TOKENS.len(), HIDDEN], quantized(DType::F16, &embd)).unwrap();
    }
    for l in 0..2 {
        let t = |n: &str| format!("blk.{l}.{n}");
        w.tensor(&t("attn_q.weight"), qdtype, &[HEADS * HEAD_DIM, HIDDEN], quantized(qdtype, &q_st)).unwrap();
        w.tensor(&t("attn_k.weight"), qdtype, &[KV_HEADS * HEAD_DIM, HIDDEN], quantized(qdtype, &k_st)).unwrap();
        w.tensor_f32(&t("attn_k.bias"), &[KV_HEADS * HEAD_DIM], &bias_st).unwrap();
        let v = matrix(KV_HEADS * HEAD_DIM, HIDDEN, 3.0);
        w.tensor(&t("attn_v.weight"), qdtype, &[KV_HEADS * HEAD_DIM, HIDDEN], quantized(qdtype, &v)).unwrap();
        let o = matrix(HIDDEN, HEADS * HEAD_DIM, 4.0);
        w.tensor(&t("attn_output.weight"), qdtype, &[HIDDEN, HEADS * HEAD_DIM], quantized(qdtype, &o)).unwrap();
        for (name, shape) in [("ffn_gate", [FFN, HIDDEN]), ("ffn_up", [FFN, HIDDEN]), ("ffn_down", [HIDDEN, FFN])] {
            let m = matrix(shape[0], shape[1], 5.0);
            w.tensor(&t(&format!("{name}.weight")), DType::Q4_1, &shape, quantized(DType::Q4_1, &m)).unwrap();
        }
        w.tensor_f32(&t("attn_norm.weight"), &[HIDDEN], &[1.0; HIDDEN]).unwrap();
        w.tensor_f32(&t("ffn_norm.weight"), &[HIDDEN], &[1.0; HIDDEN]).unwrap();
    }
    (w, Tiny { q, k, k_bias })
}

fn write_temp(w: &GgufWriter) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    w.write(&path).unwrap();
    (dir, path)
}

#[test]
fn llama_config_names_shapes_and_tokenizer() {
    let (w, _) = tiny_model("llama", DType::F32, true);
    let (_dir, path) = write_temp(&w);
    let m = load_model_source(&path).unwrap();
    let c = &m.config;
    assert_eq!((c.architecture.as_str(), c.model_type.as_str()), ("LlamaForCausalLM", "llama"));
    assert_eq!((c.hidden_size, c.intermediate_size, c.num_hidden_layers), (HIDDEN, FFN, 2));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (HEADS, KV_HEADS, HEAD_DIM));
    assert_eq!((c.vocab_size, c.max_position_embeddings), (8, 256));
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 100000.0));
    assert!(c.tie_word_embeddings && !c.mlp_bias);
    assert!(c.attention_bias, "a k bias is present");
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(1), vec![2, 0]));

    let names: Vec<&str> = m.weights.names().collect();
    assert_eq!(names.len(), 2 + 2 * 10);
    for want in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.self_attn.k_proj.bias",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
    ] {
        assert!(m.weights.contains(want), "{want} in {names:?}");
    }
    let down = m.weights.meta("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(down, rtllm_plugin_api::TensorMeta::of(DType::Q4_1, &[HIDDEN, FFN]));
    assert_eq!(m.weights.get("model.embed_tokens.weight").unwrap().shape, vec![8, HIDDEN]);

    let t = m.tokenizer.unwrap();
    assert_eq!(t.model, TokenizerModel::ByteLevelBpe);
    assert_eq!(t.tokens.len(), 8);
    assert_eq!(t.token_types[0], TokenType::Control);
    assert_eq!(t.merges, vec!["a b", "Ġ a", "Ġa b"]);
    assert_eq!(t.pre.as_deref(), Some("smollm"));
    assert_eq!((t.bos_token_id, t.eos_token_id, t.pad_token_id), (Some(1), Some(2), Some(0)));
    assert_eq!(t.eos_token_ids, vec![2, 0]);
    assert!(!t.add_bos_token && !t.add_eos_token);
    assert!(t.chat_template.unwrap().contains("m.content"));
}

#[test]
fn llama_q_k_rows_and_biases_are_unpermuted() {
    let (w, tiny) = tiny_model("llama", DType::F32, true);
    let (_dir, path) = write_temp(&w);
    let m = load_gguf(&path).unwrap();
    assert_eq!(m.weights.to_f32("model.layers.1.self_attn.q_proj.weight").unwrap(), tiny.q.concat());
    assert_eq!(m.weights.to_f32("model.layers.0.self_attn.k_proj.weight").unwrap(), tiny.k.concat());
    assert_eq!(m.weights.to_f32("model.layers.0.self_attn.k_proj.bias").unwrap(), tiny.k_bias);
}

#[test]
fn quantized_q_k_rows_are_moved_byte_exactly() {
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        let (w, tiny) = tiny_model("llama", dtype, false);
        let (_dir, path) = write_temp(&w);
        let m = load_gguf(&path).unwrap();
        let q = m.weights.get("model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!(q.dtype, dtype);
        assert_eq!(q.bytes(), quantized(dtype, &tiny.q).as_slice(), "{dtype}: quantized HF rows survive");
        assert!(!m.config.tie_word_embeddings && m.weights.contains("lm_head.weight"));
    }
}

#[test]
fn qwen2_is_not_permuted_and_has_qkv_bias() {
    let (w, tiny) = tiny_model("qwen2", DType::F32, false);
    let (_dir, path) = write_temp(&w);
    let m = load_gguf(&path).unwrap();
    assert_eq!(m.config.architecture, "Qwen2ForCausalLM");
    assert!(m.config.attention_bias);
    assert_eq!(m.weights.to_f32("model.layers.0.self_attn.q_proj.weight").unwrap(), tiny.q.concat());
    assert_eq!(m.weights.to_f32("model.layers.0.self_attn.k_proj.bias").unwrap(), tiny.k_bias);
}

#[test]
fn unpermute_inverts_permute() {
    let rows: Vec<Vec<f32>> = (0..12).map(|r| vec![r as f32]).collect();
    let permuted = permute(&rows, 3);
    assert_eq!(permuted.concat(), vec![0., 2., 1., 3., 4., 6., 5., 7., 8., 10., 9., 11.]);
    let bytes: Vec<u8> = permuted.concat().iter().flat_map(|v| v.to_le_bytes()).collect();
    let back = unpermute_rows(&bytes, 12, 3).unwrap();
    assert_eq!(back, rows.concat().iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    assert!(unpermute_rows(&bytes, 12, 5).unwrap_err().contains("12 rows"));
    assert!(unpermute_rows(&bytes, 12, 4).unwrap_err().contains("even"));
}

#[test]
fn tensor_names_map_to_hf() {
    for (g, hf) in [
        ("token_embd.weight", Some("model.embed_tokens.weight")),
        ("output.weight", Some("lm_head.weight")),
        ("blk.12.attn_output.weight", Some("model.layers.12.self_attn.o_proj.weight")),
        ("blk.0.attn_v.bias", Some("model.layers.0.self_attn.v_proj.bias")),
        ("blk.3.ffn_gate.weight", Some("model.layers.3.mlp.gate_proj.weight")),
        ("blk.3.attn_norm.weight", Some("model.layers.3.input_layernorm.weight")),
        ("blk.x.attn_q.weight", None),
        ("blk.1.attn_q.scale", None),
        ("rope_freqs.weight", None),
    ] {
        assert_eq!(hf_tensor_name(g).as_deref(), hf, "{g}");
    }
}

#[test]
fn every_value_type_round_trips() {
    let values = [
        GgufValue::U8(200),
        GgufValue::I8(-5),
        GgufValue::U16(60000),
        GgufValue::I16(-30000),
        GgufValue::U32(4_000_000_000),
        GgufValue::I32(-2),
        GgufValue::F32(1.5),
        GgufValue::Bool(true),
        GgufValue::String("héllo".into()),
        GgufValue::U64(u64::MAX),
        GgufValue::I64(i64::MIN),
        GgufValue::F64(-0.25),
        GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I16(1), GgufValue::I16(2)]), GgufValue::Array(vec![])]),
    ];
    let mut w = GgufWriter::new();
    w.version(2).alignment(64);
    for (i, v) in values.iter().enumerate() {
        w.kv(&format!("k{i:02}"), v.clone());
    }
    w.tensor_f32("t", &[3], &[1.0, 2.0, 3.0]).unwrap();
    w.tensor_f32("u", &[2, 1], &[4.0, 5.0]).unwrap();
    let bytes = w.to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!((f.version, f.alignment), (2, 64));
    for (i, v) in values.iter().enumerate() {
        assert_eq!(f.metadata.get(&format!("k{i:02}")), Some(v));
    }
    assert_eq!(f.data_offset % 64, 0);
    let u = f.tensor("u").unwrap();
    assert_eq!((u.offset - f.data_offset, u.n_bytes, u.hf_shape()), (64, 8, vec![2, 1]));
    assert_eq!(&bytes[u.offset as usize..u.offset as usize + 8], &[0, 0, 0x80, 0x40, 0, 0, 0xa0, 0x40]);
    assert!(f.metadata.u32("k07").unwrap_err().to_string().contains("`k07` should be u32, found bool"));
}

fn parse_err(bytes: &[u8]) -> String {
    GgufFile::parse(bytes).unwrap_err().to_string()
}

#[test]
fn malformed_files_give_located_errors() {
    let (w, _) = tiny_model("llama", DType::F32, true);
    let good = w.to_bytes();
    assert!(parse_err(b"GGML....").contains("not a GGUF file"));
    let mut v1 = good.clone();
    v1[4] = 1;
    assert!(parse_err(&v1).contains("version 1"));
    let err = parse_err(&good[..100]);
    assert!(err.contains("at byte 8: tensor count is 22, but at most 2 fit in the rest of the file"), "{err}");
    let mut meta_only = GgufWriter::new();
    meta_only.kv_str("general.architecture", "llama").kv_strs("tokenizer.ggml.tokens", &TOKENS);
    let meta_only = meta_only.to_bytes();
    let err = parse_err(&meta_only[..50]);
    assert!(
        err.starts_with("truncated at byte 24: key of metadata entry 0 (string of 20 bytes) needs 20 bytes, 18 left"),
        "{err}"
    );
    let err = parse_err(&meta_only[..meta_only.len() - 3]);
    assert!(err.contains("truncated at byte") && err.contains("tokenizer.ggml.tokens"), "{err}");
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse_err(&huge).contains("tensor count is 18446744073709551615, but at most"));
    let mut odd = GgufWriter::new();
    odd.alignment(48);
    assert!(parse_err(&odd.to_bytes()).contains("metadata `general.alignment`: 48 is not a power of two"));
    // Cut inside the data section: the last tensor's data runs past the end.
    let err = parse_err(&good[..good.len() - 10]);
    assert!(err.contains("runs past the end of the file"), "{err}");
}

#[test]
fn unsupported_tensor_types_and_architectures_are_named() {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama");
    w.raw_tensor("blk.0.attn_q.weight", 13, vec![256, 2], vec![0; 2 * 176]);
    let bytes = w.to_bytes();
    let f = GgufFile::parse(&bytes).unwrap();
    let err = f.tensors[0].dtype().unwrap_err().to_string();
    assert!(err.contains("`blk.0.attn_q.weight`") && err.contains("unsupported tensor type Q5_K"), "{err}");

    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "gpt2");
    let (_dir, path) = write_temp(&w);
    let err = load_gguf(&path).unwrap_err();
    assert!(matches!(err, WeightError::UnsupportedArchitecture { .. }), "{err}");
    assert!(err.to_string().contains("unsupported architecture `gpt2`"), "{err}");
}

#[test]
fn missing_metadata_is_named() {
    let (mut w, _) = tiny_model("qwen2", DType::F32, true);
    w.kv_str("general.name", "dup");
    let bytes = w.to_bytes();
    assert!(parse_err(&bytes).contains("duplicate metadata key `general.name`"));

    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama").kv_u32("llama.embedding_length", 64);
    let (_dir, path) = write_temp(&w);
    let err = load_gguf(&path).unwrap_err().to_string();
    assert!(err.contains("missing metadata `llama.attention.head_count`"), "{err}");
}

/// The real default model, when scripts/fetch-default-model.sh has fetched it.
#[test]
fn real_smollm2_gguf_loads() {
    let cache = std::env::var_os("RTLLM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rtllm")));
    let Some(path) = cache.map(|c| c.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")).filter(|p| p.is_file()) else {
        eprintln!("skipping: SmolLM2-135M-Instruct.Q4_1.gguf not in the cache (run scripts/fetch-default-model.sh)");
        return;
    };
    let m = load_model_source(&path).unwrap();
    let c = &m.config;
    assert_eq!(c.architecture, "LlamaForCausalLM");
    assert_eq!((c.num_hidden_layers, c.hidden_size, c.intermediate_size), (30, 576, 1536));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.vocab_size, 49152);
    assert!(c.tie_word_embeddings && !c.attention_bias);
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 100000.0));
    assert_eq!(m.weights.len(), 2 + 30 * 9);
    let embd = m.weights.get("model.embed_tokens.weight").unwrap();
    assert_eq!((embd.dtype, embd.shape.clone()), (DType::Q8_0, vec![49152, 576]));
    let q = m.weights.get("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!((q.dtype, q.shape.clone()), (DType::Q4_1, vec![576, 576]));
    assert_eq!(m.weights.get("model.layers.0.self_attn.k_proj.weight").unwrap().shape, vec![192, 576]);
    // Reference: gguf-py 0.19 dequantization of blk.0.attn_q.weight, un-permuted in numpy
    // (w.reshape(9, 32, 2, 576).swapaxes(1, 2)): rows 1 and 33, first four values.
    let q = m.weights.to_f32("model.layers.0.self_attn.q_proj.weight").unwrap();
    for (row, want) in [
        (1, [0xbe230000u32, 0x3ecbc000, 0xbca30000, 0xbfa30000]),
        (33, [0xbd80a000, 0x3e142000, 0x3bd00000, 0xbed13000]),
    ] {
        let got: Vec<u32> = q[row * 576..row * 576 + 4].iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "q_proj row {row}");
    }
    let norm = m.weights.to_f32("model.norm.weight").unwrap();
    assert!(norm.iter().all(|v| v.is_finite()) && norm.len() == 576);
    let t = m.tokenizer.unwrap();
    assert_eq!((t.model, t.tokens.len()), (TokenizerModel::ByteLevelBpe, 49152));
    assert!(!t.merges.is_empty() && t.chat_template.is_some());
}
