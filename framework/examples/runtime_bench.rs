//! Output tokens/s of the in-flight batching executor on the default model (SmolLM2-135M) at
//! 1, 8 and 32 concurrent requests, with the ratio to the single-stream rate.
//!
//! cargo build --release --workspace && cargo run --release --example runtime_bench [-- MAX_TOKENS [LEVELS...]]

use rtllm::model::{Model, ModelSpec};
use rtllm::registry::{DiscoveryOptions, Registry};
use rtllm::runtime::{Executor, ExecutorConfig, Request};
use rtllm::sampling::SamplingParams;
use std::time::Instant;

/// Prompts of 8..40 tokens built from the tokenizer (distinct, so no prefix is shared).
const TOPICS: &[&str] = &[
    "The history of the printing press",
    "How photosynthesis works in plants",
    "A short story about a lighthouse keeper",
    "Explain recursion to a child",
    "The rules of chess in brief",
    "Why the sky is blue",
    "A recipe for tomato soup",
    "The life cycle of a star",
];

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let max_tokens: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let levels: Vec<usize> =
        if args.len() > 1 { args[1..].iter().map(|a| a.parse()).collect::<Result<_, _>>()? } else { vec![1, 8, 32] };
    let top = levels.iter().copied().max().unwrap_or(1);

    // Plugins sit next to the example's parent directory (target/<profile>/).
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().and_then(|p| p.parent()).map(|p| p.to_path_buf());
    let registry = std::sync::Arc::new(Registry::load(&DiscoveryOptions::default().with_paths(profile_dir)));
    let config = ExecutorConfig::with_max_batch_size(top.max(1));
    let t = Instant::now();
    let model = Model::load(&ModelSpec::default_model(), &registry, &config.build)?;
    eprintln!("model loaded in {:.2}s", t.elapsed().as_secs_f64());
    let prompts: Vec<Vec<u32>> = (0..top)
        .map(|i| {
            let text = format!("{} (part {}):", TOPICS[i % TOPICS.len()], i / TOPICS.len() + 1);
            model.tokenizer.encode(&text, true)
        })
        .collect::<Result<_, _>>()?;
    let eos_token_ids = model.eos_ids();
    let ex = Executor::new(model.engine, ExecutorConfig { eos_token_ids, ..config })?;
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_tokens) };

    // Warm-up: one short request.
    ex.submit(Request::new(prompts[0].clone(), SamplingParams::greedy(4)))?.wait()?;

    println!("| concurrent | output tokens | seconds | output tok/s | vs 1 stream |");
    println!("|-----------:|--------------:|--------:|-------------:|------------:|");
    let mut single = None;
    for &c in &levels {
        let start = Instant::now();
        let handles = (0..c)
            .map(|i| ex.submit(Request::new(prompts[i].clone(), params.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tokens = 0usize;
        for h in handles {
            tokens += h.wait()?.iter().map(|s| s.token_ids.len()).sum::<usize>();
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = tokens as f64 / secs;
        let base = *single.get_or_insert(if c == 1 { rate } else { f64::NAN });
        println!("| {c:>10} | {tokens:>13} | {secs:>7.2} | {rate:>12.1} | {:>10.2}x |", rate / base);
    }
    let stats = ex.stats();
    eprintln!("steps {}, preemptions {}, kv {:?}", stats.steps, stats.preemptions, stats.kv);
    ex.shutdown()?;
    Ok(())
}
