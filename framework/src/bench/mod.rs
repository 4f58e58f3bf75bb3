//! `rtllm bench` as a library (in the manner of trtllm-bench): datasets ([`dataset`]), the
//! runner over an `Llm` in throughput, fixed-concurrency or request-rate mode ([`runner`]),
//! latency summaries ([`stats`]) and the report ([`report`]).

pub mod dataset;
pub mod report;
pub mod runner;
pub mod stats;

pub use dataset::{from_jsonl, synthetic, BenchRequest, DatasetError, SyntheticSpec};
pub use report::{BenchConfigInfo, BenchReport, KvReport};
pub use runner::{run, BenchMode, RequestTiming, RunResult};
pub use stats::Summary;
