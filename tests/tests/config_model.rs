//! examples/config-model end to end: the model assembled from examples/config-model/smollm.toml
//! (no Rust) on the default model's weights generates HF transformers' greedy tokens.

use rtllm::engine::BuildConfig;
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::sampling::SamplingParams;
use rtllm_models::toml::ModelDefinition;
use serde_json::Value;

#[test]
fn config_model_generates_hf_tokens() {
    let gguf = default_model_path();
    if !gguf.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", gguf.display());
        return;
    }
    let root = rtllm_tests::repo_root();
    let definition = ModelDefinition::from_toml_file(&root.join("examples/config-model/smollm.toml"))
        .expect("the TOML model parses");
    let mut build = BuildConfig::default();
    build.selection.dequantize_weights = true;
    let spec = ModelSpec::path(&gguf).with_definition(definition);
    let model = Model::load(&spec, rtllm_tests::registry(), &build).expect("builds");
    let graph = model.engine.single().expect("one engine").graph();
    let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op.as_str()).collect();
    // The file writes add + rmsnorm; the fusion pass made them the CPU's fused_add_rmsnorm.
    assert!(ops.contains(&"fused_add_rmsnorm") && !ops.contains(&"add"), "the file's graph, fused, is what ran");
    let llm = rtllm_tests::start(model);

    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/parity/smollm2_greedy.json")).expect("fixture"),
    )
    .expect("json");
    for case in fixture["cases"].as_array().expect("cases").iter().take(4) {
        let ids = |v: &Value| -> Vec<u32> {
            v.as_array().expect("ids").iter().map(|x| x.as_u64().unwrap_or(0) as u32).collect()
        };
        let (prompt, want) = (ids(&case["prompt_ids"]), ids(&case["continuation_ids"]));
        let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(want.len()) };
        let got = rtllm_tests::greedy_ids(&llm, &[prompt], &params).remove(0);
        assert_eq!(got, want, "{}: the TOML-defined model matches HF", case["name"]);
    }
}

#[test]
fn the_llm_api_accepts_a_model_definition() {
    let gguf = default_model_path();
    if !gguf.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", gguf.display());
        return;
    }
    let root = rtllm_tests::repo_root();
    let registry = std::sync::Arc::new(rtllm_tests::registry_with(rtllm_tests::builtin_plugin_files()));
    let defined = rtllm::api::Llm::builder()
        .registry(registry.clone())
        .model(&gguf)
        .model_definition(root.join("examples/config-model/smollm.toml"))
        .build()
        .expect("builds from the TOML file");
    let builtin = rtllm::api::Llm::builder().registry(registry).model(&gguf).build().expect("builds");
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(12) };
    let a = defined.generate(["The capital of France is"], &params).expect("generates");
    let b = builtin.generate(["The capital of France is"], &params).expect("generates");
    assert_eq!(a[0].outputs[0].token_ids, b[0].outputs[0].token_ids);
    assert!(a[0].outputs[0].text.starts_with(" Paris"), "{:?}", a[0].outputs[0].text);
}
