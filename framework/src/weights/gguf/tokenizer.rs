//! The tokenizer spec carried in GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`)
//! as a source-neutral [`TokenizerSpec`].

use super::{GgufError, GgufMetadata};
use crate::tokenizer::spec::{TokenType, TokenizerModel, TokenizerSpec};

fn meta_err(key: &str, message: impl Into<String>) -> GgufError {
    GgufError::Metadata { key: key.to_string(), message: message.into() }
}

/// Builds the tokenizer spec, or `None` when the file has no `tokenizer.ggml.model`.
pub fn tokenizer_spec(meta: &GgufMetadata) -> Result<Option<TokenizerSpec>, GgufError> {
    let Some(model_name) = meta.str("tokenizer.ggml.model")? else {
        return Ok(None);
    };
    let model = match model_name {
        "gpt2" => TokenizerModel::ByteLevelBpe,
        "llama" => TokenizerModel::SentencePieceBpe,
        other => {
            return Err(meta_err(
                "tokenizer.ggml.model",
                format!("unsupported tokenizer model {other:?} (supported: \"gpt2\", \"llama\")"),
            ))
        }
    };
    let tokens = meta
        .str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| meta_err("tokenizer.ggml.tokens", "missing (required with tokenizer.ggml.model)"))?;
    if tokens.is_empty() {
        return Err(meta_err("tokenizer.ggml.tokens", "is empty"));
    }
    let n = tokens.len();
    let token_types: Vec<TokenType> = meta
        .i32_array("tokenizer.ggml.token_type")?
        .unwrap_or_default()
        .into_iter()
        .map(TokenType::from_gguf)
        .collect();
    let scores = meta.f32_array("tokenizer.ggml.scores")?.unwrap_or_default();
    for (key, len) in [("tokenizer.ggml.token_type", token_types.len()), ("tokenizer.ggml.scores", scores.len())] {
        if len != 0 && len != n {
            return Err(meta_err(key, format!("has {len} entries for {n} tokens")));
        }
    }
    let merges = meta.str_array("tokenizer.ggml.merges")?.unwrap_or_default();
    let pre = meta.str("tokenizer.ggml.pre")?.map(str::to_string);

    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match meta.u32(key)? {
            Some(id) if id as usize >= n => {
                Err(meta_err(key, format!("token id {id} is outside the vocabulary ({n})")))
            }
            other => Ok(other),
        }
    };
    let bos_token_id = id("tokenizer.ggml.bos_token_id")?;
    let eos_token_id = id("tokenizer.ggml.eos_token_id")?;
    let mut eos_token_ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(t) = id(key)? {
            if !eos_token_ids.contains(&t) {
                eos_token_ids.push(t);
            }
        }
    }
    // llama.cpp's defaults when the file does not say: SentencePiece adds BOS, byte-level
    // BPE only for the Llama 3 pre-tokenizer.
    let default_add_bos = match model {
        TokenizerModel::SentencePieceBpe => true,
        TokenizerModel::ByteLevelBpe => matches!(pre.as_deref(), Some("llama-bpe" | "llama3")),
    };
    Ok(Some(TokenizerSpec {
        model,
        tokens,
        token_types,
        scores,
        merges,
        pre,
        bos_token_id,
        eos_token_id,
        eos_token_ids,
        unk_token_id: id("tokenizer.ggml.unknown_token_id")?,
        pad_token_id: id("tokenizer.ggml.padding_token_id")?,
        add_bos_token: meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos),
        add_eos_token: meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        chat_template: meta.str("tokenizer.chat_template")?.map(str::to_string),
    }))
}
