//! Builds tokenizer parts from an HF `tokenizer.json` (BPE model, added tokens and the
//! pipeline components) plus `tokenizer_config.json` (chat template, BOS/EOS, add_bos_token,
//! clean_up_tokenization_spaces).

use std::path::Path;

use serde_json::Value;

use super::added::AddedToken;
use super::bpe::{Bpe, BpeOptions, Vocab};
use super::decode::DecodePlan;
use super::hf_parts;
use super::{Parts, TokenizerError};

pub(crate) fn parts_from_files(json: &Path, config: Option<&Path>) -> Result<Parts, TokenizerError> {
    let read = |p: &Path| -> Result<Value, TokenizerError> {
        let text = crate::input_file::read_regular_string(p, crate::input_file::TEXT_LIMIT)
            .map_err(|source| TokenizerError::Io { path: p.to_owned(), source })?;
        serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: p.to_owned(), source })
    };
    let config = config.map(read).transpose()?;
    parts(&read(json)?, config.as_ref())
}

pub(crate) fn parts_from_str(json: &str, config: Option<&str>) -> Result<Parts, TokenizerError> {
    let parse = |s: &str, name: &str| -> Result<Value, TokenizerError> {
        serde_json::from_str(s).map_err(|source| TokenizerError::Json { path: name.into(), source })
    };
    let config = config.map(|c| parse(c, "tokenizer_config.json")).transpose()?;
    parts(&parse(json, "tokenizer.json")?, config.as_ref())
}

fn invalid(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid(msg.into())
}

fn null() -> &'static Value {
    &Value::Null
}

