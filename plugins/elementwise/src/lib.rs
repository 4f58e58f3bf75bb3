//! rtllm elementwise plugin.
rtllm_plugin_api::export_plugin!(name: "rtllm-elementwise", version: env!("CARGO_PKG_VERSION"));
