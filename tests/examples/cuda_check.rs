//! End-to-end parity of the CUDA engine with the CPU engine on the same (dummy) weights:
//! last-position logits of several prompts through one packed prefill batch, and greedy tokens
//! through the `Llm` executor (device sampling, CUDA graphs) against the CPU. Prints a table;
//! exits non-zero when f32 tokens differ or logits exceed the dtype's tolerance.
//!
//! `cuda_check [CONFIG] [MODES]` (default smollm2-135m; a built-in dummy config or a
//! config.json; MODES a comma list of f32, bf16, fp8, bf16kv and fp8kv, default f32,bf16). fp8
//! is dummy FP8 E4M3 linears with per-channel scales and dynamic per-token activations (the
//! rest bf16): the CUDA `fp8_matmul` (bf16 activations, bf16 cache) against the CPU's (f32).
//! bf16kv and fp8kv put the FP8 KV cache (`--kv-cache-dtype fp8`, scales 1.0: dummy weights
//! carry none) under bf16 or FP8 weights on both engines: the CUDA fp8-cache attention (bf16
//! activations) against the CPU's (f32).
//! Run by scripts/gpu-check.sh on the GPU machine (built by scripts/gpu-pack.sh:
//! `cargo build --release -p rtllm-tests --example cuda_check`); needs `RTLLM_PLUGIN_PATH` to
//! hold the CPU and CUDA plugins.

use rtllm::api::{Llm, Prompt};
use rtllm::engine::BuildConfig;
use rtllm::model::{Model, ModelSpec};
use rtllm::registry::{DiscoveryOptions, Registry};
use rtllm::runtime::ExecutorConfig;
use rtllm::sampling::SamplingParams;
use rtllm::weights::dummy::DummySpec;
use rtllm_plugin_api::{DType, DeviceKind};
use rtllm_tests::compare::{argmax, prefill_logits, random_prompts, rel_err};
use std::process::ExitCode;
use std::sync::Arc;

const TOKENS: usize = 32;

fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    // Deterministic pseudo-random prompts of several lengths (1 token up to a long prefill).
    random_prompts(vocab, &[1, 7, 33, 100, 257], 0x9e37_79b9_7f4a_7c15)
}

fn build_config(device: DeviceKind, kv: DType) -> BuildConfig {
    let mut b = BuildConfig { max_batch_size: 8, max_num_tokens: 1024, max_seq_len: Some(512), ..Default::default() };
    b.selection.device = device;
    b.kv_cache_dtype = kv;
    b.num_kv_blocks = Some(256);
    b.use_engine_cache = false;
    b
}

/// Greedy tokens of every prompt through `llm`'s executor.
fn greedy(llm: &Llm, prompts: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<u32>>> {
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(TOKENS) };
    // All prompts at once: the executor batches them (prefill, then decode steps or graphs).
    let outs = llm.generate(prompts.iter().map(|p| Prompt::Tokens(p.clone())), &params)?;
    Ok(outs.into_iter().map(|mut o| o.outputs.remove(0).token_ids).collect())
}

fn main() -> anyhow::Result<ExitCode> {
    let config = std::env::args().nth(1).unwrap_or_else(|| "smollm2-135m".into());
    let registry = Arc::new(Registry::load(&DiscoveryOptions::default()));
    for e in registry.load_errors() {
        eprintln!("plugin load error: {e}");
    }
    let mut failed = false;
    let wanted = std::env::args().nth(2).unwrap_or_else(|| "f32,bf16".into());
    use DType::{BF16, F32, F8_E4M3 as F8};
    // (mode, weight dtype, CPU cache, GPU cache, logits tolerance). FP8 weights keep bf16
    // activations and (unless the mode says fp8 KV) a bf16 cache on the GPU. The FP8-cache
    // tolerance is a first guess: bf16 vs f32 k/v can land on neighbouring E4M3 codes.
    let all = [
        ("f32", F32, F32, F32, 1e-3),
        ("bf16", BF16, F32, BF16, 5e-2),
        ("fp8", F8, F32, BF16, 5e-2),
        ("bf16kv", BF16, F8, F8, 8e-2),
        ("fp8kv", F8, F8, F8, 8e-2),
    ];
    let unknown: Vec<&str> = wanted.split(',').filter(|w| !all.iter().any(|a| a.0 == *w)).collect();
    if !unknown.is_empty() {
        eprintln!("unknown modes {unknown:?}: use a comma list of f32, bf16, fp8, bf16kv, fp8kv");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{:<6} {:<10} {:>14} {:>10} {:>12} {:>10}",
        "mode", "path", "logits relerr", "tolerance", "argmax same", "tokens ="
    );
    for (mode, dtype, cpu_kv, gpu_kv, tolerance) in all.into_iter().filter(|a| wanted.split(',').any(|w| w == a.0)) {
        let spec = DummySpec { config: config.clone(), dtype, seed: 7 };
        let model = ModelSpec::dummy(spec);
        let mut cpu = Model::load(&model, &registry, &build_config(DeviceKind::Cpu, cpu_kv))?;
        let mut gpu = Model::load(&model, &registry, &build_config(DeviceKind::Cuda, gpu_kv))?;
        let prompts = prompts(cpu.config.vocab_size);
        let want = prefill_logits(&mut cpu.engine, &prompts)?;
        let got = prefill_logits(&mut gpu.engine, &prompts)?;
        let err = rel_err(&got, &want);
        let same = want.iter().zip(&got).filter(|(w, g)| argmax(w) == argmax(g)).count();
        failed |= !(err <= tolerance);
        println!(
            "{:<6} {:<10} {:>14.3e} {:>10.0e} {:>9}/{:<2} {:>10}",
            mode,
            "prefill",
            err,
            tolerance,
            same,
            prompts.len(),
            "-"
        );
        drop(gpu);

        let cpu = Llm::start(cpu, ExecutorConfig::default())?;
        let wants = greedy(&cpu, &prompts)?;
        cpu.shutdown()?;
        let gpu = Model::load(&model, &registry, &build_config(DeviceKind::Cuda, gpu_kv))?;
        let llm = Llm::start(gpu, ExecutorConfig::default())?;
        let mut agree = Vec::new();
        for (want, got) in wants.iter().zip(greedy(&llm, &prompts)?) {
            let n = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            agree.push(n);
            if dtype == DType::F32 && n < TOKENS {
                failed = true;
            }
        }
        let agree_text = agree.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        println!("{:<6} {:<10} {:>14} {:>10} {:>12} {:>10}", mode, "greedy", "-", "-", "-", agree_text);
        let stats = llm.stats();
        println!("        executor: {} steps, {} tokens", stats.steps, stats.generated_tokens);
        llm.shutdown()?;
    }
    println!("{}", if failed { "CUDA PARITY FAILED" } else { "CUDA parity ok" });
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
