//! rtllm gemm plugin.
rtllm_plugin_api::export_plugin!(name: "rtllm-gemm", version: env!("CARGO_PKG_VERSION"));
