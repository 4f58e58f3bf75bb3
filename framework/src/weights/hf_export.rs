//! The HF files of a model that came without them (a GGUF file): `config.json` from the
//! `ModelConfig`, `generation_config.json` from its BOS/EOS ids, and `tokenizer.json` +
//! `tokenizer_config.json` from the GGUF tokenizer spec, in the layout transformers' own GGUF
//! conversion writes (byte-level BPE: vocab, merges, the pre-tokenizer llama.cpp uses for
//! `tokenizer.ggml.pre`, special tokens as added tokens, BOS through a template when added).
//! SentencePiece-style GGUF vocabularies are refused: their merges are not in the file.

use crate::tokenizer::pretok::{gguf_pre, GgufPre};
use crate::tokenizer::spec::{TokenType, TokenizerModel, TokenizerSpec};
use rtllm_models::ModelConfig;
use serde_json::{json, Map, Value};

/// `config.json` for `config` with weights of `torch_dtype` ("bfloat16", "float32", ...).
pub fn config_json(config: &ModelConfig, torch_dtype: &str) -> Value {
    let c = config;
    let mut v = json!({
        "architectures": [c.architecture],
        "model_type": c.model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling.as_ref().map(rope_scaling_json),
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": c.attention_bias,
        "mlp_bias": c.mlp_bias,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos_value(&c.eos_token_ids),
        "torch_dtype": torch_dtype,
        "use_cache": true,
    });
    if c.model_type == "qwen2" {
        v["use_sliding_window"] = Value::Bool(c.sliding_window.is_some());
        v["sliding_window"] = json!(c.sliding_window);
    }
    v
}

fn rope_scaling_json(s: &rtllm_models::RopeScaling) -> Value {
    let mut v = json!({"rope_type": s.rope_type, "factor": s.factor});
    let optional = [
        ("low_freq_factor", s.low_freq_factor.map(Value::from)),
        ("high_freq_factor", s.high_freq_factor.map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            v[key] = value;
        }
    }
    if let Some(n) = s.original_max_position_embeddings {
        v["original_max_position_embeddings"] = json!(n);
    }
    for (k, x) in &s.extra {
        v[k] = x.clone();
    }
    v
}

/// One id as a number, several as a list (as HF configs write `eos_token_id`).
fn eos_value(ids: &[u32]) -> Value {
    match ids {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}

/// `generation_config.json`: the config's BOS and EOS ids.
pub fn generation_config_json(config: &ModelConfig) -> Value {
    json!({
        "_from_model_config": true,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos_value(&config.eos_token_ids),
    })
}

/// `tokenizer.json` and `tokenizer_config.json` for a byte-level BPE spec.
pub fn tokenizer_files(spec: &TokenizerSpec, model_max_length: usize) -> Result<(Value, Value), String> {
    if spec.model != TokenizerModel::ByteLevelBpe {
        return Err(
            "the GGUF tokenizer is SentencePiece-style (tokenizer.ggml.model = \"llama\"), whose merges a GGUF \
             file does not carry; convert the original HF directory instead"
                .into(),
        );
    }
    let pre = gguf_pre(spec.pre.as_deref()).map_err(|e| e.to_string())?;
    let name = |id: Option<u32>| id.and_then(|i| spec.tokens.get(i as usize)).cloned();
    let special = |i: usize| matches!(spec.token_types.get(i), Some(TokenType::Control | TokenType::UserDefined));
    let added: Vec<Value> = (0..spec.tokens.len())
        .filter(|&i| special(i))
        .map(|i| {
            json!({"id": i, "content": spec.tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": spec.token_types[i] == TokenType::Control})
        })
        .collect();
    let vocab: Map<String, Value> = spec.tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match pre {
        GgufPre::ByteLevel => byte_level(true),
        GgufPre::DigitsThenByteLevel => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        GgufPre::Split(pattern) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            byte_level(false)]}),
    };
    let bos = name(spec.bos_token_id).filter(|_| spec.add_bos_token);
    let post_processor = match (&bos, spec.bos_token_id) {
        (Some(bos), Some(id)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos.as_str(): {"id": bos, "ids": [id], "tokens": [bos]}},
        }),
        _ => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": name(spec.unk_token_id), "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": matches!(pre, GgufPre::Split(_)), "vocab": vocab, "merges": spec.merges},
    });
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(spec.bos_token_id),
        "eos_token": name(spec.eos_token_id),
        "unk_token": name(spec.unk_token_id),
        "pad_token": name(spec.pad_token_id),
        "add_bos_token": spec.add_bos_token,
        "add_eos_token": spec.add_eos_token,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
        "chat_template": spec.chat_template,
    });
    Ok((tokenizer, config))
}
