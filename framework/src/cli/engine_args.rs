//! The engine flags of every model-running subcommand, apart from which model: the build limits,
//! the engine cache, dequantization and the device flags, and the `BuildConfig` they make.
//! `ModelArgs` pairs them with one model; `eval compare` with two.

use super::device::DeviceArgs;
use crate::engine::BuildConfig;

/// How a model's engine is built.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Neither read nor write the engine cache.
    #[arg(long)]
    pub no_build_cache: bool,
    /// Most sequences per executor step (the engine's build limit).
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    /// Most tokens one forward pass takes (sizes the activation arena; longer prompts are
    /// prefilled in chunks).
    #[arg(long)]
    pub max_num_tokens: Option<usize>,
    /// Longest sequence (prompt + output) the engine serves.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Host bytes reserved for the KV cache.
    #[arg(long)]
    pub kv_cache_bytes: Option<usize>,
    /// Convert quantized weights to f32 at load (the reference path).
    #[arg(long)]
    pub dequantize: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl EngineArgs {
    /// The engine build config these flags ask for.
    pub fn build_config(&self) -> BuildConfig {
        let mut b = BuildConfig::default();
        if let Some(v) = self.max_batch_size {
            b.max_batch_size = v;
        }
        if let Some(v) = self.max_num_tokens {
            b.max_num_tokens = v;
            if self.max_batch_size.is_none() {
                // A step holds at most one token per sequence of the batch.
                b.max_batch_size = b.max_batch_size.min(v.max(1));
            }
        }
        if self.max_seq_len.is_some() {
            b.max_seq_len = self.max_seq_len;
        }
        if let Some(v) = self.kv_cache_bytes {
            b.kv_cache_bytes = v;
        }
        b.selection.dequantize_weights = self.dequantize;
        b.use_engine_cache = !self.no_build_cache;
        self.device.apply(&mut b);
        b
    }
}
