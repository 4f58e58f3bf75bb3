//! The quantized path on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF): built with the
//! default config, matmuls read the GGUF blocks as they are (Q4_1 linears, Q8_0 tied head)
//! through the quantized kernels of rtllm-gemm, and greedy tokens equal the dequantized
//! reference path (weights converted to f32 at load) for the first 16 tokens of every fixture
//! prompt. A divergence inside those 16 is accepted only at a near-tie of the reference
//! (fixture margin < 0.05 between its top two logits); how far each prompt agrees beyond
//! that, with the reference and with HF's continuation, is printed.

use rtllm::engine::BuildConfig;
use rtllm::engine::ValueSource;
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::sampling::SamplingParams;
use rtllm_plugin_api::DType;
use serde_json::Value;
use std::path::PathBuf;

/// Tokens that must agree (unless the reference is at a near-tie).
const MUST_AGREE: usize = 16;
/// A top-1/top-2 logit margin below this is a near-tie: activation quantization may flip it.
const NEAR_TIE: f64 = 0.05;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/parity/smollm2_greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn load(build: &BuildConfig) -> Option<Model> {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
        return None;
    }
    Some(Model::load(&ModelSpec::default_model(), rtllm_tests::registry(), build).expect("default model loads"))
}

/// Length of the common prefix.
fn agree(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Dtypes of the weights that `matmul` nodes read.
fn matmul_weight_dtypes(model: &Model) -> Vec<DType> {
    let graph = model.engine.single().expect("one engine").graph();
    graph
        .nodes
        .iter()
        .filter(|n| n.op == "matmul")
        .filter_map(|n| match &graph.values[n.inputs[1].0].source {
            ValueSource::Weight { dtype, .. } => Some(*dtype),
            _ => None,
        })
        .collect()
}

#[test]
fn quantized_path_matches_the_dequantized_path() {
    let Some(quantized) = load(&BuildConfig::default()) else {
        return;
    };
    let mut reference_build = BuildConfig::default();
    reference_build.selection.dequantize_weights = true;
    let reference = load(&reference_build).expect("loads when the quantized build did");

    // The quantized build reads the GGUF blocks; the reference reads f32.
    let q = matmul_weight_dtypes(&quantized);
    assert!(!q.is_empty(), "the graph has matmuls on weights");
    assert!(q.iter().all(|d| matches!(d, DType::Q4_1 | DType::Q8_0)), "quantized build matmul weights: {q:?}");
    assert!(q.contains(&DType::Q4_1) && q.contains(&DType::Q8_0), "Q4_1 linears and the Q8_0 head: {q:?}");
    assert!(matmul_weight_dtypes(&reference).iter().all(|d| *d == DType::F32));
    let (quantized, reference) = (rtllm_tests::start(quantized), rtllm_tests::start(reference));

    let fixture = fixture();
    let cases = fixture["cases"].as_array().expect("cases");
    let mut report = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let prompt = ids(&case["prompt_ids"]);
        let hf = ids(&case["continuation_ids"]);
        let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(hf.len()) };
        let prompt = [prompt];
        let ours = rtllm_tests::greedy_ids(&quantized, &prompt, &params).remove(0);
        let refs = rtllm_tests::greedy_ids(&reference, &prompt, &params).remove(0);
        let with_ref = agree(&ours, &refs);
        let with_hf = agree(&ours, &hf);
        if with_ref < MUST_AGREE {
            let margin = case["steps"][with_ref]["margin"].as_f64().unwrap_or(f64::INFINITY);
            // The reference equals HF token for token (tests/tests/parity.rs), so HF's margin
            // at the step is the reference's.
            assert_eq!(agree(&refs, &hf), refs.len().min(hf.len()), "{name}: the reference path differs from HF");
            assert!(
                margin < NEAR_TIE,
                "{name}: quantized tokens diverge from the dequantized path at step {with_ref} where the \
                 reference margin is {margin:.4} (not a near-tie)\n  quantized: {ours:?}\n  reference: {refs:?}"
            );
            report.push(format!("{name}: diverges at step {with_ref}, a near-tie (margin {margin:.4})"));
        } else {
            report.push(format!(
                "{name}: agrees with the dequantized path for {with_ref} tokens, with HF for {with_hf} (of {})",
                hf.len()
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
}
