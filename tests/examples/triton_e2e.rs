//! End-to-end parity of the Triton providers (GPU only): one dummy model run three ways — the
//! CPU engine, the CUDA engine with its default providers, and the CUDA engine with every op
//! the Triton plugin provides pinned to `rtllm-triton` (`BuildConfig.selection.pins`). Compares
//! last-position prefill logits of several prompts (one packed batch) and greedy tokens through
//! the `Llm` executor (on the GPU: device sampling, CUDA graphs, so the Triton launches are
//! captured too).
//! Prints how many graph nodes each plugin serves, then a table; exits non-zero when the pinned
//! engine serves no op from rtllm-triton, its f32 logits are off, or its f32 tokens differ from
//! the CPU's. The ops pinned are those the loaded `rtllm-triton` plugin provides on CUDA (this
//! example lives with the framework's tests: plugins never depend on the framework).
//!
//!     cargo build --release -p rtllm-tests --example triton_e2e
//!     RTLLM_PLUGIN_PATH=.gpu/plugins triton_e2e [CONFIG]   (default smollm2-135m)

use rtllm::api::{Llm, Prompt};
use rtllm::engine::BuildConfig;
use rtllm::model::{Model, ModelSpec};
use rtllm::registry::{DiscoveryOptions, Registry};
use rtllm::runtime::ExecutorConfig;
use rtllm::sampling::SamplingParams;
use rtllm::weights::dummy::DummySpec;
use rtllm_plugin_api::{DType, DeviceKind};
use rtllm_tests::compare::{argmax, prefill_logits, random_prompts, rel_err};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

const TOKENS: usize = 32;
const TRITON: &str = "rtllm-triton";

fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    random_prompts(vocab, &[1, 7, 33, 100, 257], 0x9e37_79b9_7f4a_7c15)
}

fn build_config(device: DeviceKind, kv: DType, pins: &BTreeMap<String, String>) -> BuildConfig {
    let mut b = BuildConfig { max_batch_size: 8, max_num_tokens: 1024, max_seq_len: Some(512), ..Default::default() };
    b.selection.device = device;
    b.selection.pins = pins.clone();
    b.kv_cache_dtype = kv;
    b.num_kv_blocks = Some(256);
    b.use_engine_cache = false;
    b
}

fn same_argmax(a: &[Vec<f32>], b: &[Vec<f32>]) -> usize {
    a.iter().zip(b).filter(|(x, y)| argmax(x) == argmax(y)).count()
}

/// Length of the common prefix of each pair of token lists, joined with commas.
fn agreement(a: &[Vec<u32>], b: &[Vec<u32>]) -> (String, bool) {
    let n: Vec<usize> = a.iter().zip(b).map(|(x, y)| x.iter().zip(y).take_while(|(p, q)| p == q).count()).collect();
    let all = n.iter().all(|&k| k == TOKENS);
    (n.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(","), all)
}

/// Nodes of the model's graph per (op, plugin) for the ops in `pins`.
fn served(model: &Model, pins: &BTreeMap<String, String>) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    let nodes = model.engine.single().map(|e| e.graph().nodes.as_slice()).unwrap_or_default();
    for n in nodes.iter().filter(|n| pins.contains_key(&n.op)) {
        *out.entry((n.op.clone(), n.provider.plugin.clone())).or_insert(0) += 1;
    }
    out
}

/// Greedy tokens of every prompt through `llm`'s executor (all prompts batched together).
fn greedy(llm: Llm, prompts: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<u32>>> {
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(TOKENS) };
    let outs = llm.generate(prompts.iter().map(|p| Prompt::Tokens(p.clone())), &params)?;
    llm.shutdown()?;
    Ok(outs.iter().map(|o| o.outputs[0].token_ids.clone()).collect())
}

