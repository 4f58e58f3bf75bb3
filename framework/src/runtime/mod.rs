//! The runtime around an engine: KV cache blocks and running sequences through forward passes.

mod blocks;
mod sequence;

pub use blocks::{BlockPool, KvCacheFull};
pub use sequence::{generate, FinishReason, Generation, RuntimeError, SequenceRunner};
