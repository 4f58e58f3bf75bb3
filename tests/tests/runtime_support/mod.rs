//! Shared helpers of the runtime integration tests: the default model (or a printed skip
//! reason), prompts from the parity fixture with variations, one-at-a-time reference
//! generations, and running a set of requests through an executor.

#![allow(dead_code)]

use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::runtime::{Executor, ExecutorConfig, ExecutorStats, FinishReason, Request};
use rtllm::sampling::SamplingParams;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default model built for `config.build`, or `None` with the reason printed.
pub fn load(config: &ExecutorConfig) -> Option<Model> {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
        return None;
    }
    Some(Model::load(&ModelSpec::default_model(), rtllm_tests::registry(), &config.build).expect("default model loads"))
}

/// The parity fixture's prompt ids (13 prompts of 3..68 tokens).
pub fn fixture_prompts() -> Vec<Vec<u32>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/parity/smollm2_greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["prompt_ids"].as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect())
        .collect()
}

/// `count` prompts: the fixture's, then variations (a fixture prompt with another's tail).
pub fn prompts(count: usize) -> Vec<Vec<u32>> {
    let base = fixture_prompts();
    let mut out = base.clone();
    let mut i = 0;
    while out.len() < count {
        let mut p = base[i % base.len()].clone();
        p.extend_from_slice(&base[(i + 5) % base.len()][1..]);
        out.push(p);
        i += 1;
    }
    out.truncate(count);
    out
}

pub fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_tokens) }
}

/// `max_tokens` for request `i`: 8..=24.
pub fn max_tokens_for(i: usize) -> usize {
    8 + (i * 5) % 17
}

/// Each job run alone: submitted once the previous one has finished.
pub fn one_at_a_time(ex: &Executor, jobs: &[(Vec<u32>, SamplingParams)]) -> Vec<Vec<u32>> {
    jobs.iter().map(|job| run_concurrently(ex, std::slice::from_ref(job)).remove(0).0).collect()
}

/// Submits every job at once and waits for all; each result is (tokens, finish reason).
pub fn run_concurrently(ex: &Executor, jobs: &[(Vec<u32>, SamplingParams)]) -> Vec<(Vec<u32>, Option<FinishReason>)> {
    let handles: Vec<_> =
        jobs.iter().map(|(p, params)| ex.submit(Request::new(p.clone(), params.clone())).expect("submits")).collect();
    handles
        .into_iter()
        .map(|h| {
            let mut samples = h.wait().expect("request completes");
            let s = samples.remove(0);
            (s.token_ids, s.finish_reason)
        })
        .collect()
}

/// Moves the model's engine into a new executor (with the model's eos ids and tokenizer).
pub fn executor(model: Model, config: ExecutorConfig) -> Executor {
    let mut config = config;
    if config.eos_token_ids.is_empty() {
        config.eos_token_ids = model.eos_ids();
    }
    config.tokenizer = Some(Arc::new(model.tokenizer));
    Executor::new(model.engine, config).expect("executor starts")
}

/// The executor's stats once nothing runs or waits (or after 30 s).
pub fn wait_idle(ex: &Executor) -> ExecutorStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ex.stats();
        if s.running_requests == 0 && s.waiting_requests == 0 || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
