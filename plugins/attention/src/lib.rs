//! rtllm attention plugin.
rtllm_plugin_api::export_plugin!(name: "rtllm-attention", version: env!("CARGO_PKG_VERSION"));
