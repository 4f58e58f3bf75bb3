//! rtllm rmsnorm plugin: the CPU `rmsnorm`, `fused_add_rmsnorm` and `layer_norm` ops (f32
//! activations, f32/bf16/f16 weights), vectorised per row and parallel over rows on the host's pool.

pub mod fused_add;
pub mod layer_norm;
pub mod rmsnorm;
pub mod row;

#[cfg(test)]
mod layer_norm_tests;
#[cfg(test)]
mod norm_tests;

pub use fused_add::{FusedAddRmsNorm, FusedAddRmsNormKernel};
pub use layer_norm::{LayerNorm, LayerNormKernel};
pub use rmsnorm::{RmsNorm, RmsNormKernel};

rtllm_plugin_api::register_op!(RmsNorm);
rtllm_plugin_api::register_op!(FusedAddRmsNorm);
rtllm_plugin_api::register_op!(LayerNorm);

rtllm_plugin_api::export_plugin!(name: "rtllm-rmsnorm", version: env!("CARGO_PKG_VERSION"));
