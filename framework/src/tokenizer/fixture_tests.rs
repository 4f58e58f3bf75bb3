//! Parity tests against HF transformers on the real SmolLM2 GGUF: the tokenizer built from
//! the GGUF's `TokenizerSpec` must give the fixture's ids, decodes and chat renderings
//! (tests/fixtures/tokenizer/smollm2.json, made by scripts/reference/make_tokenizer_fixtures.py).
//! Skipped, saying why, when the model or the fixture is absent.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use super::{ChatMessage, Tokenizer, TokenizerSpec};
use crate::weights::gguf::{tokenizer::tokenizer_spec, GgufFile};

fn model_path() -> PathBuf {
    let cache = std::env::var_os("RTLLM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("rtllm"));
    cache.join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer/smollm2.json")
}

struct Loaded {
    tok: Tokenizer,
    fixture: Value,
}

/// The GGUF's tokenizer spec and the fixture, or `None` (with the reason printed).
pub(super) fn spec_and_fixture() -> Option<(TokenizerSpec, Value)> {
    let (model, fixture) = (model_path(), fixture_path());
    for p in [&model, &fixture] {
        if !p.exists() {
            eprintln!("skipping: {} missing; run scripts/fetch-default-model.sh", p.display());
            return None;
        }
    }
    let bytes = std::fs::read(&model).expect("read the GGUF");
    let file = GgufFile::parse(&bytes).expect("parse the GGUF");
    let spec = tokenizer_spec(&file.metadata).expect("tokenizer metadata").expect("a tokenizer in the GGUF");
    let fixture =
        serde_json::from_str(&std::fs::read_to_string(&fixture).expect("read the fixture")).expect("parse the fixture");
    Some((spec, fixture))
}

/// The tokenizer built from the GGUF, and the fixture; loaded once.
fn loaded() -> Option<&'static Loaded> {
    static LOADED: OnceLock<Option<Loaded>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let (spec, fixture) = spec_and_fixture()?;
            Some(Loaded { tok: Tokenizer::from_spec(spec).expect("build the tokenizer"), fixture })
        })
        .as_ref()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("an id list").iter().map(|i| i.as_u64().expect("an id") as u32).collect()
}

fn streamed(tok: &Tokenizer, ids: &[u32], skip: bool) -> String {
    let mut s = tok.decode_stream(skip);
    let mut out = String::new();
    for &id in ids {
        out.extend(s.step(tok, id).expect("known id"));
    }
    out.extend(s.finish(tok));
    out
}

#[test]
fn encode_and_decode_match_hf() {
    let Some(l) = loaded() else { return };
    let cases = l.fixture["cases"].as_array().expect("cases");
    assert!(cases.len() > 50);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want = ids_of(&case["ids"]);
        let got = l.tok.encode(text, false).expect("encode");
        if got != want {
            failures.push(format!("encode {text:?}: got {got:?}, HF {want:?}"));
            continue;
        }
        let pieces: Vec<&str> = want.iter().map(|&i| l.tok.id_to_token(i).expect("id in vocab")).collect();
        let want_pieces: Vec<&str> =
            case["pieces"].as_array().expect("pieces").iter().filter_map(Value::as_str).collect();
        assert_eq!(pieces, want_pieces, "pieces of {text:?}");
        let decoded = case["decoded"].as_str().expect("decoded");
        assert_eq!(l.tok.decode(&want, false).expect("decode"), decoded, "decode of {text:?}");
        assert_eq!(streamed(&l.tok, &want, false), decoded, "streamed decode of {text:?}");
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    for case in l.fixture["with_special"].as_array().expect("with_special") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(l.tok.encode(text, true).expect("encode"), ids_of(&case["ids"]), "with special tokens: {text:?}");
    }
}

#[test]
fn special_tokens_match_hf() {
    let Some(l) = loaded() else { return };
    let s = &l.fixture["special"];
    assert_eq!(l.tok.vocab_size() as u64, s["vocab_size"].as_u64().expect("vocab_size"));
    assert_eq!(l.tok.bos_token_id().map(u64::from), s["bos_token_id"].as_u64());
    assert_eq!(l.tok.eos_token_id().map(u64::from), s["eos_token_id"].as_u64());
    assert_eq!(l.tok.eos_token_ids(), &[2, 0], "<|im_end|> and <|endoftext|> end generation");
    assert!(!l.tok.adds_bos_token());
    for (name, id) in s["added_tokens"].as_object().expect("added_tokens") {
        let token = id.as_str().expect("token");
        let id: u32 = name.parse().expect("id");
        assert_eq!(l.tok.token_to_id(token), Some(id));
        assert!(l.tok.is_special(id), "{token} is special");
    }
    assert!(!l.tok.is_special(19556));
    // skip_special_tokens drops them.
    let ids = l.tok.encode("<|im_start|>user\nhi<|im_end|>", false).expect("encode");
    assert_eq!(l.tok.decode(&ids, true).expect("decode"), "user\nhi");
    assert_eq!(streamed(&l.tok, &ids, true), "user\nhi");
    assert!(l.tok.decode(&[49_152], false).is_err());
}

#[test]
fn chat_renderings_match_hf() {
    let Some(l) = loaded() else { return };
    assert_eq!(l.tok.chat_template(), l.fixture["chat_template"].as_str());
    for case in l.fixture["chat"].as_array().expect("chat") {
        let name = case["name"].as_str().expect("name");
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).expect("messages");
        let add = case["add_generation_prompt"].as_bool().expect("add_generation_prompt");
        let rendered = l.tok.apply_chat_template(&messages, add).expect("render");
        assert_eq!(rendered, case["rendered"].as_str().expect("rendered"), "chat case {name} ({add})");
        assert_eq!(l.tok.encode(&rendered, false).expect("encode"), ids_of(&case["ids"]), "chat ids {name}");
    }
}

#[test]
fn long_text_round_trips() {
    let Some(l) = loaded() else { return };
    let mut text = String::new();
    for case in l.fixture["cases"].as_array().expect("cases") {
        text.push_str(case["text"].as_str().expect("text"));
        text.push(' ');
    }
    let text = text.repeat(20);
    let ids = l.tok.encode(&text, false).expect("encode");
    assert_eq!(l.tok.decode(&ids, false).expect("decode"), text);
    assert_eq!(streamed(&l.tok, &ids, false), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random ids from the real vocabulary (many cut UTF-8 characters apart, some special):
    /// the streamed deltas join to exactly what `decode` gives.
    #[test]
    fn stream_matches_decode_on_random_ids(
        ids in proptest::collection::vec(prop_oneof![0u32..49_152, 100u32..300, 0u32..17], 0..48),
        skip in any::<bool>(),
    ) {
        let Some(l) = loaded() else { return Ok(()) };
        prop_assert_eq!(streamed(&l.tok, &ids, skip), l.tok.decode(&ids, skip).unwrap());
    }
}
