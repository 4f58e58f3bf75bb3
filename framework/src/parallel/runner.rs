//! `ModelRunner`: the seam the runtime drives a model through, one step at a time. A single
//! `Engine` is one (its inherent methods, statically dispatched in the executor: no overhead
//! on the one-rank path); a [`super::TensorParallelEngine`] is another, fanning each call out
//! to its ranks in lockstep; [`ModelEngine`], what the model loader returns, is either.

use super::TensorParallelEngine;
use crate::engine::{Engine, EngineError, EngineLimits, RowSampling, StepBatch};

/// What the executor calls to run a model.
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

/// A loaded model's engine: one engine, or one split across tensor-parallel ranks.
pub enum ModelEngine {
    Single(Engine),
    TensorParallel(TensorParallelEngine),
}

impl ModelEngine {
    /// The single engine (None for a tensor-parallel model).
    pub fn single(&self) -> Option<&Engine> {
        match self {
            ModelEngine::Single(e) => Some(e),
            ModelEngine::TensorParallel(_) => None,
        }
    }

    /// The single engine, mutably (None for a tensor-parallel model).
    pub fn single_mut(&mut self) -> Option<&mut Engine> {
        match self {
            ModelEngine::Single(e) => Some(e),
            ModelEngine::TensorParallel(_) => None,
        }
    }

    /// Ranks the model is split across (1 for a single engine).
    pub fn tensor_parallel_size(&self) -> usize {
        match self {
            ModelEngine::Single(_) => 1,
            ModelEngine::TensorParallel(tp) => tp.tensor_parallel_size(),
        }
    }

    fn runner(&self) -> &dyn ModelRunner {
        match self {
            ModelEngine::Single(e) => e,
            ModelEngine::TensorParallel(tp) => tp,
        }
    }

    fn runner_mut(&mut self) -> &mut dyn ModelRunner {
        match self {
            ModelEngine::Single(e) => e,
            ModelEngine::TensorParallel(tp) => tp,
        }
    }
}

impl ModelRunner for ModelEngine {
    fn limits(&self) -> &EngineLimits {
        self.runner().limits()
    }

    fn vocab_size(&self) -> usize {
        self.runner().vocab_size()
    }

    fn samples_on_device(&self) -> bool {
        self.runner().samples_on_device()
    }

    fn copy_kv_block(&mut self, src: usize, dst: usize) -> Result<(), EngineError> {
        self.runner_mut().copy_kv_block(src, dst)
    }

    fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError> {
        self.runner_mut().forward(batch)
    }

    fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<&[i32], EngineError> {
        self.runner_mut().forward_sample(batch, rows)
    }
}
