//! The tokenizer of an engine directory: `tokenizer.json` (+ `tokenizer_config.json`) copied
//! from an HF source, or a GGUF source's `TokenizerSpec` written as `tokenizer_spec.json`.

use crate::tokenizer::spec::{TokenType, TokenizerModel, TokenizerSpec};
use serde::{Deserialize, Serialize};

pub const SPEC_FILE: &str = "tokenizer_spec.json";
pub const HF_FILE: &str = "tokenizer.json";
pub const HF_CONFIG_FILE: &str = "tokenizer_config.json";

#[derive(Serialize, Deserialize)]
pub struct SpecRecord {
    model: String,
    tokens: Vec<String>,
    /// GGUF codes (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    token_types: Vec<i32>,
    scores: Vec<f32>,
    merges: Vec<String>,
    pre: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    unk_token_id: Option<u32>,
    pad_token_id: Option<u32>,
    add_bos_token: bool,
    add_eos_token: bool,
    chat_template: Option<String>,
}

fn type_code(t: TokenType) -> i32 {
    match t {
        TokenType::Normal => 1,
        TokenType::Unknown => 2,
        TokenType::Control => 3,
        TokenType::UserDefined => 4,
        TokenType::Unused => 5,
        TokenType::Byte => 6,
    }
}

impl From<&TokenizerSpec> for SpecRecord {
    fn from(s: &TokenizerSpec) -> Self {
        SpecRecord {
            model: match s.model {
                TokenizerModel::ByteLevelBpe => "byte_level_bpe".into(),
                TokenizerModel::SentencePieceBpe => "sentencepiece_bpe".into(),
            },
            tokens: s.tokens.clone(),
            token_types: s.token_types.iter().map(|t| type_code(*t)).collect(),
            scores: s.scores.clone(),
            merges: s.merges.clone(),
            pre: s.pre.clone(),
            bos_token_id: s.bos_token_id,
            eos_token_id: s.eos_token_id,
            eos_token_ids: s.eos_token_ids.clone(),
            unk_token_id: s.unk_token_id,
            pad_token_id: s.pad_token_id,
            add_bos_token: s.add_bos_token,
            add_eos_token: s.add_eos_token,
            chat_template: s.chat_template.clone(),
        }
    }
}

impl SpecRecord {
    pub fn into_spec(self) -> Result<TokenizerSpec, String> {
        let model = match self.model.as_str() {
            "byte_level_bpe" => TokenizerModel::ByteLevelBpe,
            "sentencepiece_bpe" => TokenizerModel::SentencePieceBpe,
            other => return Err(format!("unknown tokenizer model '{other}'")),
        };
        Ok(TokenizerSpec {
            model,
            tokens: self.tokens,
            token_types: self.token_types.into_iter().map(TokenType::from_gguf).collect(),
            scores: self.scores,
            merges: self.merges,
            pre: self.pre,
            bos_token_id: self.bos_token_id,
            eos_token_id: self.eos_token_id,
            eos_token_ids: self.eos_token_ids,
            unk_token_id: self.unk_token_id,
            pad_token_id: self.pad_token_id,
            add_bos_token: self.add_bos_token,
            add_eos_token: self.add_eos_token,
            chat_template: self.chat_template,
        })
    }
}
