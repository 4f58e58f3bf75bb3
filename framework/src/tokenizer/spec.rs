//! The source-neutral description of a tokenizer: what a GGUF file's `tokenizer.ggml.*`
//! metadata or an HF tokenizer.json says, before a [`super::Tokenizer`] is built from it.

/// Which tokenization algorithm the vocabulary is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerModel {
    /// Byte-level BPE (GPT-2 style: GPT-2, Llama 3, Qwen2, SmolLM). GGUF `tokenizer.ggml.model = "gpt2"`.
    ByteLevelBpe,
    /// SentencePiece-style BPE with `▁` for spaces and byte fallback (Llama 2, Mistral).
    /// GGUF `tokenizer.ggml.model = "llama"`.
    SentencePieceBpe,
}

/// The kind of a vocabulary entry (GGUF `tokenizer.ggml.token_type` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    /// From GGUF's integer code (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub fn from_gguf(code: i32) -> TokenType {
        match code {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// Everything needed to build a tokenizer.
#[derive(Clone, Debug)]
pub struct TokenizerSpec {
    pub model: TokenizerModel,
    /// Token strings by id (byte-level BPE: in GPT-2's byte-to-unicode alphabet).
    pub tokens: Vec<String>,
    /// Per-token types (same length as `tokens`, or empty = all normal).
    pub token_types: Vec<TokenType>,
    /// SentencePiece scores (empty for byte-level BPE).
    pub scores: Vec<f32>,
    /// BPE merges as "left right", highest priority first.
    pub merges: Vec<String>,
    /// The pre-tokenizer name (GGUF `tokenizer.ggml.pre`, e.g. "smollm", "llama-bpe", "qwen2"), if any.
    pub pre: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Extra ids that end generation (e.g. `<|eot_id|>`, `<|im_end|>`).
    pub eos_token_ids: Vec<u32>,
    pub unk_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub add_bos_token: bool,
    pub add_eos_token: bool,
    /// The Jinja chat template, if the source carries one.
    pub chat_template: Option<String>,
}
