//! `rtllm quantize --format fp8`: a bf16/f16/f32 model (an HF directory, or a GGUF file whose
//! quantized tensors are dequantized first) converted into an FP8 HF directory in the
//! compressed-tensors layout llm-compressor writes, which vLLM, transformers and rtllm load.
//!
//! - `fp8`: scales and E4M3 codes (conversions from `rtllm_plugin_api::fp8`), computed as
//!   compressed-tensors computes them.
//! - `targets`: which weights are linear layers (from the model's own graph).
//! - `calibrate`: static input scales from a calibration pass through the engine.
//! - `tensors`: the output tensors, planned then made; `config`: the `quantization_config`.
//! - `output`: the atomically written directory and its shards.
//! - `run`: the conversion, end to end.

mod calibrate;
mod config;
mod error;
mod fp8;
mod output;
mod run;
mod targets;
mod tensors;

pub use calibrate::{read_text, sequences, CalibrationConfig, CALIBRATION_TEXT_LIMIT};
pub use config::{quantization_config, COMPRESSED_TENSORS_VERSION};
pub use error::QuantizeError;
pub use fp8::{quantize_value, round_to, scale_for, ActivationScheme, WeightScheme};
pub use output::SHARD_BYTES;
pub use run::{default_calibration_file, quantize, Calibration, QuantizeOptions, QuantizeReport};
pub use targets::{linear_weights, IGNORED_MODULES};
