//! rtllm rmsnorm plugin.
rtllm_plugin_api::export_plugin!(name: "rtllm-rmsnorm", version: env!("CARGO_PKG_VERSION"));
