//! The HF-directory route end to end: the default model exported as an HF directory (f32
//! safetensors in two shards with model.safetensors.index.json, config.json, tokenizer.json and
//! tokenizer_config.json, written by `weights::hf_export` as `rtllm quantize` writes them for a
//! GGUF source) loads through the same API and greedily generates HF's tokens.

use rtllm::engine::BuildConfig;
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::sampling::SamplingParams;
use rtllm::weights::{hf_export, load_model_source, write_safetensors, LoadedModel};
use rtllm_plugin_api::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `model` as an HF directory with f32 weights in two shards.
fn export_hf_dir(model: &LoadedModel, dir: &Path) {
    let names: Vec<&str> = model.weights.names().collect();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = BTreeMap::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = part
            .iter()
            .map(|name| {
                let t = model.weights.get(name).expect("listed");
                let values = model.weights.to_f32(name).expect("dequantizes");
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.to_string(), t.shape.clone(), bytes)
            })
            .collect();
        let tensors: Vec<(&str, DType, &[usize], &[u8])> =
            data.iter().map(|(n, s, b)| (n.as_str(), DType::F32, s.as_slice(), b.as_slice())).collect();
        write_safetensors(&dir.join(shard), &tensors, &BTreeMap::from([("format".to_string(), "pt".to_string())]))
            .expect("writes a shard");
        for name in part.iter() {
            weight_map.insert(name.to_string(), shard.to_string());
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("writes the index");
    let config = hf_export::config_json(&model.config, "float32");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("writes config.json");
    let spec = model.tokenizer.as_ref().expect("the GGUF carries a tokenizer");
    let (tokenizer, tokenizer_config) =
        hf_export::tokenizer_files(spec, model.config.max_position_embeddings).expect("a byte-level BPE tokenizer");
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("writes tokenizer.json");
    std::fs::write(dir.join("tokenizer_config.json"), tokenizer_config.to_string())
        .expect("writes tokenizer_config.json");
}

#[test]
fn default_model_as_an_hf_directory_generates_hf_tokens() {
    let gguf = default_model_path();
    if !gguf.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", gguf.display());
        return;
    }
    let source = load_model_source(&gguf).expect("GGUF loads");
    let dir = tempfile::tempdir().expect("temp dir");
    export_hf_dir(&source, dir.path());
    drop(source);

    let model = Model::load(&ModelSpec::path(dir.path()), rtllm_tests::registry(), &BuildConfig::default())
        .expect("HF dir loads");
    assert_eq!(model.config.num_hidden_layers, 30);
    let graph = model.engine.single().expect("one engine").graph();
    assert!(graph.weight_uses().iter().all(|(_, d)| *d == DType::F32), "f32 weights used as stored");
    let tokenizer = model.tokenizer.clone();
    let llm = rtllm_tests::start(model);

    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(rtllm_tests::repo_root().join("tests/fixtures/parity/smollm2_greedy.json"))
            .expect("fixture"),
    )
    .expect("json");
    for case in fixture["cases"].as_array().expect("cases").iter().filter(|c| c["is_chat"] == false).take(3) {
        let prompt = case["prompt"].as_str().expect("prompt");
        let ids = tokenizer.encode(prompt, true).expect("encodes");
        let want: Vec<u32> =
            case["prompt_ids"].as_array().expect("ids").iter().map(|x| x.as_u64().unwrap_or(0) as u32).collect();
        assert_eq!(ids, want, "{prompt:?}: tokenizer.json tokenizes like HF");
        let cont: Vec<u32> = case["continuation_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .take(16)
            .map(|x| x.as_u64().unwrap_or(0) as u32)
            .collect();
        let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(cont.len()) };
        let got = rtllm_tests::greedy_ids(&llm, &[ids], &params).remove(0);
        assert_eq!(got, cont, "{prompt:?}: continuation");
    }
}
