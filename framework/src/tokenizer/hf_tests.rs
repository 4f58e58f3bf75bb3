//! Tests of the HF `tokenizer.json` path: SentencePiece-style (Llama 2), Llama-3-style
//! (Split + ByteLevel + TemplateProcessing), unsupported components, and SmolLM2's real
//! vocabulary written out as a tokenizer.json (checked against the HF fixture when present).

use serde_json::{json, Value};

use super::{ChatMessage, Tokenizer, TokenizerError};

fn names(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| t.id_to_token(i).unwrap().to_string()).collect()
}

fn vocab_json(tokens: &[&str]) -> Value {
    Value::Object(tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect())
}

/// A Llama-2-style tokenizer.json: legacy normalizer, merges, byte fallback, TemplateProcessing.
fn llama2_json() -> Value {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let pieces = [
        "▁", "H", "e", "l", "o", "w", "r", "d", "!", "ll", "▁H", "llo", "▁He", "▁Hello", "▁w", "or", "▁wor", "ld",
        "▁world",
    ];
    tokens.extend(pieces.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    json!({
        "added_tokens": [
            {"id": 0, "content": "<unk>", "special": true, "normalized": false},
            {"id": 1, "content": "<s>", "special": true, "normalized": false},
            {"id": 2, "content": "</s>", "special": true, "normalized": false}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
            "vocab": vocab_json(&refs),
            "merges": ["l l", "▁ H", ["ll", "o"], "▁H e", "▁He llo", "▁ w", "o r", "▁w or", "l d", "▁wor ld"]}
    })
}

#[test]
fn llama2_style_tokenizer_json() {
    let cfg = json!({"chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}",
        "bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true});
    let tok = Tokenizer::from_hf_json(&llama2_json().to_string(), Some(&cfg.to_string())).unwrap();
    let ids = tok.encode("Hello world!", true).unwrap();
    assert_eq!(names(&tok, &ids), ["<s>", "▁Hello", "▁world", "!"]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello world!");
    let ids = tok.encode("Hé</s>world", false).unwrap();
    assert_eq!(names(&tok, &ids), ["▁H", "<0xC3>", "<0xA9>", "</s>", "▁world"]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "Hé</s> world");
    let mut s = tok.decode_stream(false);
    let deltas: Vec<Option<String>> = ids.iter().map(|&i| s.step(&tok, i).unwrap()).collect();
    assert_eq!(deltas, [Some("H".into()), None, None, Some("é</s>".into()), Some(" world".into())]);
    assert_eq!((tok.bos_token_id(), tok.eos_token_id(), tok.adds_bos_token()), (Some(1), Some(2), true));
    let chat = tok.apply_chat_template(&[ChatMessage::new("user", "hi")], true).unwrap();
    assert_eq!(chat, "<s>[user] hi</s>");
}

#[test]
fn llama3_style_split_and_template() {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| super::bytelevel::byte_char(b).to_string()).collect();
    tokens.extend(["ĠI", "12", "123", "<|begin_of_text|>", "<|eot_id|>"].map(String::from));
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let j = json!({
        "added_tokens": [
            {"id": 259, "content": "<|begin_of_text|>", "special": true},
            {"id": 260, "content": "<|eot_id|>", "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": super::pretok::LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "trim_offsets": false},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [259]}}}
        ]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "ignore_merges": true, "vocab": vocab_json(&refs), "merges": ["Ġ I", "1 2", "12 3"]}
    });
    let tok = Tokenizer::from_hf_json(&j.to_string(), None).unwrap();
    let ids = tok.encode("12345 I<|eot_id|>", true).unwrap();
    assert_eq!(names(&tok, &ids), ["<|begin_of_text|>", "123", "4", "5", "ĠI", "<|eot_id|>"]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "12345 I");
    assert_eq!(tok.eos_token_ids(), [260]);
}

#[test]
fn tokenizer_is_send_sync_and_bad_templates_error_on_use() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    let cfg = json!({"chat_template": "{% if %}"});
    let tok = Tokenizer::from_hf_json(&llama2_json().to_string(), Some(&cfg.to_string())).unwrap();
    let err = tok.apply_chat_template(&[ChatMessage::new("user", "hi")], false).unwrap_err().to_string();
    assert!(err.starts_with("chat template: ") && !err.contains("chat template: chat template"), "{err}");
    let tok = Tokenizer::from_hf_json(&llama2_json().to_string(), None).unwrap();
    assert!(tok.apply_chat_template(&[], false).unwrap_err().to_string().contains("no chat template"));
}

#[test]
fn unsupported_components_are_named() {
    let cases = [
        ("normalizer", json!({"type": "BertNormalizer"}), "normalizer \"BertNormalizer\""),
        ("pre_tokenizer", json!({"type": "Whitespace"}), "pre_tokenizer \"Whitespace\""),
        ("decoder", json!({"type": "WordPiece"}), "decoder \"WordPiece\""),
        ("post_processor", json!({"type": "RobertaProcessing"}), "post_processor \"RobertaProcessing\""),
    ];
    for (key, value, want) in cases {
        let mut j = llama2_json();
        j[key] = value;
        let err = Tokenizer::from_hf_json(&j.to_string(), None).unwrap_err();
        assert!(matches!(err, TokenizerError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    }
    let mut j = llama2_json();
    j["model"]["type"] = json!("Unigram");
    assert!(Tokenizer::from_hf_json(&j.to_string(), None).unwrap_err().to_string().contains("Unigram"));
    assert!(Tokenizer::from_hf_json("{not json", None).is_err());
    let err = Tokenizer::from_hf_file(std::path::Path::new("/nonexistent/tokenizer.json"), None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tokenizer.json"), "{err}");
}

/// SmolLM2's GGUF vocabulary written as the tokenizer.json HF would use, read back through
/// `from_hf_file`, must match the fixture too.
#[test]
fn smollm2_as_tokenizer_json_matches_fixture() {
    let Some((spec, fixture)) = super::fixture_tests::spec_and_fixture() else {
        return;
    };
    let added: Vec<Value> =
        (0..17).map(|i| json!({"id": i, "content": spec.tokens[i], "special": true, "normalized": false})).collect();
    let vocab: serde_json::Map<String, Value> =
        spec.tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let j = json!({
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "trim_offsets": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "vocab": vocab, "merges": spec.merges}
    });
    let cfg = json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "add_bos_token": false, "chat_template": spec.chat_template});
    let dir = tempfile::tempdir().unwrap();
    let (jp, cp) = (dir.path().join("tokenizer.json"), dir.path().join("tokenizer_config.json"));
    std::fs::write(&jp, j.to_string()).unwrap();
    std::fs::write(&cp, cfg.to_string()).unwrap();
    let tok = Tokenizer::from_hf_file(&jp, Some(&cp)).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), case["decoded"].as_str().unwrap());
    }
    assert_eq!(tok.eos_token_ids(), [2, 0]);
    assert_eq!(tok.bos_token_id(), Some(1));
}
