//! `paged_attention`'s attributes and build-time (meta) checks for this CPU provider: the
//! rules shared with the other providers (plugin-api `shapes::attention`) with this provider's
//! dtypes — f32 activations, f32/f16/bf16/f8_e4m3 caches.

pub use rtllm_plugin_api::shapes::attention::{
    example_inputs, AttnParams, BLOCK_TABLES, K, K_CACHE, K_SCALE, NUM_INPUTS, NUM_INPUTS_FP8, OP, Q, QUERY_START,
    SEQ_LENS, V, V_CACHE, V_SCALE,
};
use rtllm_plugin_api::{shapes::attention, DType, PluginError, TensorMeta};

/// Checks the input metas (symbolic dims compare by name) and returns the output meta.
pub fn check_metas(inputs: &[TensorMeta], p: &AttnParams) -> Result<TensorMeta, PluginError> {
    attention::check_metas(inputs, p, &[DType::F32], &[DType::F32, DType::F16, DType::BF16, DType::F8_E4M3])
}
