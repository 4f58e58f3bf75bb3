//! The tokenizer: text ↔ token ids for byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM) and
//! SentencePiece-style BPE (Llama 2, Mistral), built from a source-neutral [`TokenizerSpec`]
//! (GGUF) or an HF `tokenizer.json`; plus incremental detokenization ([`stream`]) and chat
//! templates ([`chat`]).
//!
//! Encoding follows HF `tokenizers`: added tokens are matched verbatim first (even with
//! `add_special_tokens = false`, which only controls BOS/EOS), then each remaining piece is
//! normalized, pre-tokenized and merged by BPE. Chat prompts ([`chat_encode`]) can keep
//! control-token text typed inside a message as text.

mod added;
mod bpe;
mod bytelevel;
pub mod chat;
mod chat_encode;
mod decode;
mod from_spec;
mod hf;
mod hf_parts;
mod normalize;
pub(crate) mod pretok;
pub mod spec;
pub mod stream;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod hf_tests;

use std::borrow::Cow;
use std::ops::Range;
use std::path::PathBuf;

use added::{AddedToken, Matcher, Segment};
use bpe::{Bpe, Vocab};
use decode::DecodePlan;
use normalize::Normalizer;
use pretok::{Piece, PreTokenizer};

pub use chat::{ChatMessage, ChatTemplate};
pub use chat_encode::ContentSpecialTokens;
pub use spec::{TokenType, TokenizerModel, TokenizerSpec};
pub use stream::DecodeStream;

/// Everything that can go wrong building or running a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    #[error("unsupported tokenizer component: {0}")]
    Unsupported(String),
    #[error("tokenizer regex: {0}")]
    Regex(String),
    #[error("token id {id} is out of range for a vocabulary of {vocab_size} tokens")]
    UnknownId { id: u32, vocab_size: usize },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot parse {path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("chat template: {0}")]
    Template(String),
    #[error("the text is longer than {max_tokens} tokens")]
    TooLong { max_tokens: usize },
}

/// The parts a builder (GGUF spec or HF json) assembles into a [`Tokenizer`].
pub(crate) struct Parts {
    pub vocab: Vocab,
    pub bpe: Bpe,
    pub added: Vec<AddedToken>,
    pub normalizer: Option<Normalizer>,
    pub pre: Option<PreTokenizer>,
    /// Ids put before / after the text when `add_special_tokens` is true.
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
    pub decoder: DecodePlan,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub extra_eos: Vec<u32>,
    pub chat_template: Option<String>,
    pub clean_up_spaces: bool,
}

/// A ready tokenizer, `Send + Sync`: share one behind an `Arc` (`clone` copies the tables).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    bpe: Bpe,
    raw_added: Matcher,
    normalized_added: Matcher,
    special: Vec<bool>,
    normalizer: Option<Normalizer>,
    pre: Option<PreTokenizer>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    pub(crate) decoder: DecodePlan,
    bos: Option<u32>,
    eos: Option<u32>,
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
    /// The compiled template, or why it does not compile (reported when it is used).
    compiled_chat: Option<Result<std::sync::Arc<ChatTemplate>, String>>,
    pub(crate) clean_up_spaces: bool,
}

/// A literal range that covers any text.
static EVERYWHERE: Range<usize> = 0..usize::MAX;

/// Tokens that end a turn in common chat formats (llama.cpp's end-of-generation heuristic).
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
];

