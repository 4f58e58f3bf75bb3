//! rtllm Triton plugin: the project's Triton kernels (kernels/triton/*.py), compiled ahead of
//! time by kernels/triton/compile.py into cubins plus a manifest, embedded here at build time,
//! and registered as CUDA op providers straight from the manifest: its declarative rules give
//! each op's inputs, dtypes, checks and output shapes, the argument mapping and the grid, so
//! adding a kernel needs a .py file and a kernels.toml entry, no Rust. The providers register
//! below the CUDA C plugin's priority: they serve an op when pinned (`pins` in config, or an
//! `OpRequest::pinned("rtllm-triton")`) or when no higher-priority provider is loaded.

pub mod driver;
pub mod expr;
pub mod kernel;
pub mod manifest;
mod parse;
pub mod registry;
pub mod rules;

#[cfg(test)]
mod tests;

rtllm_plugin_api::register_op_set!(registry::manifest_ops);

rtllm_plugin_api::export_plugin!(name: "rtllm-triton", version: env!("CARGO_PKG_VERSION"), devices: ["cuda"]);
