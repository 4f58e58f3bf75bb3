//! The benchmark report: configuration, throughput, latency summaries and KV cache usage;
//! serializable for `--json`, and printed as a table.

use super::runner::RunResult;
use super::stats::Summary;
use serde::Serialize;
use std::fmt::Write;

/// The settings a run used.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfigInfo {
    pub model: String,
    pub device: String,
    pub weight_dtypes: String,
    pub kv_cache_dtype: String,
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    pub max_seq_len: usize,
    pub capacity_scheduler_policy: String,
    pub threads: usize,
    pub mode: String,
    pub load_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KvReport {
    pub tokens_per_block: usize,
    pub total_blocks: usize,
    pub peak_used_blocks: usize,
    pub reused_blocks: u64,
    pub missed_blocks: u64,
    pub hit_rate: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub config: BenchConfigInfo,
    pub num_requests: usize,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_throughput: f64,
    /// Mean over requests of output tokens / end-to-end latency (the speed one user sees).
    pub per_user_output_throughput: f64,
    pub peak_running_requests: usize,
    /// Milliseconds.
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
    pub e2e_ms: Summary,
    pub kv_cache: KvReport,
}

impl BenchReport {
    pub fn new(config: BenchConfigInfo, run: &RunResult) -> BenchReport {
        let ms = |v: Vec<f64>| Summary::of(&v.into_iter().map(|s| s * 1e3).collect::<Vec<_>>());
        let t = &run.timings;
        let secs = run.wall.as_secs_f64().max(1e-9);
        let input: usize = t.iter().map(|r| r.input_len).sum();
        let output: usize = t.iter().map(|r| r.output_len).sum();
        let per_user: Vec<f64> = t.iter().filter(|r| r.e2e > 0.0).map(|r| r.output_len as f64 / r.e2e).collect();
        BenchReport {
            config,
            num_requests: t.len(),
            total_input_tokens: input,
            total_output_tokens: output,
            duration_s: secs,
            request_throughput: t.len() as f64 / secs,
            output_throughput: output as f64 / secs,
            total_throughput: (input + output) as f64 / secs,
            per_user_output_throughput: if per_user.is_empty() {
                0.0
            } else {
                per_user.iter().sum::<f64>() / per_user.len() as f64
            },
            peak_running_requests: run.peak_running_requests,
            ttft_ms: ms(t.iter().filter_map(|r| r.ttft()).collect()),
            tpot_ms: ms(t.iter().filter_map(|r| r.tpot()).collect()),
            itl_ms: ms(t.iter().flat_map(|r| r.itls()).collect()),
            e2e_ms: ms(t.iter().map(|r| r.e2e).collect()),
            kv_cache: KvReport {
                tokens_per_block: run.kv.tokens_per_block,
                total_blocks: run.kv.total_blocks,
                peak_used_blocks: run.peak_used_blocks,
                reused_blocks: run.kv.reused_blocks,
                missed_blocks: run.kv.missed_blocks,
                hit_rate: run.kv.hit_rate(),
            },
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(s, "===== rtllm bench: {} =====", c.mode);
        let _ = writeln!(s, "model                 {}", c.model);
        let _ = writeln!(s, "device / threads      {} / {}", c.device, c.threads);
        let _ = writeln!(s, "weights / kv dtype    {} / {}", c.weight_dtypes, c.kv_cache_dtype);
        let _ = writeln!(s, "max_batch_size        {}", c.max_batch_size);
        let _ = writeln!(s, "max_num_tokens        {}", c.max_num_tokens);
        let _ = writeln!(s, "max_seq_len           {}", c.max_seq_len);
        let _ = writeln!(s, "policy                {}", c.capacity_scheduler_policy);
        let _ = writeln!(s, "load time             {:.2} s", c.load_seconds);
        let _ = writeln!(s, "----- throughput -----");
        let _ = writeln!(
            s,
            "requests              {} ({} in / {} out tokens)",
            self.num_requests, self.total_input_tokens, self.total_output_tokens
        );
        let _ = writeln!(s, "duration              {:.2} s", self.duration_s);
        let _ = writeln!(s, "request throughput    {:.2} req/s", self.request_throughput);
        let _ = writeln!(s, "output throughput     {:.1} tok/s", self.output_throughput);
        let _ = writeln!(s, "total throughput      {:.1} tok/s", self.total_throughput);
        let _ = writeln!(s, "per-user throughput   {:.1} tok/s", self.per_user_output_throughput);
        let _ = writeln!(s, "peak running requests {}", self.peak_running_requests);
        let _ = writeln!(s, "----- latency (ms) -----");
        let _ = writeln!(
            s,
            "{:<6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "min", "mean", "p50", "p90", "p99", "max"
        );
        for (name, m) in
            [("TTFT", &self.ttft_ms), ("TPOT", &self.tpot_ms), ("ITL", &self.itl_ms), ("E2E", &self.e2e_ms)]
        {
            let _ = writeln!(
                s,
                "{name:<6} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                m.min, m.mean, m.p50, m.p90, m.p99, m.max
            );
        }
        let k = &self.kv_cache;
        let _ = writeln!(s, "----- KV cache -----");
        let _ = writeln!(
            s,
            "blocks                {} peak used of {} ({} tokens each)",
            k.peak_used_blocks, k.total_blocks, k.tokens_per_block
        );
        let _ = writeln!(
            s,
            "prefix reuse          {} hit / {} missed blocks ({:.1}% hit rate)",
            k.reused_blocks,
            k.missed_blocks,
            k.hit_rate * 100.0
        );
        s
    }
}
