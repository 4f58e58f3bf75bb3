//! Log-probabilities in OpenAI's two shapes: the legacy completions form (tokens,
//! token_logprobs, top_logprobs maps, text_offset) and the chat form (content entries with
//! bytes and top alternatives). Token strings are each id decoded on its own.

use super::protocol::{ChatLogprobs, CompletionLogprobs, TokenLogprobOut, TopLogprob};
use crate::api::TokenLogprob;
use crate::tokenizer::Tokenizer;

fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false).unwrap_or_default()
}

/// The legacy form for `lps`; `offset` is the text offset (in characters) of the first token
/// and is advanced past the last.
pub fn completion_logprobs(tokenizer: &Tokenizer, lps: &[TokenLogprob], offset: &mut usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for lp in lps {
        let text = token_text(tokenizer, lp.token_id);
        out.text_offset.push(*offset);
        *offset += text.chars().count();
        out.token_logprobs.push(lp.logprob);
        let mut top = serde_json::Map::new();
        for &(id, logprob) in &lp.top_logprobs {
            top.insert(token_text(tokenizer, id), serde_json::json!(logprob));
        }
        out.top_logprobs.push(top);
        out.tokens.push(text);
    }
    out
}

/// The chat form for `lps`.
pub fn chat_logprobs(tokenizer: &Tokenizer, lps: &[TokenLogprob]) -> ChatLogprobs {
    let content = lps
        .iter()
        .map(|lp| {
            let token = token_text(tokenizer, lp.token_id);
            let top_logprobs = lp
                .top_logprobs
                .iter()
                .map(|&(id, logprob)| {
                    let token = token_text(tokenizer, id);
                    TopLogprob { bytes: token.as_bytes().to_vec(), token, logprob }
                })
                .collect();
            TokenLogprobOut { bytes: token.as_bytes().to_vec(), token, logprob: lp.logprob, top_logprobs }
        })
        .collect();
    ChatLogprobs { content }
}
