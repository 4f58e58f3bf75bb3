//! Added tokens (special and user-defined): found verbatim in the input, leftmost-longest,
//! before normalization and pre-tokenization, with HF's lstrip/rstrip/single_word options.

use std::collections::HashMap;
use std::ops::Range;

/// One added token and its matching options.
#[derive(Debug, Clone)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
    /// Skipped by `decode(.., skip_special_tokens = true)`.
    pub special: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub single_word: bool,
    /// Matched in normalized text rather than in the raw input.
    pub normalized: bool,
}

impl AddedToken {
    pub fn plain(content: String, id: u32, special: bool) -> AddedToken {
        AddedToken { content, id, special, lstrip: false, rstrip: false, single_word: false, normalized: false }
    }
}

/// A piece of input: plain text, or an added token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Text { text: &'a str, start: usize },
    Token(u32),
}

/// A set of added tokens matched together.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    tokens: Vec<AddedToken>,
    /// Candidates by first character, longest first.
    by_first: HashMap<char, Vec<usize>>,
}

impl Matcher {
    pub fn new(tokens: Vec<AddedToken>) -> Matcher {
        let mut by_first: HashMap<char, Vec<usize>> = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            if let Some(c) = t.content.chars().next() {
                by_first.entry(c).or_default().push(i);
            }
        }
        for list in by_first.values_mut() {
            list.sort_by(|&a, &b| tokens[b].content.len().cmp(&tokens[a].content.len()).then(a.cmp(&b)));
        }
        Matcher { tokens, by_first }
    }

    /// Splits `text` (whose first byte is at `base` in the original input) into text and tokens.
    #[cfg(test)]
    pub fn split<'a>(&self, text: &'a str, base: usize) -> Vec<Segment<'a>> {
        self.split_with_literals(text, base, &[])
    }

    /// Splits `text` (whose first byte is at `base` in the original input) into text and
    /// tokens; no special token is matched where it overlaps one of `literal` (byte ranges of
    /// the original input): its text stays text there.
    pub fn split_with_literals<'a>(&self, text: &'a str, base: usize, literal: &[Range<usize>]) -> Vec<Segment<'a>> {
        let mut out = Vec::new();
        if self.tokens.is_empty() {
            if !text.is_empty() {
                out.push(Segment::Text { text, start: base });
            }
            return out;
        }
        let mut text_start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let Some(c) = text[pos..].chars().next() else { break };
            let found = self.match_at(text, pos).filter(|(tok, end)| {
                !tok.special || !literal.iter().any(|r| base + pos < r.end && base + end > r.start)
            });
            if let Some((tok, end)) = found {
                let mut cut_start = pos;
                if tok.lstrip {
                    cut_start = text_start + text[text_start..pos].trim_end().len();
                }
                let mut cut_end = end;
                if tok.rstrip {
                    cut_end = text.len() - text[end..].trim_start().len();
                }
                if cut_start > text_start {
                    out.push(Segment::Text { text: &text[text_start..cut_start], start: base + text_start });
                }
                out.push(Segment::Token(tok.id));
                text_start = cut_end;
                pos = cut_end;
            } else {
                pos += c.len_utf8();
            }
        }
        if text_start < text.len() {
            out.push(Segment::Text { text: &text[text_start..], start: base + text_start });
        }
        out
    }

    /// Byte ranges of the special tokens `text` spells, as `split` would match them.
    pub fn special_ranges(&self, text: &str) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(c) = text.get(pos..).and_then(|t| t.chars().next()) {
            match self.match_at(text, pos) {
                Some((tok, end)) => {
                    if tok.special {
                        out.push(pos..end);
                    }
                    pos = end;
                }
                None => pos += c.len_utf8(),
            }
        }
        out
    }

    fn match_at(&self, text: &str, pos: usize) -> Option<(&AddedToken, usize)> {
        let c = text[pos..].chars().next()?;
        for &i in self.by_first.get(&c)? {
            let tok = &self.tokens[i];
            if !text[pos..].starts_with(tok.content.as_str()) {
                continue;
            }
            let end = pos + tok.content.len();
            if tok.single_word {
                let word = |c: char| c.is_alphanumeric() || c == '_';
                let before = text[..pos].chars().next_back().is_some_and(word);
                let after = text[end..].chars().next().is_some_and(word);
                if before || after {
                    continue;
                }
            }
            return Some((tok, end));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(segs: &[Segment]) -> Vec<String> {
        segs.iter()
            .map(|s| match s {
                Segment::Text { text, .. } => text.to_string(),
                Segment::Token(id) => format!("#{id}"),
            })
            .collect()
    }

    #[test]
    fn leftmost_longest_with_strip_options() {
        let mut end = AddedToken::plain("<|end|>".into(), 7, true);
        end.lstrip = true;
        end.rstrip = true;
        let m = Matcher::new(vec![
            AddedToken::plain("<|im_start|>".into(), 1, true),
            AddedToken::plain("<|im".into(), 9, false),
            end,
        ]);
        let segs = m.split("<|im_start|>user\nhi  <|end|>  x<|im", 0);
        assert_eq!(texts(&segs), ["#1", "user\nhi", "#7", "x", "#9"]);
        assert_eq!(segs[1], Segment::Text { text: "user\nhi", start: 12 });
        assert_eq!(texts(&m.split("", 0)), Vec::<String>::new());
    }

    #[test]
    fn special_tokens_inside_literal_ranges_stay_text() {
        let m = Matcher::new(vec![
            AddedToken::plain("<|end|>".into(), 7, true),
            AddedToken::plain("<word>".into(), 8, false),
        ]);
        let text = "a<|end|>b<|end|><word>";
        assert_eq!(m.special_ranges(text), [1..8, 9..16]);
        let segs = m.split_with_literals(&text[1..], 1, &[9..16]);
        assert_eq!(texts(&segs), ["#7", "b<|end|>", "#8"], "a non-special token is still matched");
    }

    #[test]
    fn single_word_needs_word_boundaries() {
        let mut t = AddedToken::plain("cat".into(), 3, false);
        t.single_word = true;
        let m = Matcher::new(vec![t]);
        assert_eq!(texts(&m.split("a cat concat cats", 0)), ["a ", "#3", " concat cats"]);
    }
}
