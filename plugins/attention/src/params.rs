//! `paged_attention`'s attributes and build-time (meta) checks for this CPU provider: the
//! rules shared with the other providers (plugin-api `shapes::attention`) with this provider's
//! dtypes — f32 activations, f32/f16/bf16 caches.

pub use rtllm_plugin_api::shapes::attention::{
    AttnParams, BLOCK_TABLES, K, K_CACHE, NUM_INPUTS, OP, Q, QUERY_START, SEQ_LENS, V, V_CACHE,
};
use rtllm_plugin_api::{shapes::attention, DType, PluginError, TensorMeta};

/// Checks the input metas (symbolic dims compare by name) and returns the output meta.
pub fn check_metas(inputs: &[TensorMeta], p: &AttnParams) -> Result<TensorMeta, PluginError> {
    attention::check_metas(inputs, p, &[DType::F32], &DType::FLOATS)
}
