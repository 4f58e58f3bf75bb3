//! Parallel execution of one model over several ranks. Today: tensor parallelism, one worker
//! thread per rank (on a GPU, one device per rank), driven in lockstep by the executor through
//! the [`ModelRunner`] seam that a single `Engine` also implements. The rank coordinates
//! (`rtllm_models::Parallel`) carry a pipeline axis fixed to one stage, for pipeline
//! parallelism to slot in later.
//!
//! - `runner`: [`ModelRunner`], what the runtime calls per step, and [`ModelEngine`] (one engine or the ranks).
//! - `rank`: a rank's worker thread (build its engine, run steps).
//! - `engine`: [`TensorParallelEngine`], the ranks as one runner.
//! - `load`: [`start_engine`] and the layout checks.

mod engine;
mod load;
mod rank;
mod runner;

pub use engine::TensorParallelEngine;
pub use load::{check_layout, start_engine, tensor_parallel_ranks};
pub use rtllm_models::{AttentionSplit, Parallel, ParallelError};
pub use runner::{ModelEngine, ModelRunner};
