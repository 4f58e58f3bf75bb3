//! Runs a benchmark's requests through an `Llm`: throughput (all submitted at once), fixed
//! concurrency, or Poisson arrivals at a request rate. Every request is greedy with
//! `ignore_eos`, so it generates exactly its output length. Each request's stream is drained
//! by its own thread so token arrival times are taken as tokens come.

use super::dataset::BenchRequest;
use crate::api::{Llm, LlmError, OutputStream};
use crate::runtime::KvCacheStats;
use crate::sampling::SamplingParams;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How requests arrive.
#[derive(Clone, Debug, PartialEq)]
pub enum BenchMode {
    /// Everything submitted at once.
    Throughput,
    /// At most this many requests in flight; a new one starts as one finishes.
    Concurrency(usize),
    /// Poisson arrivals at `rate` requests per second (exponential gaps from `seed`).
    RequestRate { rate: f64, seed: u64 },
}

/// What one request saw (seconds since its submission).
#[derive(Clone, Debug, Default)]
pub struct RequestTiming {
    pub input_len: usize,
    pub output_len: usize,
    /// Arrival time of every generated token.
    pub token_times: Vec<f64>,
    pub e2e: f64,
}

impl RequestTiming {
    pub fn ttft(&self) -> Option<f64> {
        self.token_times.first().copied()
    }

    /// Time per output token after the first.
    pub fn tpot(&self) -> Option<f64> {
        let n = self.token_times.len();
        (n > 1).then(|| (self.token_times[n - 1] - self.token_times[0]) / (n - 1) as f64)
    }

    /// Gaps between consecutive tokens.
    pub fn itls(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_times.windows(2).map(|w| w[1] - w[0])
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub timings: Vec<RequestTiming>,
    pub wall: Duration,
    pub peak_used_blocks: usize,
    pub peak_running_requests: usize,
    pub kv: KvCacheStats,
}

fn params_for(r: &BenchRequest) -> SamplingParams {
    SamplingParams { max_tokens: r.output_len, ignore_eos: true, ..SamplingParams::default() }
}

/// Drains a stream, stamping each token's arrival relative to `submitted`.
fn drain(stream: OutputStream, submitted: Instant, input_len: usize) -> Result<RequestTiming, LlmError> {
    let mut t = RequestTiming { input_len, ..Default::default() };
    for out in stream {
        let out = out?;
        let now = submitted.elapsed().as_secs_f64();
        if let Some(c) = out.outputs.first() {
            let new = c.token_ids.len().saturating_sub(t.token_times.len());
            t.token_times.extend(std::iter::repeat_n(now, new));
        }
    }
    t.output_len = t.token_times.len();
    t.e2e = submitted.elapsed().as_secs_f64();
    Ok(t)
}

fn run_one(llm: &Llm, r: &BenchRequest) -> Result<RequestTiming, LlmError> {
    let submitted = Instant::now();
    let stream = llm.generate_stream(r.input_ids.clone(), &params_for(r))?;
    drain(stream, submitted, r.input_ids.len())
}

/// Runs `requests` in `mode`; `progress` shows a bar on stderr.
pub fn run(llm: &Llm, requests: &[BenchRequest], mode: &BenchMode, progress: bool) -> Result<RunResult, LlmError> {
    let bar = if progress { ProgressBar::new(requests.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results: Mutex<Vec<Option<Result<RequestTiming, LlmError>>>> =
        Mutex::new((0..requests.len()).map(|_| None).collect());
    let done = AtomicUsize::new(0);
    let finish = |i: usize, r: Result<RequestTiming, LlmError>| {
        if let Ok(mut all) = results.lock() {
            all[i] = Some(r);
        }
        done.fetch_add(1, Ordering::Relaxed);
        bar.inc(1);
    };
    let start = Instant::now();
    let mut peak_used = 0usize;
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        match mode {
            BenchMode::Throughput => {
                for (i, r) in requests.iter().enumerate() {
                    let submitted = Instant::now();
                    match llm.generate_stream(r.input_ids.clone(), &params_for(r)) {
                        Ok(stream) => {
                            let finish = &finish;
                            s.spawn(move || finish(i, drain(stream, submitted, r.input_ids.len())));
                        }
                        Err(e) => finish(i, Err(e)),
                    }
                }
            }
            BenchMode::Concurrency(n) => {
                let next = &next;
                for _ in 0..(*n).clamp(1, requests.len().max(1)) {
                    let finish = &finish;
                    s.spawn(move || loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = requests.get(i) else { break };
                        finish(i, run_one(llm, r));
                    });
                }
            }
            BenchMode::RequestRate { rate, seed } => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(*seed);
                let mut arrival = 0.0f64;
                for (i, r) in requests.iter().enumerate() {
                    let wait = arrival - start.elapsed().as_secs_f64();
                    if wait > 0.0 {
                        std::thread::sleep(Duration::from_secs_f64(wait));
                    }
                    let finish = &finish;
                    s.spawn(move || finish(i, run_one(llm, r)));
                    arrival += -rng.gen_range(f64::EPSILON..1.0f64).ln() / rate.max(1e-9);
                    peak_used = peak_used.max(llm.stats().kv.used_blocks);
                }
            }
        }
        while done.load(Ordering::Relaxed) < requests.len() {
            let stats = llm.stats();
            peak_used = peak_used.max(stats.kv.used_blocks);
            bar.set_message(format!("{} running, {} KV blocks used", stats.running_requests, stats.kv.used_blocks));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let wall = start.elapsed();
    bar.finish_and_clear();
    let stats = llm.stats();
    let mut timings = Vec::with_capacity(requests.len());
    let all = results.into_inner().unwrap_or_else(|p| p.into_inner());
    for r in all {
        timings.push(r.ok_or(LlmError::Closed)??);
    }
    Ok(RunResult {
        timings,
        wall,
        peak_used_blocks: peak_used.max(stats.kv.used_blocks),
        peak_running_requests: stats.peak_running_requests,
        kv: stats.kv,
    })
}