fn parts(json: &Value, config: Option<&Value>) -> Result<Parts, TokenizerError> {
    let model = json.get("model").ok_or_else(|| invalid("tokenizer.json has no \"model\""))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if model_type != "BPE" {
        return Err(TokenizerError::Unsupported(format!("model \"{model_type}\" (only BPE is supported)")));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(s) = model.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            return Err(TokenizerError::Unsupported(format!("BPE {key} {s:?}")));
        }
    }
    if let Some(d) = model.get("dropout").and_then(Value::as_f64).filter(|d| *d > 0.0) {
        return Err(TokenizerError::Unsupported(format!("BPE dropout {d}")));
    }

    // Vocabulary: the model's, extended by added tokens with ids past it.
    let vocab_map = model.get("vocab").and_then(Value::as_object).ok_or_else(|| invalid("BPE model has no vocab"))?;
    let mut by_id: Vec<Option<String>> = Vec::new();
    let mut place = |token: &str, id: u64| -> Result<(), TokenizerError> {
        let id =
            usize::try_from(id).ok().filter(|&i| i < (1 << 31)).ok_or_else(|| invalid(format!("token id {id}")))?;
        if by_id.len() <= id {
            by_id.resize(id + 1, None);
        }
        if by_id[id].is_none() {
            by_id[id] = Some(token.to_owned());
        }
        Ok(())
    };
    for (token, id) in vocab_map {
        place(token, id.as_u64().ok_or_else(|| invalid(format!("vocab entry {token:?} has no integer id")))?)?;
    }
    let mut added = Vec::new();
    for t in json.get("added_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let content = t.get("content").and_then(Value::as_str).ok_or_else(|| invalid(format!("added token {t}")))?;
        let id =
            t.get("id").and_then(Value::as_u64).ok_or_else(|| invalid(format!("added token {content:?} has no id")))?;
        place(content, id)?;
        let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
        added.push(AddedToken {
            content: content.to_owned(),
            id: id as u32,
            special: flag("special"),
            lstrip: flag("lstrip"),
            rstrip: flag("rstrip"),
            single_word: flag("single_word"),
            normalized: t.get("normalized").and_then(Value::as_bool).unwrap_or(!flag("special")),
        });
    }
    let tokens = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| invalid(format!("no token has id {i} (ids must be contiguous)"))))
        .collect::<Result<Vec<_>, _>>()?;
    let vocab = Vocab::new(tokens)?;

    let merges = parse_merges(model.get("merges").unwrap_or(null()))?;
    let unk_id = match model.get("unk_token").and_then(Value::as_str) {
        Some(u) => Some(vocab.id(u).ok_or_else(|| invalid(format!("unk_token {u:?} is not in the vocabulary")))?),
        None => None,
    };
    let opts = BpeOptions {
        byte_fallback: model.get("byte_fallback").and_then(Value::as_bool).unwrap_or(false),
        unk_id,
        fuse_unk: model.get("fuse_unk").and_then(Value::as_bool).unwrap_or(false),
        ignore_merges: model.get("ignore_merges").and_then(Value::as_bool).unwrap_or(false),
    };
    let bpe = Bpe::from_merges(&vocab, &merges, opts)?;

    let normalizer = hf_parts::normalizer(json.get("normalizer").unwrap_or(null()))?;
    let pre = hf_parts::pre_tokenizer(json.get("pre_tokenizer").unwrap_or(null()))?;
    let decoder = DecodePlan::new(hf_parts::decoder(json.get("decoder").unwrap_or(null()))?, &vocab.tokens)?;
    let template = hf_parts::post_processor(json.get("post_processor").unwrap_or(null()))?;

    // tokenizer_config.json: special token names, BOS/EOS flags, chat template.
    let cfg = config.unwrap_or(null());
    let token_of = |key: &str| -> Result<Option<u32>, TokenizerError> {
        let name = match cfg.get(key) {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or(""),
            _ => return Ok(None),
        };
        vocab
            .id(name)
            .map(Some)
            .ok_or_else(|| invalid(format!("tokenizer_config {key} {name:?} is not in the vocabulary")))
    };
    let bos = token_of("bos_token")?;
    let eos = token_of("eos_token")?;
    // transformers registers the configured special tokens as special added tokens.
    for id in [bos, eos, token_of("unk_token")?, token_of("pad_token")?].into_iter().flatten() {
        if !added.iter().any(|t| t.id == id && t.special) {
            added.push(AddedToken::plain(vocab.tokens[id as usize].to_string(), id, true));
        }
    }
    let (prefix, suffix) = match template {
        Some(t) => t,
        None => {
            let need = |flag: &str, id: Option<u32>| -> Result<Vec<u32>, TokenizerError> {
                if !cfg.get(flag).and_then(Value::as_bool).unwrap_or(false) {
                    return Ok(vec![]);
                }
                id.map(|i| vec![i]).ok_or_else(|| invalid(format!("{flag} is set but the token is not configured")))
            };
            (need("add_bos_token", bos)?, need("add_eos_token", eos)?)
        }
    };
    Ok(Parts {
        vocab,
        bpe,
        added,
        normalizer,
        pre,
        prefix,
        suffix,
        decoder,
        bos,
        eos,
        extra_eos: vec![],
        chat_template: chat_template(cfg)?,
        clean_up_spaces: cfg.get("clean_up_tokenization_spaces").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Merges as `"a b"` strings or `["a", "b"]` pairs.
fn parse_merges(v: &Value) -> Result<Vec<(String, String)>, TokenizerError> {
    let Some(list) = v.as_array() else {
        return if v.is_null() { Ok(vec![]) } else { Err(invalid("BPE merges is not a list")) };
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let pair = match m {
                Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())),
                Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                    (Some(a), Some(b)) => Some((a.to_owned(), b.to_owned())),
                    _ => None,
                },
                _ => None,
            };
            pair.ok_or_else(|| invalid(format!("merge #{i} {m} is neither \"a b\" nor [a, b]")))
        })
        .collect()
}

/// `chat_template` as a string, or a list of named templates (the "default" one).
fn chat_template(cfg: &Value) -> Result<Option<String>, TokenizerError> {
    match cfg.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let named = |n: &str| {
                list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(n))?.get("template")?.as_str()
            };
            Ok(named("default").map(str::to_owned))
        }
        Some(other) => Err(invalid(format!("chat_template is neither a string nor a list: {other}"))),
    }
}
