//! One rank's worker: a thread that builds the rank's engine (its graph, weight shards and KV
//! pool; on a GPU, bound to the rank's device on this thread, where the collectives'
//! communicator is created) and then runs the steps and block copies it is sent, replying
//! once per command. Closing the command channel stops it.

use crate::engine::{build_rank_parts, BuildConfig, Engine, EngineError, EngineLimits, LoadError, RowSampling};
use crate::engine::{StepBatch, WeightSource};
use crate::registry::Registry;
use rtllm_models::toml::ModelDefinition;
use rtllm_models::{ModelConfig, Parallel};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// Everything a rank builds its engine from.
pub(crate) struct RankBuild {
    pub definition: ModelDefinition,
    pub config: ModelConfig,
    pub weights: Arc<dyn WeightSource>,
    pub registry: Arc<Registry>,
    /// This rank's build config (`device_ordinal` is the rank's GPU).
    pub build: BuildConfig,
    pub parallel: Parallel,
}

/// The inputs of one step, shared by every rank.
#[derive(Clone, Default)]
pub(crate) struct Step {
    pub batch: StepBatch,
    /// Per logits row sampling parameters (device sampling only).
    pub rows: Vec<RowSampling>,
}

/// Where a rank puts what the caller reads back (only rank 0 is asked for it).
pub(crate) enum Output {
    None,
    Logits(Vec<f32>),
    Tokens(Vec<i32>),
}

pub(crate) enum Command {
    /// Run one step: sample on the device (`sample`) or compute logits.
    Forward {
        step: Arc<Step>,
        sample: bool,
        out: Output,
    },
    CopyBlock {
        src: usize,
        dst: usize,
    },
}

/// What a built rank reports.
#[derive(Clone, Debug)]
pub(crate) struct RankInfo {
    pub limits: EngineLimits,
    pub vocab_size: usize,
    pub samples_on_device: bool,
}

pub(crate) enum Reply {
    Built(Result<RankInfo, LoadError>),
    Done(Result<Output, EngineError>),
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into())
}

/// The body of a rank's thread.
pub(crate) fn rank_main(spec: RankBuild, commands: Receiver<Command>, replies: Sender<Reply>) {
    let rank = spec.parallel.tp_rank;
    let built = catch_unwind(AssertUnwindSafe(|| {
        build_rank_parts(
            &spec.definition,
            &spec.config,
            spec.weights.clone(),
            &spec.registry,
            &spec.build,
            &spec.parallel,
        )
        .and_then(|parts| parts.into_engine())
    }));
    let mut engine = match built {
        Ok(Ok(engine)) => engine,
        Ok(Err(e)) => {
            let _ = replies.send(Reply::Built(Err(e)));
            return;
        }
        Err(payload) => {
            let message = format!("rank {rank} panicked while building: {}", panic_text(payload.as_ref()));
            let _ = replies.send(Reply::Built(Err(LoadError::Config(message))));
            return;
        }
    };
    let info = RankInfo {
        limits: engine.limits().clone(),
        vocab_size: engine.vocab_size(),
        samples_on_device: engine.samples_on_device(),
    };
    if replies.send(Reply::Built(Ok(info))).is_err() {
        return;
    }
    let mut greedy: Vec<RowSampling> = Vec::new();
    while let Ok(command) = commands.recv() {
        let result = catch_unwind(AssertUnwindSafe(|| match command {
            Command::Forward { step, sample, out } => run_step(&mut engine, step, sample, out, &mut greedy),
            Command::CopyBlock { src, dst } => engine.copy_kv_block(src, dst).map(|_| Output::None),
        }));
        let result = result.unwrap_or_else(|payload| {
            Err(EngineError::Setup(format!("rank {rank} panicked: {}", panic_text(payload.as_ref()))))
        });
        if replies.send(Reply::Done(result)).is_err() {
            break;
        }
    }
}

/// Runs one step on a rank. The rank asked for output copies it out; the others only run
/// the graph (its collectives need every rank) and skip the logits readback where they can
/// by sampling greedily on the device (a few bytes back instead of the logits).
fn run_step(
    engine: &mut Engine,
    step: Arc<Step>,
    sample: bool,
    out: Output,
    greedy: &mut Vec<RowSampling>,
) -> Result<Output, EngineError> {
    let batch = &step.batch;
    let out = match out {
        Output::Tokens(mut buf) if sample => {
            let tokens = engine.forward_sample(batch, &step.rows)?;
            buf.clear();
            buf.extend_from_slice(tokens);
            Output::Tokens(buf)
        }
        Output::Logits(mut buf) if !sample => {
            let logits = engine.forward(batch)?;
            buf.clear();
            buf.extend_from_slice(logits);
            Output::Logits(buf)
        }
        _ if sample => engine.forward_sample(batch, &step.rows).map(|_| Output::None)?,
        _ if engine.samples_on_device() => {
            greedy.clear();
            greedy.resize(batch.logits_indices.len(), RowSampling::greedy());
            engine.forward_sample(batch, greedy).map(|_| Output::None)?
        }
        _ => engine.forward(batch).map(|_| Output::None)?,
    };
    // The caller reuses the step's buffers once every rank has let go of them.
    drop(step);
    Ok(out)
}
