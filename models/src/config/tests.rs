//! Tests of HF config.json parsing, defaults and validation.

use super::*;

const SMOLLM2: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
  "initializer_range": 0.041666666666666664, "intermediate_size": 1536,
  "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "vocab_size": 49152
}"#;

const QWEN25: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_size": 1536, "intermediate_size": 8960, "max_position_embeddings": 32768,
  "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 12,
  "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false,
  "use_sliding_window": false, "vocab_size": 151936
}"#;

const LLAMA32: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_size": 2048,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
}"#;

#[test]
fn parses_smollm2() {
    let c = ModelConfig::from_hf_json(SMOLLM2).unwrap();
    assert_eq!(c.architecture, "LlamaForCausalLM");
    assert_eq!(c.model_type, "llama");
    assert_eq!((c.num_hidden_layers, c.hidden_size, c.intermediate_size), (30, 576, 1536));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rope_scaling, None);
    assert!(c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(1), vec![2]));
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.extra.get("torch_dtype"), Some(&Value::from("bfloat16")));
    assert!(!c.extra.contains_key("hidden_size"), "consumed keys are not kept in extra");
    assert_eq!((c.num_kv_groups(), c.q_dim(), c.kv_dim()), (3, 576, 192));
}

#[test]
fn qwen2_has_qkv_bias_and_no_sliding_window_unless_enabled() {
    let c = ModelConfig::from_hf_json(QWEN25).unwrap();
    assert_eq!(c.architecture, "Qwen2ForCausalLM");
    assert!(c.attention_bias);
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.sliding_window, None);
    assert!(!c.tie_word_embeddings);
    let enabled = QWEN25.replace(r#""use_sliding_window": false"#, r#""use_sliding_window": true"#);
    assert_eq!(ModelConfig::from_hf_json(&enabled).unwrap().sliding_window, Some(32768));
}

#[test]
fn llama3_rope_scaling_and_eos_list() {
    let c = ModelConfig::from_hf_json(LLAMA32).unwrap();
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    let s = c.rope_scaling.unwrap();
    assert_eq!(s.rope_type, "llama3");
    assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor), (32.0, Some(1.0), Some(4.0)));
    assert_eq!(s.original_max_position_embeddings, Some(8192));
}

#[test]
fn older_type_key_and_default_rope() {
    let linear = SMOLLM2.replace(r#""rope_scaling": null"#, r#""rope_scaling": {"type": "linear", "factor": 2.0}"#);
    let s = ModelConfig::from_hf_json(&linear).unwrap().rope_scaling.unwrap();
    assert_eq!((s.rope_type.as_str(), s.factor), ("linear", 2.0));
    let default = SMOLLM2.replace(r#""rope_scaling": null"#, r#""rope_scaling": {"rope_type": "default"}"#);
    assert_eq!(ModelConfig::from_hf_json(&default).unwrap().rope_scaling, None);
}

#[test]
fn defaults_follow_transformers() {
    let minimal = r#"{"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "sliding_window": 4096}"#;
    let c = ModelConfig::from_hf_json(minimal).unwrap();
    assert_eq!(c.architecture, "MistralForCausalLM");
    assert_eq!((c.num_key_value_heads, c.head_dim), (32, 128));
    assert_eq!((c.rms_norm_eps, c.rope_theta, c.max_position_embeddings), (1e-6, 10000.0, 2048));
    assert_eq!(c.sliding_window, Some(4096));
    assert!(c.eos_token_ids.is_empty() && c.bos_token_id.is_none());
}

#[test]
fn errors_name_the_key() {
    let err = |json: &str| ModelConfig::from_hf_json(json).unwrap_err().to_string();
    assert!(err(&SMOLLM2.replace(r#""hidden_size": 576,"#, "")).contains("`hidden_size`"));
    assert!(err(&SMOLLM2.replace(r#""num_key_value_heads": 3"#, r#""num_key_value_heads": 4"#))
        .contains("`num_key_value_heads` (4) must divide num_attention_heads (9)"));
    assert!(err(&SMOLLM2.replace(r#""vocab_size": 49152"#, r#""vocab_size": "big""#))
        .contains("`vocab_size` must be a non-negative integer"));
    assert!(err(&SMOLLM2.replace(r#""num_hidden_layers": 30"#, r#""num_hidden_layers": 0"#))
        .contains("`num_hidden_layers` must be positive"));
    assert!(err(&SMOLLM2.replace(r#""eos_token_id": 2"#, r#""eos_token_id": 60000"#)).contains("`eos_token_id`"));
    assert!(err(&SMOLLM2.replace(r#""rms_norm_eps": 1e-05"#, r#""rms_norm_eps": -1"#)).contains("`rms_norm_eps`"));
    let no_llama3_keys = LLAMA32.replace(r#""low_freq_factor": 1.0,"#, "");
    assert!(err(&no_llama3_keys).contains("rope_scaling.low_freq_factor"));
    assert!(err(r#"{"model_type": "gpt9"}"#).contains("`architectures`"));
    assert!(err("[1, 2]").contains("JSON object"));
    assert!(err("{not json").contains("not valid JSON"));
    assert!(err(&SMOLLM2.replace(r#""num_attention_heads": 9"#, r#""num_attention_heads": 0"#))
        .contains("`num_attention_heads` must be positive"));
}

#[test]
fn serde_round_trip_through_json_and_toml() {
    let c = ModelConfig::from_hf_json(LLAMA32).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
    let toml_text = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<ModelConfig>(&toml_text).unwrap(), c);
}
