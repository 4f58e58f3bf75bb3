//! rtllm gemm plugin: the CPU `matmul` op — f32 activations with f32/bf16/f16 weights (AVX2+FMA
//! register tiles chosen at run time, cache blocking) and with GGUF block-quantized weights
//! (Q8_0/Q4_0/Q4_1/Q4_K/Q6_K: exact integer dot products with ~15-bit activations on AVX-512
//! VNNI, AVX2 or portable code, the same bits for a row in any batch; f32 paths for comparison),
//! all on tasks of the host's pool; and `fp8_matmul` (FP8 E4M3 weights with their scales,
//! static or dynamic per-token activation quantization) on the same f32 driver.

mod driver;
pub mod fp8_matmul;
#[cfg(test)]
mod fp8_matmul_tests;
pub mod matmul;
mod packed;
mod qact;
pub mod qdot;
pub mod qdriver;
mod qf32;
mod qformat;
pub mod qmatmul;
mod qpanel;
mod simd;
mod tile;

#[cfg(test)]
mod matmul_tests;
#[cfg(test)]
mod qmatmul_tests;
#[cfg(test)]
mod test_pool;

pub use fp8_matmul::{Fp8Matmul, Fp8MatmulKernel};
pub use matmul::{Matmul, MatmulKernel};
pub use qdot::QIsa;
pub use qdriver::QPath;
pub use qmatmul::{QMatmul, QMatmulKernel};
pub use simd::Isa;

rtllm_plugin_api::register_op!(Matmul);
rtllm_plugin_api::register_op!(QMatmul);
rtllm_plugin_api::register_op!(Fp8Matmul);

rtllm_plugin_api::export_plugin!(name: "rtllm-gemm", version: env!("CARGO_PKG_VERSION"));
