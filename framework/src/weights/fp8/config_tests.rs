//! The three producers' configs as they write them, and the errors that name the field.

use super::*;
use serde_json::json;

fn ct(weights: &str, dynamic: bool, act_strategy: &str) -> Value {
    json!({
        "quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head", "re:.*mlp\\.gate$"],
        "kv_cache_scheme": null, "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"], "output_activations": null,
            "weights": {"num_bits": 8, "type": "float", "symmetric": true, "dynamic": false, "strategy": weights, "group_size": null},
            "input_activations": {"num_bits": 8, "type": "float", "symmetric": true, "dynamic": dynamic, "strategy": act_strategy}
        }}
    })
}

#[test]
fn compressed_tensors_static_and_dynamic() {
    let f = parse(Some(&ct("tensor", false, "tensor")), None).unwrap().unwrap();
    assert_eq!((f.weight_scale, f.activation), (WeightScale::PerTensor, Fp8Activation::Static));
    assert!(f.ignores("lm_head") && f.ignores("model.layers.3.mlp.gate") && !f.ignores("model.layers.3.mlp.gate_proj"));
    let f = parse(Some(&ct("channel", true, "token")), None).unwrap().unwrap();
    assert_eq!((f.weight_scale, f.activation), (WeightScale::PerChannel, Fp8Activation::Dynamic { upper_bound: None }));
}

#[test]
fn modelopt_from_either_file_and_fbgemm() {
    let file = json!({"producer": {"name": "modelopt", "version": "0.19"}, "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": null, "exclude_modules": ["lm_head", "*.mlp.gate"]}});
    let f = parse(None, Some(&file)).unwrap().unwrap();
    assert_eq!(
        (f.producer, f.weight_scale, f.activation),
        (Producer::ModelOpt, WeightScale::PerTensor, Fp8Activation::Static)
    );
    assert!(f.ignores("lm_head") && f.ignores("model.layers.0.mlp.gate") && !f.ignores("model.layers.0.mlp.up_proj"));
    let cfg = json!({"quant_method": "modelopt", "quant_algo": "FP8", "exclude_modules": ["lm_head"]});
    assert_eq!(parse(Some(&cfg), Some(&file)).unwrap().unwrap().activation, Fp8Activation::Static);
    let other = json!({"quantization": {"quant_algo": "FP8_PER_CHANNEL_PER_TOKEN"}});
    assert!(parse(Some(&cfg), Some(&other)).unwrap_err().contains("quant_algo"));

    let fb =
        json!({"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0, "modules_to_not_convert": ["lm_head"]});
    let f = parse(Some(&fb), None).unwrap().unwrap();
    assert_eq!(
        (f.weight_scale, f.activation),
        (WeightScale::PerChannel, Fp8Activation::Dynamic { upper_bound: Some(1200.0) })
    );
    assert!(f.ignores("lm_head"));
}

#[test]
fn unknown_or_inconsistent_configs_name_the_field() {
    let cases = [
        (json!({"quant_method": "gptq"}), "quant_method"),
        (json!({"format": "float-quantized"}), "quant_method"),
        (json!({"quant_method": "compressed-tensors", "format": "pack-quantized"}), "format"),
        (ct("group", false, "tensor"), "weights.strategy"),
        (ct("tensor", true, "tensor"), "input_activations.strategy"),
        (ct("tensor", false, "token"), "input_activations.strategy"),
        (json!({"quant_method": "modelopt", "quant_algo": "NVFP4"}), "quant_algo"),
        (json!({"quant_method": "modelopt"}), "quant_algo"),
        (
            json!({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "INT8"}),
            "kv_cache_quant_algo",
        ),
        (json!({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_scheme": {}}), "kv_cache_scheme"),
        (json!({"quant_method": "fbgemm_fp8", "activation_scale_ub": -1.0}), "activation_scale_ub"),
        (json!({"quant_method": "fbgemm_fp8", "modules_to_not_convert": "lm_head"}), "modules_to_not_convert"),
    ];
    for (cfg, field) in cases {
        let e = parse(Some(&cfg), None).unwrap_err();
        assert!(e.contains(field), "{cfg}: {e}");
    }
    let mut two_bits = ct("tensor", false, "tensor");
    two_bits["config_groups"]["group_0"]["weights"]["num_bits"] = json!(4);
    assert!(parse(Some(&two_bits), None).unwrap_err().contains("weights.num_bits"));
    let kv_cases = [
        (json!({"num_bits": 8, "type": "float"}), "kv_cache_scheme.dynamic"),
        (json!({"num_bits": 8, "type": "int", "dynamic": false, "strategy": "tensor"}), "kv_cache_scheme.type"),
        (json!({"num_bits": 4, "type": "float", "dynamic": false, "strategy": "tensor"}), "kv_cache_scheme.num_bits"),
        (json!({"num_bits": 8, "type": "float", "dynamic": true, "strategy": "tensor"}), "kv_cache_scheme.dynamic"),
        (json!({"num_bits": 8, "type": "float", "dynamic": false, "strategy": "channel"}), "kv_cache_scheme.strategy"),
        (
            json!({"num_bits": 8, "type": "float", "dynamic": false, "strategy": "tensor", "group_size": 64}),
            "group_size",
        ),
        (json!("fp8"), "kv_cache_scheme"),
    ];
    for (scheme, field) in kv_cases {
        let mut kv = ct("tensor", false, "tensor");
        kv["kv_cache_scheme"] = scheme;
        let e = parse(Some(&kv), None).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
    }
    assert_eq!(parse(None, None).unwrap(), None);
}

#[test]
fn fp8_kv_cache_schemes() {
    let mut kv = ct("tensor", false, "tensor");
    kv["kv_cache_scheme"] =
        json!({"num_bits": 8, "type": "float", "symmetric": true, "dynamic": false, "strategy": "tensor"});
    assert!(parse(Some(&kv), None).unwrap().unwrap().kv_cache);
    assert!(!parse(Some(&ct("tensor", false, "tensor")), None).unwrap().unwrap().kv_cache);
    let cfg = json!({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "FP8"});
    assert!(parse(Some(&cfg), None).unwrap().unwrap().kv_cache);
    let file = json!({"quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}});
    assert!(parse(None, Some(&file)).unwrap().unwrap().kv_cache);
    let no_kv = json!({"quantization": {"quant_algo": "FP8"}});
    assert!(parse(Some(&cfg), Some(&no_kv)).unwrap_err().contains("quant_algo"));
}

#[test]
fn wildcards() {
    assert!(wildcard("*", "x") && wildcard("a*c", "abbc") && wildcard("a?c", "abc") && !wildcard("a*d", "abc"));
}
