//! The `quantization_config` block of config.json, in the compressed-tensors layout that
//! llm-compressor writes (`quant_method: compressed-tensors`, `format: float-quantized`, one
//! config group targeting `Linear`, `ignore: ["lm_head"]`, status `compressed`, and with an FP8
//! KV cache its `kv_cache_scheme`): the same keys, values and sorting, so vLLM, transformers and
//! rtllm's own loader read it as theirs.

use super::fp8::{ActivationScheme, WeightScheme};
use super::targets::IGNORED_MODULES;
use serde_json::{json, Value};

/// The compressed-tensors release whose serialization this follows.
pub const COMPRESSED_TENSORS_VERSION: &str = "0.20.1";

/// FP8 E4M3 quantization args of one tensor kind (compressed-tensors `QuantizationArgs`).
fn fp8_args(strategy: &str, dynamic: bool, observer: Option<&str>) -> Value {
    let mut args = json!({
        "num_bits": 8, "type": "float", "symmetric": true, "group_size": null,
        "strategy": strategy, "dynamic": dynamic,
    });
    if let Some(o) = observer {
        args["observer"] = json!(o);
    }
    args
}

/// The `quantization_config` for FP8 weights of `weights` and activations of `activations`,
/// and with `kv_cache` an FP8 KV cache with static per-tensor (per-layer) k/v scales.
pub fn quantization_config(weights: WeightScheme, activations: ActivationScheme, kv_cache: bool) -> Value {
    let weight_strategy = match weights {
        WeightScheme::PerTensor => "tensor",
        WeightScheme::PerChannel => "channel",
    };
    let input = match activations {
        // The FP8 preset's static activations: one scale per tensor from the running max.
        ActivationScheme::Static => fp8_args("tensor", false, Some("static_minmax")),
        // The FP8_DYNAMIC preset's: a scale per token at run time.
        ActivationScheme::Dynamic => fp8_args("token", true, None),
    };
    json!({
        "config_groups": {
            "group_0": {
                "format": "float-quantized",
                "input_activations": input,
                "output_activations": null,
                "targets": ["Linear"],
                "weights": fp8_args(weight_strategy, false, None),
            }
        },
        "format": "float-quantized",
        "global_compression_ratio": null,
        "ignore": IGNORED_MODULES,
        "kv_cache_scheme": if kv_cache { fp8_args("tensor", false, Some("static_minmax")) } else { Value::Null },
        "moe_sparsity_config": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": COMPRESSED_TENSORS_VERSION,
    })
}
