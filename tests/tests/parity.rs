//! The acceptance test of the Llama path: on the built-in default model (SmolLM2-135M-Instruct,
//! Q4_1 GGUF), greedy continuations equal HF transformers' fp32 output token for token and the
//! last-prompt-position logits agree within 1e-3 relative. Fixtures come from
//! scripts/reference/make_parity_fixtures.py. Also: the fused and unfused norm paths agree.

use rtllm::engine::BuildConfig;
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::sampling::SamplingParams;
use rtllm::tokenizer::ChatMessage;
use serde_json::Value;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("parity")
}

fn read_json(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// The reference build: weights dequantized to f32 at load, as HF transformers does.
fn dequantized() -> BuildConfig {
    let mut build = BuildConfig::default();
    build.selection.dequantize_weights = true;
    build
}

/// The default model, or `None` with the reason printed (scripts/test.sh always fetches it).
fn load(build: &BuildConfig) -> Option<Model> {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
        return None;
    }
    Some(Model::load(&ModelSpec::default_model(), rtllm_tests::registry(), build).expect("default model loads"))
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_tokens) }
}

/// max |a - b| over max |b|.
fn rel_err(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    ours.iter().zip(theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn greedy_tokens_and_logits_match_transformers() {
    let Some(mut model) = load(&dequantized()) else { return };
    let fixture = read_json("smollm2_greedy.json");
    let full = read_json("smollm2_last_logits.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "the fixture has at least 8 prompts");
    let mut report = Vec::new();
    let mut continuations = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let prompt_ids = ids(&case["prompt_ids"]);
        // Our tokenizer gives HF's prompt ids (chat prompts through the GGUF chat template).
        let ours = if case["is_chat"].as_bool() == Some(true) {
            let messages: Vec<ChatMessage> = case["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| ChatMessage::new(m["role"].as_str().unwrap_or(""), m["content"].as_str().unwrap_or("")))
                .collect();
            let text = model.tokenizer.apply_chat_template(&messages, true).expect("chat template renders");
            model.tokenizer.encode(&text, false).expect("encodes")
        } else {
            model.tokenizer.encode(case["prompt"].as_str().expect("prompt"), true).expect("encodes")
        };
        assert_eq!(ours, prompt_ids, "{name}: prompt token ids differ from HF's");

        let want = ids(&case["continuation_ids"]);
        continuations.push((name, prompt_ids.clone(), want));

        // Last-prompt-position logits: the full vector where the fixture has it, else the top 20.
        let logits = &rtllm_tests::last_logits(&mut model.engine, &prompt_ids);
        let full_case = full["cases"].as_array().and_then(|c| c.iter().find(|c| c["name"] == case["name"]));
        let err = if let Some(fc) = full_case {
            let reference: Vec<f32> = fc["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect();
            assert_eq!(reference.len(), logits.len(), "{name}: vocab size");
            rel_err(logits, &reference)
        } else {
            let top: Vec<(usize, f32)> = case["last_prompt_logits"]["top20"]
                .as_array()
                .expect("top20")
                .iter()
                .map(|p| (p[0].as_u64().unwrap_or(0) as usize, p[1].as_f64().unwrap_or(f64::NAN) as f32))
                .collect();
            let ours: Vec<f32> = top.iter().map(|(i, _)| logits[*i]).collect();
            let theirs: Vec<f32> = top.iter().map(|(_, v)| *v).collect();
            rel_err(&ours, &theirs)
        };
        // The fixture rounds to 5 significant digits (≤ 5e-5 relative of the largest logit).
        assert!(err <= 1e-3, "{name}: last-position logits differ by {err:e} relative (limit 1e-3)");
        report.push(format!("{name}: logits rel err {err:.2e}"));
    }
    // Greedy continuations through the executor, each prompt alone.
    let llm = rtllm_tests::start(model);
    for (name, prompt_ids, want) in continuations {
        let got = rtllm_tests::greedy_ids(&llm, &[prompt_ids], &greedy(want.len())).remove(0);
        assert_eq!(got, want, "{name}: greedy continuation differs from HF's");
        report.push(format!("{name}: {} tokens equal", want.len()));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn fused_and_unfused_norms_give_the_same_tokens() {
    let mut unfused_build = dequantized();
    unfused_build.selection.disabled_ops.push("fused_add_rmsnorm".into());
    let Some(fused) = load(&dequantized()) else { return };
    let unfused = load(&unfused_build).expect("loads when the fused one did");
    let count = |m: &Model, op: &str| {
        m.engine.single().expect("one engine").graph().nodes.iter().filter(|n| n.op == op).count()
    };
    assert!(count(&fused, "fused_add_rmsnorm") > 0, "the fused build uses fused_add_rmsnorm");
    assert_eq!(count(&unfused, "fused_add_rmsnorm"), 0, "the unfused build does not");
    assert!(count(&unfused, "add") > 0);
    let (fused, unfused) = (rtllm_tests::start(fused), rtllm_tests::start(unfused));
    let fixture = read_json("smollm2_greedy.json");
    for case in fixture["cases"].as_array().expect("cases").iter().take(3) {
        let prompt = vec![ids(&case["prompt_ids"])];
        let a = rtllm_tests::greedy_ids(&fused, &prompt, &greedy(16));
        let b = rtllm_tests::greedy_ids(&unfused, &prompt, &greedy(16));
        assert_eq!(a, b, "{}: fused and unfused paths disagree", case["name"]);
    }
}
