//! Pre-tokenizers: how normalized text is cut into the pieces that BPE merges within (HF
//! `pre_tokenizer`: ByteLevel, Split, Digits, Metaspace, Sequence), and the regexes that
//! llama.cpp picks by GGUF `tokenizer.ggml.pre`.

use fancy_regex::Regex;

use super::bytelevel;
use super::TokenizerError;

/// GPT-2's pre-tokenizer regex (also HF's ByteLevel with `use_regex`).
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer regex.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex (single digits).
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How the matches of a split pattern are kept (HF `SplitDelimiterBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBehavior {
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

impl SplitBehavior {
    pub fn parse(name: &str) -> Result<SplitBehavior, TokenizerError> {
        Ok(match name {
            "Removed" => SplitBehavior::Removed,
            "Isolated" => SplitBehavior::Isolated,
            "MergedWithPrevious" => SplitBehavior::MergedWithPrevious,
            "MergedWithNext" => SplitBehavior::MergedWithNext,
            "Contiguous" => SplitBehavior::Contiguous,
            other => return Err(TokenizerError::Unsupported(format!("split behavior {other:?}"))),
        })
    }
}

/// When Metaspace puts the replacement character in front of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrependScheme {
    Always,
    First,
    Never,
}

#[derive(Debug, Clone)]
pub enum PreTokenizer {
    ByteLevel { add_prefix_space: bool, use_regex: bool },
    Split { pattern: Regex, behavior: SplitBehavior, invert: bool },
    Digits { individual: bool },
    Metaspace { replacement: char, scheme: PrependScheme, split: bool },
    Sequence(Vec<PreTokenizer>),
}

/// One pre-token; `at_origin` is true for a piece that starts at offset 0 of the whole input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    pub at_origin: bool,
}

/// Compiles a regex, naming it in the error.
pub fn compile(pattern: &str) -> Result<Regex, TokenizerError> {
    Regex::new(pattern).map_err(|e| TokenizerError::Regex(format!("cannot compile {pattern:?}: {e}")))
}

/// The pre-tokenizer shapes llama.cpp uses for GGUF `tokenizer.ggml.pre` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufPre {
    /// GPT-2's ByteLevel with its regex.
    ByteLevel,
    /// Each digit isolated, then GPT-2's ByteLevel.
    DigitsThenByteLevel,
    /// A regex split (matches isolated), then ByteLevel without a regex.
    Split(&'static str),
}

/// The shape of the pre-tokenizer for a GGUF `tokenizer.ggml.pre` value (byte-level BPE).
pub fn gguf_pre(pre: Option<&str>) -> Result<GgufPre, TokenizerError> {
    Ok(match pre.unwrap_or("default") {
        "default" | "gpt2" | "gpt-2" | "olmo" | "stablelm2" | "phi-2" | "jais" | "poro-chat" | "viking" => {
            GgufPre::ByteLevel
        }
        // SmolLM: HF transformers loads these GGUFs with the plain GPT-2 ByteLevel pre-tokenizer,
        // and our parity fixture follows it. (llama.cpp and the original tokenizer.json isolate
        // digits first; the vocabulary has no multi-digit tokens, so the two differ only in how
        // spaces before a digit group: "a  1" → "a","Ġ","Ġ","1" here, "a","ĠĠ","1" there.)
        "smollm" => GgufPre::ByteLevel,
        // llama.cpp: "\p{N}" isolated first, then the GPT-2 regex.
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => GgufPre::DigitsThenByteLevel,
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" | "falcon3" | "pixtral" => {
            GgufPre::Split(LLAMA3_PATTERN)
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2-qwen" | "megrez" => GgufPre::Split(QWEN2_PATTERN),
        other => return Err(TokenizerError::Unsupported(format!("GGUF pre-tokenizer \"{other}\""))),
    })
}

/// The pre-tokenizer llama.cpp uses for a GGUF `tokenizer.ggml.pre` value (byte-level BPE).
pub fn for_gguf_pre(pre: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
    let byte_level = |use_regex| PreTokenizer::ByteLevel { add_prefix_space: false, use_regex };
    Ok(match gguf_pre(pre)? {
        GgufPre::ByteLevel => byte_level(true),
        GgufPre::DigitsThenByteLevel => {
            PreTokenizer::Sequence(vec![PreTokenizer::Digits { individual: true }, byte_level(true)])
        }
        GgufPre::Split(pattern) => PreTokenizer::Sequence(vec![
            PreTokenizer::Split { pattern: compile(pattern)?, behavior: SplitBehavior::Isolated, invert: false },
            byte_level(false),
        ]),
    })
}

impl PreTokenizer {
    pub fn apply(&self, pieces: Vec<Piece>) -> Result<Vec<Piece>, TokenizerError> {
        match self {
            PreTokenizer::Sequence(steps) => {
                let mut pieces = pieces;
                for step in steps {
                    pieces = step.apply(pieces)?;
                }
                Ok(pieces)
            }
            _ => {
                let mut out = Vec::with_capacity(pieces.len() * 4);
                for piece in pieces {
                    self.split_one(piece, &mut out)?;
                }
                Ok(out)
            }
        }
    }

    fn split_one(&self, piece: Piece, out: &mut Vec<Piece>) -> Result<(), TokenizerError> {
        match self {
            PreTokenizer::ByteLevel { add_prefix_space, use_regex } => {
                let text = if *add_prefix_space && !piece.text.starts_with(' ') {
                    format!(" {}", piece.text)
                } else {
                    piece.text
                };
                if *use_regex {
                    let ranges = regex_matches(gpt2_regex()?, &text, false)?;
                    for (i, r) in split_ranges(&ranges, SplitBehavior::Isolated).into_iter().enumerate() {
                        push(out, bytelevel::encode_bytes(&text[r.0..r.1]), piece.at_origin && i == 0);
                    }
                } else {
                    push(out, bytelevel::encode_bytes(&text), piece.at_origin);
                }
            }
            PreTokenizer::Split { pattern, behavior, invert } => {
                let ranges = regex_matches(pattern, &piece.text, *invert)?;
                emit(out, &piece, &split_ranges(&ranges, *behavior));
            }
            PreTokenizer::Digits { individual } => {
                let ranges = char_matches(&piece.text, |c| c.is_numeric());
                let behavior = if *individual { SplitBehavior::Isolated } else { SplitBehavior::Contiguous };
                emit(out, &piece, &split_ranges(&ranges, behavior));
            }
            PreTokenizer::Metaspace { replacement, scheme, split } => {
                let mut text = piece.text.replace(' ', replacement.encode_utf8(&mut [0u8; 4]));
                let prepend = match scheme {
                    PrependScheme::Always => true,
                    PrependScheme::First => piece.at_origin,
                    PrependScheme::Never => false,
                };
                if prepend && !text.starts_with(*replacement) {
                    text.insert(0, *replacement);
                }
                let p = Piece { text, at_origin: piece.at_origin };
                if *split {
                    let r = *replacement;
                    let ranges = char_matches(&p.text, |c| c == r);
                    emit(out, &p, &split_ranges(&ranges, SplitBehavior::MergedWithNext));
                } else {
                    push(out, p.text, p.at_origin);
                }
            }
            PreTokenizer::Sequence(_) => {
                out.extend(self.apply(vec![piece])?);
            }
        }
        Ok(())
    }
}

fn gpt2_regex() -> Result<&'static Regex, TokenizerError> {
    static RE: std::sync::OnceLock<Result<Regex, String>> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(GPT2_PATTERN).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| TokenizerError::Regex(e.clone()))
}

fn push(out: &mut Vec<Piece>, text: String, at_origin: bool) {
    if !text.is_empty() {
        out.push(Piece { text, at_origin });
    }
}

fn emit(out: &mut Vec<Piece>, piece: &Piece, ranges: &[(usize, usize)]) {
    for (i, &(a, b)) in ranges.iter().enumerate() {
        push(out, piece.text[a..b].to_owned(), piece.at_origin && i == 0 && a == 0);
    }
}

/// The whole text as (start, end, is_match) ranges for a regex (HF `Pattern::find_matches`).
fn regex_matches(re: &Regex, text: &str, invert: bool) -> Result<Vec<(usize, usize, bool)>, TokenizerError> {
    let mut out = Vec::new();
    let mut prev = 0;
    for m in re.find_iter(text) {
        let m = m.map_err(|e| TokenizerError::Regex(e.to_string()))?;
        if m.start() == m.end() {
            continue;
        }
        if prev != m.start() {
            out.push((prev, m.start(), invert));
        }
        out.push((m.start(), m.end(), !invert));
        prev = m.end();
    }
    if prev != text.len() {
        out.push((prev, text.len(), invert));
    }
    Ok(out)
}

/// Each matching character is its own match; runs of other characters are one range.
fn char_matches(text: &str, f: impl Fn(char) -> bool) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut run_start = None;
    for (i, c) in text.char_indices() {
        if f(c) {
            if let Some(s) = run_start.take() {
                out.push((s, i, false));
            }
            out.push((i, i + c.len_utf8(), true));
        } else if run_start.is_none() {
            run_start = Some(i);
        }
    }
    if let Some(s) = run_start {
        out.push((s, text.len(), false));
    }
    out
}

/// Applies a split behavior to (start, end, is_match) ranges (HF `NormalizedString::split`).
fn split_ranges(ranges: &[(usize, usize, bool)], behavior: SplitBehavior) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    match behavior {
        SplitBehavior::Isolated => out.extend(ranges.iter().map(|&(a, b, _)| (a, b))),
        SplitBehavior::Removed => out.extend(ranges.iter().filter(|r| !r.2).map(|&(a, b, _)| (a, b))),
        SplitBehavior::Contiguous => {
            let mut prev_match = false;
            for &(a, b, m) in ranges {
                match out.last_mut() {
                    Some(last) if m == prev_match => last.1 = b,
                    _ => out.push((a, b)),
                }
                prev_match = m;
            }
        }
        SplitBehavior::MergedWithPrevious => {
            let mut prev_match = false;
            for &(a, b, m) in ranges {
                match out.last_mut() {
                    Some(last) if m && !prev_match => last.1 = b,
                    _ => out.push((a, b)),
                }
                prev_match = m;
            }
        }
        SplitBehavior::MergedWithNext => {
            let mut prev_match = false;
            for &(a, b, m) in ranges.iter().rev() {
                match out.last_mut() {
                    Some(last) if m && !prev_match => last.0 = a,
                    _ => out.push((a, b)),
                }
                prev_match = m;
            }
            out.reverse();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &PreTokenizer, text: &str) -> Vec<String> {
        p.apply(vec![Piece { text: text.into(), at_origin: true }]).unwrap().into_iter().map(|p| p.text).collect()
    }

    #[test]
    fn gpt2_regex_and_byte_mapping() {
        let p = for_gguf_pre(Some("gpt2")).unwrap();
        assert_eq!(run(&p, "Hello world's  end 123\n"), ["Hello", "Ġworld", "'s", "Ġ", "Ġend", "Ġ123", "Ċ"]);
    }

    #[test]
    fn starcoder_isolates_digits_smollm_does_not() {
        let p = for_gguf_pre(Some("starcoder")).unwrap();
        assert_eq!(run(&p, "year  2024!"), ["year", "ĠĠ", "2", "0", "2", "4", "!"]);
        let p = for_gguf_pre(Some("smollm")).unwrap();
        assert_eq!(run(&p, "year  2024!"), ["year", "Ġ", "Ġ2024", "!"]);
    }

    #[test]
    fn llama3_groups_three_digits_and_newlines() {
        let p = for_gguf_pre(Some("llama-bpe")).unwrap();
        assert_eq!(run(&p, "12345 I'M ok\n\n"), ["123", "45", "ĠI", "'M", "Ġok", "ĊĊ"]);
        let q = for_gguf_pre(Some("qwen2")).unwrap();
        assert_eq!(run(&q, "x 12"), ["x", "Ġ", "1", "2"]);
        assert!(for_gguf_pre(Some("mystery")).unwrap_err().to_string().contains("mystery"));
    }

    #[test]
    fn metaspace_and_behaviors() {
        let m = PreTokenizer::Metaspace { replacement: '▁', scheme: PrependScheme::First, split: true };
        assert_eq!(run(&m, "Hey  you"), ["▁Hey", "▁", "▁you"]);
        let pieces = m.apply(vec![Piece { text: "later".into(), at_origin: false }]).unwrap();
        assert_eq!(pieces[0].text, "later");
        let ranges = char_matches("a-b--c", |c| c == '-');
        assert_eq!(split_ranges(&ranges, SplitBehavior::Removed), [(0, 1), (2, 3), (5, 6)]);
        assert_eq!(split_ranges(&ranges, SplitBehavior::MergedWithPrevious), [(0, 2), (2, 4), (4, 5), (5, 6)]);
        assert_eq!(split_ranges(&ranges, SplitBehavior::Contiguous), [(0, 1), (1, 2), (2, 3), (3, 5), (5, 6)]);
        let d = PreTokenizer::Digits { individual: false };
        assert_eq!(run(&d, "ab123c4"), ["ab", "123", "c", "4"]);
    }
}