fn main() -> anyhow::Result<ExitCode> {
    let config = std::env::args().nth(1).unwrap_or_else(|| "smollm2-135m".into());
    let registry = Arc::new(Registry::load(&DiscoveryOptions::default()));
    for e in registry.load_errors() {
        eprintln!("plugin load error: {e}");
    }
    let pins: BTreeMap<String, String> = registry
        .ops()
        .filter(|(_, providers)| providers.iter().any(|p| p.plugin == TRITON && p.device() == DeviceKind::Cuda))
        .map(|(op, _)| (op.to_string(), TRITON.to_string()))
        .collect();
    if pins.is_empty() {
        eprintln!("no op from {TRITON} is loaded (is its .so on RTLLM_PLUGIN_PATH?)");
    }
    let none = BTreeMap::new();
    let mut failed = false;
    let mut rows = Vec::new();
    for (dtype, tolerance) in [(DType::F32, 1e-3), (DType::BF16, 5e-2)] {
        let spec = DummySpec { config: config.clone(), dtype, seed: 7 };
        let model = ModelSpec::dummy(spec);
        let load = |device, kv, pins| Model::load(&model, &registry, &build_config(device, kv, pins));
        let mut cpu = load(DeviceKind::Cpu, DType::F32, &none)?;
        let prompts = prompts(cpu.config.vocab_size);
        let want = prefill_logits(&mut cpu.engine, &prompts)?;
        let cpu_tokens = greedy(Llm::start(cpu, ExecutorConfig::default())?, &prompts)?;
        let mut cuda = load(DeviceKind::Cuda, dtype, &none)?;
        let cuda_logits = prefill_logits(&mut cuda.engine, &prompts)?;
        let cuda_served = served(&cuda, &pins);
        let cuda_tokens = greedy(Llm::start(cuda, ExecutorConfig::default())?, &prompts)?;
        let mut tri = load(DeviceKind::Cuda, dtype, &pins)?;
        let tri_logits = prefill_logits(&mut tri.engine, &prompts)?;
        let tri_served = served(&tri, &pins);
        let tri_tokens = greedy(Llm::start(tri, ExecutorConfig::default())?, &prompts)?;
        println!("{} graph nodes per (op, plugin): default {cuda_served:?}", dtype.name());
        println!("{} graph nodes per (op, plugin): pinned  {tri_served:?}", dtype.name());
        let triton_nodes: usize = tri_served.iter().filter(|((_, p), _)| p == TRITON).map(|(_, n)| n).sum();
        let others: usize = tri_served.iter().filter(|((_, p), _)| p != TRITON).map(|(_, n)| n).sum();
        failed |= triton_nodes == 0 || others != 0;
        let (tri_cpu, tri_cpu_all) = agreement(&tri_tokens, &cpu_tokens);
        let (cuda_cpu, _) = agreement(&cuda_tokens, &cpu_tokens);
        let (tri_cuda, _) = agreement(&tri_tokens, &cuda_tokens);
        let (e_tri, e_cuda, e_tc) =
            (rel_err(&tri_logits, &want), rel_err(&cuda_logits, &want), rel_err(&tri_logits, &cuda_logits));
        failed |= !(e_tri <= tolerance) || (dtype == DType::F32 && !tri_cpu_all);
        rows.push(format!(
            "| {} | {triton_nodes} | {e_tri:.2e} | {e_cuda:.2e} | {e_tc:.2e} | {tolerance:.0e} | {}/{n} | {}/{n} | {tri_cpu} | {cuda_cpu} | {tri_cuda} |",
            dtype.name(),
            same_argmax(&tri_logits, &want),
            same_argmax(&tri_logits, &cuda_logits),
            n = prompts.len(),
        ));
    }
    println!("\nconfig {config}; greedy: common prefix of {TOKENS} tokens per prompt (lengths 1, 7, 33, 100, 257)");
    println!("| dtype | nodes on rtllm-triton | logits relerr triton vs CPU | CUDA C vs CPU | triton vs CUDA C | tolerance | argmax = CPU | argmax = CUDA C | tokens triton=CPU | CUDA C=CPU | triton=CUDA C |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("{}", if failed { "TRITON E2E FAILED" } else { "Triton e2e parity ok" });
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
