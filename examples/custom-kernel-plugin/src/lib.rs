//! An out-of-tree rtllm kernel plugin: the `gelu_tanh` op (GELU with the tanh approximation,
//! as PyTorch's `gelu(x, approximate="tanh")`), in two providers: a fast, parallel kernel and
//! a deliberately simple reference at low priority that `rtllm plugins check` compares it to.
//!
//! The crate depends on nothing but `rtllm-plugin-api`. Build it with `cargo build --release`
//! and put the `.so` (or its folder) on `RTLLM_PLUGIN_PATH`.

pub mod fast_math;
pub mod gelu;
pub mod reference;

pub use gelu::{GeluTanh, GeluTanhKernel};
pub use reference::{GeluTanhReference, GeluTanhReferenceKernel};

// docs:start:register
// One line per op: adds it to this dylib's op list.
rtllm_plugin_api::register_op!(GeluTanh);
rtllm_plugin_api::register_op!(GeluTanhReference);

// Once per crate: the root module rtllm loads (its ABI version and layout are checked).
rtllm_plugin_api::export_plugin!(name: "custom-kernel-plugin", version: env!("CARGO_PKG_VERSION"));
// docs:end:register

#[cfg(test)]
mod tests;
