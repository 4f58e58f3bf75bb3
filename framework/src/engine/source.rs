//! What a build reads weights through: their stored metas by name (to build the graph) and
//! their bytes (to bind them), implemented by the weight stores (GGUF, safetensors, dummy).

use rtllm_plugin_api::TensorMeta;

/// What the builder needs to know about weights: their stored metas, by name.
pub trait WeightMetas {
    fn weight_meta(&self, name: &str) -> Option<TensorMeta>;
    /// Names present that are closest to `name`, for "missing weight" errors.
    fn nearest_weight_names(&self, name: &str) -> Vec<String>;
    /// How the activations of FP8 linears are quantized (None: the weights hold no FP8).
    fn fp8_activation(&self) -> Option<rtllm_plugin_api::shapes::fp8::Fp8Activation> {
        None
    }
}

/// Weights an engine can read: metas for building, bytes for binding.
pub trait WeightSource: WeightMetas + Send + Sync {
    /// The stored bytes of a weight (row-major, in its stored dtype).
    fn weight_bytes(&self, name: &str) -> Option<&[u8]>;
    /// The rule of a generated weight (dummy weights): a GPU engine runs it on the device
    /// (`dummy_fill` op) instead of uploading host bytes.
    fn weight_fill(&self, _name: &str) -> Option<crate::weights::FillRule> {
        None
    }
}
