//! rtllm gemm plugin: the CPU `matmul` op (f32 activations, f32/bf16/f16 weights), with
//! AVX2+FMA register tiles chosen at run time, cache blocking, and tasks on the host's pool.

mod driver;
pub mod matmul;
mod packed;
mod simd;
mod tile;

#[cfg(test)]
mod matmul_tests;
#[cfg(test)]
mod test_pool;

pub use matmul::{Matmul, MatmulKernel};
pub use simd::Isa;

rtllm_plugin_api::register_op!(Matmul);

rtllm_plugin_api::export_plugin!(name: "rtllm-gemm", version: env!("CARGO_PKG_VERSION"));
