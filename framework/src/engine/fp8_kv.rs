//! The FP8 KV cache in the plain graph (docs/quantization.md, "The KV cache"). A model writes
//! `paged_attention(q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start)` whatever
//! the cache dtype; when the caches are F8_E4M3 the builder appends the layer's scales,
//!
//! ```text
//! paged_attention(..., query_start, model.layers.N.self_attn.k_scale, ...v_scale)
//! ```
//!
//! (N from the cache input `kv_cache.N.k`), so Rust and TOML architectures get the FP8 cache
//! with no change. The scales are whole on every tensor-parallel rank.

use super::build::EngineGraphBuilder;
use super::graph::ValueSource;
use crate::weights::kv_scales;
use rtllm_models::{BuildError, GraphBuilder, Value};
use rtllm_plugin_api::shapes::attention::{K_CACHE, NUM_INPUTS};
use rtllm_plugin_api::DType;

/// The layer of a cache input named `kv_cache.N.k` / `kv_cache.N.v`.
pub(super) fn cache_layer(name: &str) -> Option<usize> {
    name.strip_prefix("kv_cache.")?.split_once('.')?.0.parse().ok()
}

/// `Some(inputs with the scales)` when `paged_attention(inputs)` reads an F8_E4M3 cache, else
/// `None` (the call as written).
pub fn lower(b: &mut EngineGraphBuilder<'_>, inputs: &[Value]) -> Result<Option<Vec<Value>>, BuildError> {
    if inputs.len() != NUM_INPUTS || b.meta(inputs[K_CACHE]).dtype != DType::F8_E4M3 {
        return Ok(None);
    }
    let layer = match b.value_source(inputs[K_CACHE]) {
        Some(ValueSource::Input(name)) => cache_layer(name),
        _ => None,
    };
    let Some(layer) = layer else {
        return Err(BuildError::Invalid {
            scope: b.scope().to_string(),
            message: "an F8_E4M3 k_cache must be the graph input `kv_cache.<layer>.k` (its layer names its scales)"
                .into(),
        });
    };
    let mut call = inputs.to_vec();
    call.push(b.weight(&kv_scales::name(layer, 'k'))?);
    call.push(b.weight(&kv_scales::name(layer, 'v'))?);
    Ok(Some(call))
}

#[cfg(test)]
mod tests {
    #[test]
    fn layers_from_cache_names() {
        assert_eq!(super::cache_layer("kv_cache.17.k"), Some(17));
        assert_eq!(super::cache_layer("kv_cache.x.k"), None);
        assert_eq!(super::cache_layer("cache.1.k"), None);
    }
}
