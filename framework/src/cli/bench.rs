//! `rtllm bench`: measures a model (or dummy weights) under load in throughput or latency
//! mode on a synthetic or JSONL dataset, and prints the report (or `--json`).

use super::{Hooks, ModelArgs};
use crate::bench::{self, BenchConfigInfo, BenchMode, BenchReport, SyntheticSpec};
use crate::host_pool::HostPool;
use crate::registry::Registry;
use crate::runtime::executor::ExecutorConfig;
use crate::runtime::CapacitySchedulerPolicy;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// All requests submitted at once.
    Throughput,
    /// Fixed --concurrency, or Poisson arrivals at --request-rate.
    Latency,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    MaxUtilization,
    GuaranteedNoEvict,
    StaticBatch,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(value_enum, default_value = "throughput")]
    pub mode: Mode,
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL with `prompt` or `input_ids` (and optionally `output_tokens`) per line.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Synthetic requests (ignored with --dataset).
    #[arg(long, default_value_t = 32)]
    pub num_requests: usize,
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    /// Output tokens per request (the default for dataset lines without `output_tokens`).
    #[arg(long, default_value_t = 64)]
    pub output_len: usize,
    #[arg(long, default_value_t = 0.0)]
    pub input_len_std: f64,
    #[arg(long, default_value_t = 0.0)]
    pub output_len_std: f64,
    /// Seed of the synthetic dataset and of the arrival process.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Latency mode: requests in flight at once.
    #[arg(long, conflicts_with = "request_rate")]
    pub concurrency: Option<usize>,
    /// Latency mode: Poisson arrivals, requests per second.
    #[arg(long)]
    pub request_rate: Option<f64>,
    #[arg(long, value_enum, default_value = "max-utilization")]
    pub policy: Policy,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn mode_of(args: &BenchArgs) -> Result<BenchMode> {
    Ok(match (args.mode, args.concurrency, args.request_rate) {
        (Mode::Throughput, None, None) => BenchMode::Throughput,
        (Mode::Throughput, _, _) => bail!("--concurrency and --request-rate belong to latency mode"),
        (Mode::Latency, Some(0), _) => bail!("--concurrency must be >= 1"),
        (Mode::Latency, Some(n), _) => BenchMode::Concurrency(n),
        (Mode::Latency, None, Some(r)) if r > 0.0 && r.is_finite() => {
            BenchMode::RequestRate { rate: r, seed: args.seed }
        }
        (Mode::Latency, None, Some(r)) => bail!("--request-rate must be > 0, got {r}"),
        (Mode::Latency, None, None) => BenchMode::Concurrency(1),
    })
}

pub fn run(args: &BenchArgs, registry: Registry, hooks: &Hooks) -> Result<()> {
    let mode = mode_of(args)?;
    let policy = match args.policy {
        Policy::MaxUtilization => CapacitySchedulerPolicy::MaxUtilization,
        Policy::GuaranteedNoEvict => CapacitySchedulerPolicy::GuaranteedNoEvict,
        Policy::StaticBatch => CapacitySchedulerPolicy::StaticBatch,
    };
    let config = ExecutorConfig {
        build: args.model.build_config(),
        capacity_scheduler_policy: policy,
        ..ExecutorConfig::default()
    };
    let model_name = args.model.spec().label();
    let weights = match args.model.dummy_spec() {
        Some(spec) => format!("dummy {}", spec.dtype),
        None if args.model.engine.dequantize => "f32 (dequantized)".into(),
        None => "as stored".into(),
    };
    let llm = args.model.start(registry, config.clone(), hooks)?;
    let load_seconds = llm.load_time().as_secs_f64();
    let requests = match &args.dataset {
        Some(path) => bench::from_jsonl(path, llm.tokenizer(), args.output_len)?,
        None => bench::synthetic(&SyntheticSpec {
            num_requests: args.num_requests,
            input_len: args.input_len,
            output_len: args.output_len,
            input_len_std: args.input_len_std,
            output_len_std: args.output_len_std,
            vocab_size: llm.config().vocab_size,
            seed: args.seed,
        })?,
    };
    let max_len = requests.iter().map(|r| r.input_ids.len() + r.output_len).max().unwrap_or(0);
    if max_len > llm.max_seq_len() {
        bail!("a request needs {max_len} tokens, beyond max_seq_len {} (pass --max-seq-len)", llm.max_seq_len());
    }
    let result = bench::run(&llm, &requests, &mode, !args.no_progress && !args.json)?;
    let info = BenchConfigInfo {
        model: model_name.display().to_string(),
        device: config.build.selection.device.to_string(),
        weight_dtypes: weights,
        kv_cache_dtype: config.build.kv_cache_dtype.to_string(),
        max_batch_size: config.build.max_batch_size,
        max_num_tokens: config.build.max_num_tokens,
        max_seq_len: llm.max_seq_len(),
        capacity_scheduler_policy: format!("{policy:?}"),
        threads: HostPool::global().num_threads(),
        mode: match &mode {
            BenchMode::Throughput => "throughput".into(),
            BenchMode::Concurrency(n) => format!("latency (concurrency {n})"),
            BenchMode::RequestRate { rate, .. } => format!("latency (Poisson {rate} req/s)"),
        },
        load_seconds,
    };
    let report = BenchReport::new(info, &result);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    llm.shutdown()?;
    Ok(())
}
