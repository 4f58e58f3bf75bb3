//! `rtllm eval` on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF): sliding-window
//! perplexity equals HF transformers' with the same windows over the same tokens
//! (tests/fixtures/eval, made by scripts/reference/make_perplexity_fixture.py), whatever the
//! logits rows per step and with the prefix cache warm; `compare` of a model with itself agrees
//! everywhere with KL 0, and with other models (the Q4_1 weights run quantized against their
//! f32 dequantization; the same weights with a hotter attention) within asserted bounds.

use rtllm::api::Llm;
use rtllm::engine::BuildConfig;
use rtllm::eval::{self, CompareReport};
use rtllm::model::{default_model_path, ModelSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("eval")
}

fn fixture() -> Value {
    let path = fixture_dir().join("smollm2_perplexity.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn default_model_present() -> bool {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
    }
    path.exists()
}

/// The reference build (weights dequantized to f32 as HF does) or the native Q4_1 one.
fn build(dequantize: bool, max_batch_size: usize) -> BuildConfig {
    let mut b = BuildConfig { max_batch_size, max_seq_len: Some(512), ..BuildConfig::default() };
    b.selection.dequantize_weights = dequantize;
    b
}

fn start(spec: ModelSpec, build: BuildConfig) -> Llm {
    Llm::builder()
        .registry(rtllm_tests::registry().clone())
        .model_spec(spec)
        .build_config(build)
        .build()
        .unwrap_or_else(|e| panic!("the default model loads: {e}"))
}

fn rel(ours: f64, theirs: f64) -> f64 {
    (ours - theirs).abs() / theirs.abs()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().expect("a count") as usize
}

