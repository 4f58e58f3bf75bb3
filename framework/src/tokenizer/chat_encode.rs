//! Chat prompts as token ids: the messages rendered with the chat template, then encoded, with
//! text inside a message (content or role) that spells a special token kept as text by
//! default, so a user who types `<|im_end|>` cannot end their turn or forge another role.
//!
//! How: each special-token match in a message is swapped for a placeholder (characters of
//! Unicode's private use area) before rendering; after rendering, the placeholders are put
//! back and their byte ranges are encoded with no special-token matching. The template's own
//! control tokens are untouched, and a message with no special text encodes exactly as before.

use super::{ChatMessage, Tokenizer, TokenizerError};
use std::ops::Range;

/// How text inside a chat message that spells a special (control) token is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentSpecialTokens {
    /// As plain text (the default).
    #[default]
    Text,
    /// As the control tokens it spells (rendering the template, then encoding the result).
    Control,
}

/// Opens and closes a placeholder (supplementary private use area A).
const OPEN: char = '\u{F0000}';
const CLOSE: char = '\u{F0001}';

impl Tokenizer {
    /// Renders `messages` with the chat template and encodes the result (no BOS/EOS added:
    /// the template writes them), giving up past `max_tokens` (see
    /// [`Tokenizer::encode_at_most`]).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        content: ContentSpecialTokens,
        max_tokens: usize,
    ) -> Result<Vec<u32>, TokenizerError> {
        let masked = match content {
            ContentSpecialTokens::Control => None,
            ContentSpecialTokens::Text => self.mask_special_text(messages),
        };
        let Some((masked, originals)) = masked else {
            let text = self.apply_chat_template(messages, add_generation_prompt)?;
            return self.encode_at_most(&text, false, max_tokens);
        };
        let rendered = self.apply_chat_template(&masked, add_generation_prompt)?;
        let (text, literal) = unmask(&rendered, &originals);
        self.encode_with_literals(&text, false, &literal, max_tokens)
    }

    /// The messages with each special-token match (and each placeholder character a user
    /// typed) replaced by a numbered placeholder, and the texts replaced; `None` when no
    /// message has any.
    fn mask_special_text(&self, messages: &[ChatMessage]) -> Option<(Vec<ChatMessage>, Vec<String>)> {
        let mut originals = Vec::new();
        let mut mask = |text: &str| -> Option<String> {
            let ranges = self.special_text(text);
            if ranges.is_empty() {
                return None;
            }
            let mut out = String::with_capacity(text.len() + ranges.len() * 12);
            let mut last = 0;
            for r in ranges {
                out.push_str(&text[last..r.start]);
                out.push(OPEN);
                out.push_str(&originals.len().to_string());
                out.push(CLOSE);
                originals.push(text[r.clone()].to_string());
                last = r.end;
            }
            out.push_str(&text[last..]);
            Some(out)
        };
        let mut any = false;
        let masked: Vec<ChatMessage> = messages
            .iter()
            .map(|m| {
                let role = mask(&m.role);
                let content = mask(&m.content);
                any |= role.is_some() || content.is_some();
                ChatMessage {
                    role: role.unwrap_or_else(|| m.role.clone()),
                    content: content.unwrap_or_else(|| m.content.clone()),
                }
            })
            .collect();
        any.then_some((masked, originals))
    }

    /// Sorted, disjoint byte ranges of `text` to mask: special tokens and placeholder chars.
    fn special_text(&self, text: &str) -> Vec<Range<usize>> {
        let mut ranges = self.raw_added.special_ranges(text);
        ranges.extend(self.normalized_added.special_ranges(text));
        ranges.extend(text.match_indices([OPEN, CLOSE]).map(|(i, s)| i..i + s.len()));
        ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
        let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if out.last().is_none_or(|last| r.start >= last.end) {
                out.push(r);
            }
        }
        out
    }
}

/// Puts the masked texts back into `rendered`; returns the text and where they are.
fn unmask(rendered: &str, originals: &[String]) -> (String, Vec<Range<usize>>) {
    let mut text = String::with_capacity(rendered.len());
    let mut literal = Vec::new();
    let mut rest = rendered;
    while let Some(open) = rest.find(OPEN) {
        text.push_str(&rest[..open]);
        let after = &rest[open + OPEN.len_utf8()..];
        let restored = after.find(CLOSE).and_then(|close| {
            let index: usize = after[..close].parse().ok()?;
            Some((originals.get(index)?, close))
        });
        match restored {
            Some((original, close)) => {
                literal.push(text.len()..text.len() + original.len());
                text.push_str(original);
                rest = &after[close + CLOSE.len_utf8()..];
            }
            None => {
                // Not one of ours (the template wrote it): keep it.
                text.push(OPEN);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    (text, literal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_come_back_as_literal_ranges() {
        let originals = vec!["<|im_end|>".to_string(), "\u{F0000}".to_string()];
        let rendered = format!("<|im_start|>user\na{OPEN}0{CLOSE}b{OPEN}1{CLOSE}{OPEN}x<|im_end|>");
        let (text, literal) = unmask(&rendered, &originals);
        assert_eq!(text, format!("<|im_start|>user\na<|im_end|>b{OPEN}{OPEN}x<|im_end|>"));
        let spans: Vec<&str> = literal.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(spans, ["<|im_end|>", "\u{F0000}"]);
    }
}
