//! rtllm CUDA plugin: CUDA providers of the model ops. Kernels are CUDA C in kernels/cuda,
//! compiled by NVRTC for the device when first used (cubins cached on disk); GEMMs go through
//! cuBLASLt. The driver, NVRTC and cuBLASLt are loaded at run time, so this plugin builds and
//! loads on machines with no CUDA (its ops then fail to create with a clear error).

pub mod attention;
pub mod attention_plan;
pub mod launch_repeat;
pub mod runtime;

pub mod argmax;
pub mod blaslt;
pub mod devargs;
pub mod elementwise;
pub mod embedding;
pub mod fill;
pub mod matmul;
pub mod norm;
pub mod rope;

rtllm_plugin_api::register_op!(norm::RmsNorm);
rtllm_plugin_api::register_op!(norm::FusedAddRmsNorm);
rtllm_plugin_api::register_op!(elementwise::Add);
rtllm_plugin_api::register_op!(elementwise::SiluMul);
rtllm_plugin_api::register_op!(embedding::Embedding);
rtllm_plugin_api::register_op!(embedding::GatherRows);
rtllm_plugin_api::register_op!(argmax::Argmax);
rtllm_plugin_api::register_op!(rope::Rope);
rtllm_plugin_api::register_op!(matmul::Matmul);
pub mod gemv;
pub mod grouped_matmul;
rtllm_plugin_api::register_op!(grouped_matmul::GroupedMatmul);
pub mod qkv_rope_matmul;
rtllm_plugin_api::register_op!(qkv_rope_matmul::QkvRopeMatmul);
pub mod swiglu_matmul;
rtllm_plugin_api::register_op!(swiglu_matmul::SwigluMatmul);
pub mod blaslt_fp8;
pub mod fp8_grouped_matmul;
pub mod fp8_kernels;
pub mod fp8_matmul;
pub mod fp8_qkv_rope_matmul;
pub mod fp8_run;
pub mod fp8_swiglu_matmul;
rtllm_plugin_api::register_op!(fp8_grouped_matmul::Fp8GroupedMatmul);
rtllm_plugin_api::register_op!(fp8_qkv_rope_matmul::Fp8QkvRopeMatmul);
rtllm_plugin_api::register_op!(fp8_swiglu_matmul::Fp8SwigluMatmul);
pub mod sampling;
rtllm_plugin_api::register_op!(fp8_matmul::Fp8Matmul);

rtllm_plugin_api::register_op!(attention::PagedAttention);
rtllm_plugin_api::register_op!(sampling::Sample);
rtllm_plugin_api::register_op!(fill::DummyFill);

#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod create_tests;

rtllm_plugin_api::export_plugin!(name: "rtllm-cuda", version: env!("CARGO_PKG_VERSION"), devices: ["cuda"]);
