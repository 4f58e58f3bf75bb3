//! `ModelRunner`: the seam the runtime drives a model through, one step at a time. A single
//! `Engine` is one (its inherent methods, statically dispatched in the executor: no overhead
//! on the one-rank path); a [`super::TensorParallelEngine`] is another, fanning each call out
//! to its ranks in lockstep.

use crate::engine::{Engine, EngineError, EngineLimits, RowSampling, StepBatch};

/// What the executor and the sequence runner call to run a model.
pub trait ModelRunner: Send {
    /// The limits every step must respect (the KV block pool size among them).
    fn limits(&self) -> &EngineLimits;
    /// Columns of a logits row.
    fn vocab_size(&self) -> usize;
    /// Whether `forward_sample` picks tokens on the device.
    fn samples_on_device(&self) -> bool;
    /// Copies KV block `src` over `dst` in every layer (copy-on-write for forks).
    fn copy_kv_block(&mut self, src: usize, dst: usize) -> Result<(), EngineError>;
    /// Runs one packed batch; returns `logits_indices.len() × vocab_size` f32 logits.
    fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError>;
    /// Runs one packed batch and samples one token per logits row on the device.
    fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<&[i32], EngineError>;
}

impl ModelRunner for Engine {
    fn limits(&self) -> &EngineLimits {
        Engine::limits(self)
    }

    fn vocab_size(&self) -> usize {
        Engine::vocab_size(self)
    }

    fn samples_on_device(&self) -> bool {
        Engine::samples_on_device(self)
    }

    fn copy_kv_block(&mut self, src: usize, dst: usize) -> Result<(), EngineError> {
        Engine::copy_kv_block(self, src, dst)
    }

    fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError> {
        Engine::forward(self, batch)
    }

    fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<&[i32], EngineError> {
        Engine::forward_sample(self, batch, rows)
    }
}