#[test]
fn perplexity_matches_transformers() {
    if !default_model_present() {
        return;
    }
    let fx = fixture();
    let text = eval::read_text(&fixture_dir().join(fx["text_file"].as_str().expect("text_file"))).expect("reads");
    let llm = start(ModelSpec::default_model(), build(true, 128));
    let ids = llm.tokenizer().encode(&text, true).expect("encodes");
    let want_ids: Vec<u32> =
        fx["token_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(ids, want_ids, "our token ids of the text differ from HF's");
    for r in fx["results"].as_array().expect("results") {
        let (context, stride) = (usize_of(&r["context_len"]), usize_of(&r["stride"]));
        let ours = eval::perplexity(&llm, &ids, context, stride, false).expect("perplexity runs");
        eprintln!("context {context} stride {stride}: ours {ours:?} HF nll_sum {}", r["nll_sum"]);
        assert_eq!(ours.windows, usize_of(&r["windows"]), "{context}/{stride}: windows");
        assert_eq!(ours.tokens_scored, usize_of(&r["tokens_scored"]), "{context}/{stride}: tokens scored");
        let theirs = r["nll_sum"].as_f64().expect("nll_sum");
        // f32 forward passes of the same weights: the summed NLL agrees to about 1e-7.
        assert!(rel(ours.nll_sum, theirs) < 1e-5, "{context}/{stride}: NLL {} vs HF {theirs}", ours.nll_sum);
        let ppl = r["perplexity"].as_f64().expect("perplexity");
        assert!(rel(ours.perplexity, ppl) < 1e-4, "{context}/{stride}: perplexity {} vs HF {ppl}", ours.perplexity);
    }
}

#[test]
fn perplexity_does_not_depend_on_rows_per_step_or_the_prefix_cache() {
    if !default_model_present() {
        return;
    }
    let fx = fixture();
    let text = eval::read_text(&fixture_dir().join(fx["text_file"].as_str().expect("text_file"))).expect("reads");
    let theirs = fx["results"][0]["nll_sum"].as_f64().expect("nll_sum");
    // The native Q4_1 build, 16 logits rows (so 16 scored positions) per step.
    let llm = start(ModelSpec::default_model(), build(false, 16));
    let ids = llm.tokenizer().encode(&text, true).expect("encodes");
    let first = eval::perplexity(&llm, &ids, 256, 128, false).expect("perplexity runs");
    // Quantized matmuls stay within 1e-4 of HF's f32 forward pass.
    assert!(rel(first.nll_sum, theirs) < 1e-4, "Q4_1 NLL {} vs HF {theirs}", first.nll_sum);
    let wide = start(ModelSpec::default_model(), build(false, 128));
    let one_step = eval::perplexity(&wide, &ids, 256, 128, false).expect("perplexity runs");
    assert!(rel(one_step.nll_sum, first.nll_sum) < 1e-6, "128 rows {} vs 16 rows {}", one_step.nll_sum, first.nll_sum);
    // Again on the same executor: each window's prefix is now in the prefix cache, yet every
    // scored position is computed (a reused one would come back missing and fail the run).
    let again = eval::perplexity(&wide, &ids, 256, 128, false).expect("perplexity runs again");
    assert_eq!(again.tokens_scored, first.tokens_scored);
    assert!(rel(again.nll_sum, one_step.nll_sum) < 1e-6, "{} then {}", one_step.nll_sum, again.nll_sum);
    assert!(wide.stats().kv.reused_blocks > 0, "the second run found cached prefixes: {:?}", wide.stats().kv);
}

fn prompts() -> Vec<String> {
    eval::DEFAULT_PROMPTS.iter().take(8).map(|p| p.to_string()).collect()
}

fn compare(a: &Llm, b: &Llm) -> CompareReport {
    let report = eval::compare(a, b, &prompts(), 16, false).expect("compare runs");
    eprintln!(
        "exact {} prefix {} positions {} top1 {} mean KL {} max KL {}",
        report.exact_match_rate,
        report.mean_prefix_fraction,
        report.positions,
        report.top1_agreement,
        report.mean_kl,
        report.max_kl
    );
    assert_eq!(report.prompts, 8);
    report
}

#[test]
fn compare_with_itself_agrees_everywhere() {
    if !default_model_present() {
        return;
    }
    let a = start(ModelSpec::default_model(), build(false, 128));
    let b = start(ModelSpec::default_model(), build(false, 128));
    let r = compare(&a, &b);
    assert_eq!((r.exact_match_rate, r.mean_prefix_fraction, r.top1_agreement), (1.0, 1.0, 1.0));
    assert_eq!(r.positions, r.per_prompt.iter().map(|p| p.tokens_a).sum::<usize>());
    assert!(r.positions >= 8, "{} positions", r.positions);
    assert!(r.max_kl.abs() <= 1e-9 && r.mean_kl.abs() <= 1e-9, "KL {} / {}", r.mean_kl, r.max_kl);
}

#[test]
fn compare_quantized_with_its_dequantized_reference() {
    if !default_model_present() {
        return;
    }
    let reference = start(ModelSpec::default_model(), build(true, 128));
    let quantized = start(ModelSpec::default_model(), build(false, 128));
    let r = compare(&reference, &quantized);
    // Not the same computation (KL above float noise), yet nearly the same distributions.
    assert!(r.mean_kl > 1e-9 && r.mean_kl < 1e-3, "mean KL {}", r.mean_kl);
    assert!(r.max_kl < 1e-2, "max KL {}", r.max_kl);
    assert!(r.top1_agreement >= 0.95, "top-1 {}", r.top1_agreement);
    assert!(r.exact_match_rate >= 0.75, "exact {}", r.exact_match_rate);
}

/// The Llama TOML definition with a hotter attention (scores scaled by 1.25): the same weights
/// and tokenizer, a different model.
fn hot_definition(dir: &Path) -> PathBuf {
    let src = rtllm_tests::repo_root().join("models/configs/llama.toml");
    let toml = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let from = r#"scale = "1.0 / sqrt(config.head_dim)""#;
    assert!(toml.contains(from), "{} no longer sets the attention scale as {from}", src.display());
    let path = dir.join("llama_hot.toml");
    std::fs::write(&path, toml.replace(from, r#"scale = "1.25 / sqrt(config.head_dim)""#)).expect("writes");
    path
}

#[test]
fn compare_with_a_different_model_gives_bounded_disagreement() {
    if !default_model_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = start(ModelSpec::default_model(), build(false, 128));
    let b = start(ModelSpec::default_model().with_definition_file(hot_definition(dir.path())), build(false, 128));
    let r = compare(&a, &b);
    assert!(r.mean_kl > 0.01 && r.mean_kl < 5.0, "mean KL {}", r.mean_kl);
    assert!(r.max_kl >= r.mean_kl);
    assert!(r.top1_agreement > 0.2 && r.top1_agreement < 1.0, "top-1 {}", r.top1_agreement);
    assert!(r.mean_prefix_fraction < 1.0 && r.exact_match_rate < 1.0, "{r:?}");
    for p in &r.per_prompt {
        assert!(p.common_prefix <= p.tokens_a.min(p.tokens_b));
        assert!((0.0..=1.0).contains(&p.top1_agreement) && p.mean_kl >= 0.0, "{p:?}");
    }
}