impl Tokenizer {
    /// Builds a tokenizer from a source-neutral spec (what a GGUF file describes).
    pub fn from_spec(spec: TokenizerSpec) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::assemble(from_spec::parts(spec)?)
    }

    /// Builds a tokenizer from an HF `tokenizer.json`, with `tokenizer_config.json` (for the
    /// chat template, BOS/EOS and `add_bos_token`) when given.
    pub fn from_hf_file(
        path: &std::path::Path,
        tokenizer_config_json: Option<&std::path::Path>,
    ) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::assemble(hf::parts_from_files(path, tokenizer_config_json)?)
    }

    /// Builds a tokenizer from the text of an HF `tokenizer.json` (and `tokenizer_config.json`).
    pub fn from_hf_json(
        tokenizer_json: &str,
        tokenizer_config_json: Option<&str>,
    ) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::assemble(hf::parts_from_str(tokenizer_json, tokenizer_config_json)?)
    }

    pub(crate) fn assemble(p: Parts) -> Result<Tokenizer, TokenizerError> {
        let n = p.vocab.tokens.len();
        let check = |what: &str, id: u32| -> Result<(), TokenizerError> {
            if (id as usize) < n {
                Ok(())
            } else {
                Err(TokenizerError::Invalid(format!("{what} id {id} is outside the vocabulary of {n} tokens")))
            }
        };
        let mut special = vec![false; n];
        for t in &p.added {
            check(&format!("added token {:?}", t.content), t.id)?;
            special[t.id as usize] |= t.special;
        }
        for &id in p.prefix.iter().chain(&p.suffix).chain(&p.extra_eos).chain(p.bos.iter()).chain(p.eos.iter()) {
            check("special token", id)?;
        }
        let mut eos_ids: Vec<u32> = p.eos.into_iter().chain(p.extra_eos.iter().copied()).collect();
        for name in END_OF_TURN_TOKENS {
            if let Some(id) = p.vocab.id(name) {
                if special[id as usize] {
                    eos_ids.push(id);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        eos_ids.retain(|id| seen.insert(*id));
        let (normalized, raw): (Vec<AddedToken>, Vec<AddedToken>) =
            p.added.into_iter().partition(|t| t.normalized && p.normalizer.is_some());
        Ok(Tokenizer {
            vocab: p.vocab,
            bpe: p.bpe,
            raw_added: Matcher::new(raw),
            normalized_added: Matcher::new(normalized),
            special,
            normalizer: p.normalizer,
            pre: p.pre,
            prefix: p.prefix,
            suffix: p.suffix,
            decoder: p.decoder,
            bos: p.bos,
            eos: p.eos,
            eos_ids,
            compiled_chat: p
                .chat_template
                .as_deref()
                .map(|t| ChatTemplate::new(t).map(std::sync::Arc::new).map_err(template_message)),
            chat_template: p.chat_template,
            clean_up_spaces: p.clean_up_spaces,
        })
    }

    /// Text → ids. Added/special tokens in the text are always recognised; `add_special_tokens`
    /// adds the model's BOS/EOS around the result as its configuration says.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_at_most(text, add_special_tokens, usize::MAX)
    }

    /// [`Tokenizer::encode`], giving up with `TooLong` as soon as the ids outgrow `max_tokens`
    /// (so an absurdly long text costs little more than `max_tokens` worth of work).
    pub fn encode_at_most(
        &self,
        text: &str,
        add_special_tokens: bool,
        max_tokens: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with_literals(text, add_special_tokens, &[], max_tokens)
    }

    /// Encodes with special tokens matched only outside `literal` (sorted byte ranges of
    /// `text`); see [`Tokenizer::encode_at_most`] for `max_tokens`.
    pub(crate) fn encode_with_literals(
        &self,
        text: &str,
        add_special_tokens: bool,
        literal: &[Range<usize>],
        max_tokens: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::with_capacity((text.len() / 3 + 2).min(max_tokens.saturating_add(1)));
        if add_special_tokens {
            ids.extend_from_slice(&self.prefix);
        }
        let too_long =
            |ids: &Vec<u32>| if ids.len() > max_tokens { Err(TokenizerError::TooLong { max_tokens }) } else { Ok(()) };
        for seg in self.raw_added.split_with_literals(text, 0, literal) {
            match seg {
                Segment::Token(id) => ids.push(id),
                Segment::Text { text, start } => {
                    let normalized = match &self.normalizer {
                        Some(n) => Cow::Owned(n.apply(text)?),
                        None => Cow::Borrowed(text),
                    };
                    // Normalized text has no offsets into the input: a piece that touches a
                    // literal range matches no special token at all.
                    let touches = literal.iter().any(|r| start < r.end && start + text.len() > r.start);
                    let inner: &[Range<usize>] = if touches { std::slice::from_ref(&EVERYWHERE) } else { &[] };
                    for seg in self.normalized_added.split_with_literals(&normalized, start, inner) {
                        match seg {
                            Segment::Token(id) => ids.push(id),
                            Segment::Text { text, start } => {
                                self.encode_piece(text, start == 0, &mut ids, max_tokens)?
                            }
                        }
                    }
                }
            }
            too_long(&ids)?;
        }
        if add_special_tokens {
            ids.extend_from_slice(&self.suffix);
        }
        too_long(&ids)?;
        Ok(ids)
    }

    fn encode_piece(
        &self,
        text: &str,
        at_origin: bool,
        ids: &mut Vec<u32>,
        max_tokens: usize,
    ) -> Result<(), TokenizerError> {
        match &self.pre {
            None => self.bpe.tokenize(&self.vocab, text, ids),
            Some(pre) => {
                for piece in pre.apply(vec![Piece { text: text.to_owned(), at_origin }])? {
                    self.bpe.tokenize(&self.vocab, &piece.text, ids);
                    if ids.len() > max_tokens {
                        return Err(TokenizerError::TooLong { max_tokens });
                    }
                }
            }
        }
        Ok(())
    }

    /// Ids → text, as HF's `decode`. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let mut pieces = Vec::with_capacity(ids.len());
        for &id in ids {
            let token = self.token_str(id)?;
            if skip_special_tokens && self.is_special(id) {
                continue;
            }
            pieces.push(self.decoder.piece(id, token, pieces.is_empty()));
        }
        let text = self.decoder.finish_text(pieces);
        Ok(if self.clean_up_spaces { clean_up_tokenization(&text) } else { text })
    }

    pub(crate) fn token_str(&self, id: u32) -> Result<&str, TokenizerError> {
        self.vocab.tokens.get(id as usize).ok_or(TokenizerError::UnknownId { id, vocab_size: self.vocab.tokens.len() })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.tokens.get(id as usize)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// The primary EOS id (what `eos_token` in a chat template stands for).
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    /// Every id that ends generation: EOS, the configured extras, and end-of-turn control tokens.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_ids.clone()
    }

    /// Whether `id` is a special (control) token, skipped by `decode(.., true)`.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether `encode(.., true)` puts a BOS token first.
    pub fn adds_bos_token(&self) -> bool {
        self.bos.is_some_and(|b| self.prefix.first() == Some(&b))
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders `messages` with the model's chat template (BOS/EOS strings from the vocabulary).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = match &self.compiled_chat {
            None => return Err(TokenizerError::Template("the model has no chat template".into())),
            Some(Err(e)) => return Err(TokenizerError::Template(e.clone())),
            Some(Ok(t)) => t,
        };
        let bos = self.bos.and_then(|id| self.id_to_token(id)).unwrap_or("");
        let eos = self.eos.and_then(|id| self.id_to_token(id)).unwrap_or("");
        template.render(messages, add_generation_prompt, bos, eos)
    }

    /// A fresh incremental detokenizer; pass this tokenizer to each of its calls.
    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream {
        DecodeStream::new(self, skip_special_tokens)
    }
}

fn template_message(e: TokenizerError) -> String {
    match e {
        TokenizerError::Template(m) => m,
        other => other.to_string(),
    }
}

/// HF's `clean_up_tokenization`: removes spaces before punctuation and English contractions.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
