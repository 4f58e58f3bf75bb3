//! The server's Prometheus metrics: HTTP requests by route and status, prompt and generated
//! token counters, TTFT / TPOT / end-to-end latency histograms, and (read from the executor
//! at scrape time) waiting and running requests and the KV cache's usage and hit rate.

use crate::runtime::executor::ExecutorStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A Prometheus histogram over fixed bucket bounds (seconds).
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default)]
struct HistogramState {
    /// Non-cumulative counts per bound, plus one for +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        let state = HistogramState { counts: vec![0; bounds.len() + 1], ..Default::default() };
        Histogram { bounds, state: Mutex::new(state) }
    }

    fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.counts[i] += 1;
        s.sum += v;
        s.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&s.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", s.sum, s.count);
    }
}

const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const TPOT_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const E2E_BUCKETS: &[f64] =
    &[0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0];

/// Counters and histograms the server updates; gauges come from the executor at render time.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BUCKETS),
            tpot: Histogram::new(TPOT_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts one answered HTTP request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *r.entry((route, status)).or_insert(0) += 1;
    }

    pub fn add_prompt_tokens(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_generation_tokens(&self, n: usize) {
        self.generation_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    pub fn observe_tpot(&self, d: Duration) {
        self.tpot.observe(d.as_secs_f64());
    }

    pub fn observe_e2e(&self, d: Duration) {
        self.e2e.observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition of everything, with the executor's current `stats`.
    pub fn render(&self, stats: &ExecutorStats, model: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP rtllm_http_requests_total HTTP requests answered, by route and status.");
        let _ = writeln!(out, "# TYPE rtllm_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "rtllm_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "rtllm_prompt_tokens_total",
            "Prompt tokens submitted.",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rtllm_generation_tokens_total",
            "Tokens generated.",
            self.generation_tokens.load(Ordering::Relaxed),
        );
        self.ttft.render(&mut out, "rtllm_time_to_first_token_seconds", "Time from request to its first token.");
        self.tpot.render(
            &mut out,
            "rtllm_time_per_output_token_seconds",
            "Mean time per generated token after the first.",
        );
        self.e2e.render(&mut out, "rtllm_e2e_request_latency_seconds", "Time from request to its last token.");
        gauge(
            &mut out,
            "rtllm_num_requests_waiting",
            "Requests queued in the executor.",
            stats.waiting_requests as f64,
        );
        gauge(
            &mut out,
            "rtllm_num_requests_running",
            "Requests running in the executor.",
            stats.running_requests as f64,
        );
        let kv = &stats.kv;
        let usage = if kv.total_blocks == 0 { 0.0 } else { kv.used_blocks as f64 / kv.total_blocks as f64 };
        gauge(&mut out, "rtllm_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.", usage);
        gauge(
            &mut out,
            "rtllm_kv_cache_used_blocks",
            "KV cache blocks referenced by a sequence.",
            kv.used_blocks as f64,
        );
        gauge(&mut out, "rtllm_kv_cache_total_blocks", "KV cache blocks in all.", kv.total_blocks as f64);
        gauge(&mut out, "rtllm_kv_cache_hit_rate", "Prompt blocks found in the cache / looked up.", kv.hit_rate());
        counter(&mut out, "rtllm_kv_cache_reused_blocks_total", "Prompt blocks found in the cache.", kv.reused_blocks);
        counter(
            &mut out,
            "rtllm_kv_cache_missed_blocks_total",
            "Prompt blocks not found in the cache.",
            kv.missed_blocks,
        );
        counter(&mut out, "rtllm_preemptions_total", "Requests preempted by the scheduler.", stats.preemptions);
        let _ = writeln!(out, "# HELP rtllm_model_info The served model.\n# TYPE rtllm_model_info gauge");
        let _ = writeln!(out, "rtllm_model_info{{model=\"{}\"}} 1", model.replace(['\\', '"', '\n'], "_"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.record_request("/v1/completions", 200);
        m.record_request("/v1/completions", 200);
        m.record_request("/v1/completions", 400);
        m.add_prompt_tokens(7);
        m.add_generation_tokens(3);
        m.observe_ttft(Duration::from_millis(30));
        m.observe_ttft(Duration::from_secs(100));
        let mut stats = ExecutorStats { running_requests: 2, waiting_requests: 1, ..Default::default() };
        stats.kv.total_blocks = 10;
        stats.kv.used_blocks = 5;
        let text = m.render(&stats, "m");
        assert!(text.contains("rtllm_http_requests_total{route=\"/v1/completions\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("rtllm_http_requests_total{route=\"/v1/completions\",status=\"400\"} 1"));
        assert!(text.contains("rtllm_prompt_tokens_total 7\n"));
        assert!(text.contains("rtllm_generation_tokens_total 3\n"));
        assert!(text.contains("rtllm_time_to_first_token_seconds_bucket{le=\"0.04\"} 1\n"));
        assert!(text.contains("rtllm_time_to_first_token_seconds_bucket{le=\"80\"} 1\n"));
        assert!(text.contains("rtllm_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("rtllm_time_to_first_token_seconds_count 2\n"));
        assert!(text.contains("rtllm_num_requests_running 2\n"));
        assert!(text.contains("rtllm_num_requests_waiting 1\n"));
        assert!(text.contains("rtllm_kv_cache_usage_ratio 0.5\n"));
    }
}
