//! Tensor-parallel parity on GPUs: the same dummy weights at TP=1 and TP=N (one GPU per rank,
//! NCCL collectives): last-position logits of several prompts through one packed prefill, and
//! greedy tokens through the `Llm` executor (device sampling on rank 0, CUDA graphs with the
//! collectives captured). Prints the max logit difference and the token agreement; exits
//! non-zero when f32 greedy tokens differ or logits exceed the tolerance.
//!
//! `tp_check [CONFIG] [TP] [DTYPE] [DEVICE]` (defaults: llama-3.2-1b, 2, f32, cuda; `cpu` runs
//! the same check on CPU threads). Run by
//! scripts/gpu-tp-check.sh (built by scripts/gpu-pack.sh: `cargo build --release -p rtllm-tests
//! --example tp_check`); needs `RTLLM_PLUGIN_PATH` to hold the CUDA and NCCL plugins.

use rtllm::api::{Llm, Prompt};
use rtllm::engine::BuildConfig;
use rtllm::model::{Model, ModelSpec};
use rtllm::registry::{DiscoveryOptions, Registry};
use rtllm::runtime::ExecutorConfig;
use rtllm::sampling::SamplingParams;
use rtllm::weights::dummy::DummySpec;
use rtllm_plugin_api::{DType, DeviceKind};
use rtllm_tests::compare::{prefill_logits, random_prompts};
use std::process::ExitCode;
use std::sync::Arc;

const TOKENS: usize = 32;

fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    random_prompts(vocab, &[1, 9, 40, 130], 0x2545_f491_4f6c_dd1d)
}

/// The check's engine config. The KV cache has the weights' dtype: with f32 weights an f32
/// cache keeps the comparison free of bf16 rounding flips (a 1e-7 difference in a K or V value
/// that moves its bf16 rounding changes it by 2^-8, which 16 layers of random weights amplify).
fn build_config(tp: usize, device: DeviceKind, dtype: DType) -> BuildConfig {
    let mut b = BuildConfig {
        max_batch_size: 8,
        max_num_tokens: 1024,
        max_seq_len: Some(512),
        num_kv_blocks: Some(128),
        use_engine_cache: false,
        tensor_parallel_size: tp,
        kv_cache_dtype: if dtype == DType::F32 { DType::F32 } else { DType::BF16 },
        ..Default::default()
    };
    b.selection.device = device;
    if device == DeviceKind::Cuda {
        b.selection.weight_fallback_dtype = Some(DType::BF16);
    }
    b
}

fn greedy_tokens(llm: &Llm, prompts: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<u32>>> {
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(TOKENS) };
    let outs = llm.generate(prompts.iter().map(|p| Prompt::Tokens(p.clone())), &params)?;
    Ok(outs.iter().map(|o| o.outputs[0].token_ids.clone()).collect())
}

fn main() -> anyhow::Result<ExitCode> {
    rtllm::cli::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = args.first().cloned().unwrap_or_else(|| "llama-3.2-1b".into());
    let tp: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let dtype = args.get(2).and_then(|s| DType::parse(s)).unwrap_or(DType::F32);
    let device = args.get(3).and_then(|s| DeviceKind::parse(s)).unwrap_or(DeviceKind::Cuda);
    let spec = DummySpec { dtype, ..DummySpec::new(config.clone()) };
    let registry = Arc::new(Registry::load(&DiscoveryOptions::default()));

    let mut logits = Vec::new();
    let mut tokens = Vec::new();
    for ranks in [1, tp] {
        let bc = build_config(ranks, device, dtype);
        let start = std::time::Instant::now();
        // Progress on stderr with times, so a stall on the GPU machine shows where it is.
        let mark = |what: &str| eprintln!("TP={ranks}: {what} at {:.1}s", start.elapsed().as_secs_f64());
        mark("loading");
        // TP=1 is the plain single-engine path; TP=N the ranks.
        let mut model = Model::load(&ModelSpec::dummy(spec.clone()), &registry, &bc)?;
        let prompts = prompts(model.config.vocab_size);
        logits.push(prefill_logits(&mut model.engine, &prompts)?.concat());
        mark("prefill logits done; starting Llm");
        let llm = Llm::start(model, ExecutorConfig::default())?;
        mark("Llm started; generating");
        tokens.push(greedy_tokens(&llm, &prompts)?);
        mark("greedy tokens done");
    }
    let scale = logits[0].iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = logits[0].iter().zip(&logits[1]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let total: usize = tokens[0].iter().map(Vec::len).sum();
    let same: usize =
        tokens[0].iter().zip(&tokens[1]).map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count()).sum();
    println!("{config} ({dtype}) TP=1 vs TP={tp}: max |logit diff| {diff:.3e} (max |logit| {scale:.2})");
    println!("greedy tokens: {same}/{total} agree before the first divergence");
    for (i, (a, b)) in tokens[0].iter().zip(&tokens[1]).enumerate() {
        println!("  prompt {i}: {}", if a == b { "identical".to_string() } else { format!("{a:?}\n    vs {b:?}") });
    }
    // f32 weights, activations and KV cache: differences are summation order only.
    let tolerance = if dtype == DType::F32 { 1e-3 } else { 1e-1 } * scale.max(1.0);
    let ok = diff <= tolerance && (dtype != DType::F32 || same == total);
    println!("PARITY {}", if ok { "ok" } else { "FAILED" });
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
