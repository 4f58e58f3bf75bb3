//! Weights: reading model sources into a [`WeightStore`] (HF names, HF-order shapes, bytes
//! read into memory, see `crate::input_file`) together with their [`ModelConfig`] and tokenizer.
//!
//! - [`gguf`]: the GGUF v2/v3 parser, GGUF → config/HF names, the tokenizer spec.
//! - [`safetensors`]: safetensors reader (sharded via the index) and writer.
//! - [`store`]: `WeightStore` / `Tensor` and dequantization helpers (plugin-api `quant`).
//! - [`fp8`]: HF FP8 checkpoints (compressed-tensors, ModelOpt, fbgemm): config and scales.
//! - [`kv_scales`]: the FP8 KV cache's per-layer scales (checkpoint forms, defaults).
//! - [`fill`]: the fill rules of generated (dummy) weights, shared with the GPU fill kernel.
//! - [`gguf_writer`]: a GGUF writer for tests and tools.
//! - [`hf_export`]: config.json, generation_config.json and tokenizer files for a GGUF model.
//! - [`source`]: `load_model_source` for a `.gguf` file or an HF directory.

pub mod dummy;
mod error;
pub mod fill;
pub mod fp8;
pub mod gguf;
pub mod gguf_writer;
pub mod hf_export;
pub mod kv_scales;
pub mod safetensors;
mod source;
pub mod store;

#[cfg(test)]
mod fuzz_tests;

pub use error::WeightError;
pub use fill::FillRule;
pub use gguf::{GgufFile, GgufMetadata, GgufValue};
pub use gguf_writer::GgufWriter;
pub use safetensors::write_safetensors;
pub use source::{gguf_model, load_gguf, load_hf_dir, load_model_source, LoadedModel};
pub use store::{Generated, Tensor, TensorData, WeightFile, WeightStore};
