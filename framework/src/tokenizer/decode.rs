//! Decoding: HF decoder chains (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)
//! compiled into a per-token table of pieces, plus the few whole-text steps (byte-run
//! resolution, UTF-8 repair, leading strip) written so that [`super::stream::DecodeStream`]
//! can apply them incrementally and get exactly the same text.

use super::bytelevel;
use super::TokenizerError;

/// One step of an HF decoder chain.
#[derive(Debug, Clone, PartialEq)]
pub enum DecoderStep {
    ByteLevel,
    Replace {
        pattern: String,
        content: String,
    },
    ByteFallback,
    Fuse,
    Strip {
        content: char,
        start: usize,
        stop: usize,
    },
    /// Replacement → space; with `strip_first`, the first token loses its replacement chars.
    Metaspace {
        replacement: char,
        strip_first: bool,
    },
}

/// What one token contributes to the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes (valid UTF-8 except after a ByteLevel step).
    Text(Vec<u8>),
    /// A `<0xNN>` byte-fallback token: runs of these are valid UTF-8 together or become U+FFFD each.
    Byte(u8),
}

/// Every token's piece, packed (a `Vec<Piece>` of a 49k vocabulary costs ~3 MiB of small
/// allocations; this ~0.5 MiB): token i's bytes are `bytes[end(i-1)..end(i)]`, `end` the low
/// 31 bits of `ends[i]`, whose top bit marks a byte-fallback piece (one byte).
#[derive(Debug, Clone, Default)]
struct PieceTable {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl PieceTable {
    const BYTE: u32 = 1 << 31;

    fn push(&mut self, piece: Piece) -> Result<(), TokenizerError> {
        let flag = match piece {
            Piece::Text(text) => {
                self.bytes.extend_from_slice(&text);
                0
            }
            Piece::Byte(b) => {
                self.bytes.push(b);
                Self::BYTE
            }
        };
        let end = u32::try_from(self.bytes.len())
            .ok()
            .filter(|&e| e < Self::BYTE)
            .ok_or_else(|| TokenizerError::Invalid("the vocabulary's decoded pieces exceed 2 GiB".into()))?;
        self.ends.push(end | flag);
        Ok(())
    }

    fn get(&self, id: usize) -> Option<Piece> {
        let end = *self.ends.get(id)?;
        let start = if id == 0 { 0 } else { (self.ends[id - 1] & !Self::BYTE) as usize };
        let bytes = &self.bytes[start..(end & !Self::BYTE) as usize];
        Some(if end & Self::BYTE != 0 { Piece::Byte(bytes[0]) } else { Piece::Text(bytes.to_vec()) })
    }
}

/// A compiled decoder.
#[derive(Debug, Clone)]
pub struct DecodePlan {
    steps: Vec<DecoderStep>,
    pieces: PieceTable,
    /// Whether the first token decodes differently (Metaspace's prefix strip).
    first_differs: bool,
    /// How many leading `strip_char`s are removed from the whole text (Strip after Fuse).
    pub strip_leading: usize,
    pub strip_char: char,
    /// No decoder configured: tokens are joined with spaces (HF's fallback).
    join_with_space: bool,
}

impl DecodePlan {
    /// Compiles `steps` for the vocabulary; `None` means HF's "no decoder" (join with spaces).
    pub fn new<S: AsRef<str>>(
        steps: Option<Vec<DecoderStep>>,
        tokens: impl IntoIterator<Item = S>,
    ) -> Result<DecodePlan, TokenizerError> {
        let join_with_space = steps.is_none();
        let steps = steps.unwrap_or_default();
        let mut fused = false;
        let mut per_token = Vec::new();
        let (mut strip_leading, mut strip_char) = (0, ' ');
        for step in &steps {
            match step {
                DecoderStep::Fuse | DecoderStep::ByteLevel if fused => {}
                DecoderStep::Fuse => fused = true,
                DecoderStep::ByteLevel => {
                    per_token.push(step.clone());
                    fused = true;
                }
                DecoderStep::Strip { content, start, stop } if fused => {
                    if *stop > 0 || (strip_leading > 0 && *content != strip_char) {
                        return Err(TokenizerError::Unsupported(
                            "decoder Strip from the right end of the fused text".into(),
                        ));
                    }
                    strip_leading += start;
                    strip_char = *content;
                }
                _ if fused => {
                    return Err(TokenizerError::Unsupported(format!(
                        "decoder step {step:?} after the tokens were fused"
                    )))
                }
                _ => per_token.push(step.clone()),
            }
        }
        let first_differs = per_token.iter().any(|s| matches!(s, DecoderStep::Metaspace { strip_first: true, .. }));
        let mut plan = DecodePlan {
            steps: per_token,
            pieces: PieceTable::default(),
            first_differs,
            strip_leading,
            strip_char,
            join_with_space,
        };
        let mut pieces = PieceTable::default();
        for t in tokens {
            pieces.push(plan.compute(t.as_ref(), false))?;
        }
        plan.pieces = pieces;
        Ok(plan)
    }

    /// The piece of token `token` (string `text`) at position `first` or later.
    pub fn piece(&self, id: u32, text: &str, first: bool) -> Piece {
        if first && self.first_differs {
            return self.compute(text, true);
        }
        let mut p = match self.pieces.get(id as usize) {
            Some(p) => p,
            None => self.compute(text, false),
        };
        if self.join_with_space && !first {
            if let Piece::Text(bytes) = &mut p {
                bytes.insert(0, b' ');
            }
        }
        p
    }

    fn compute(&self, token: &str, first: bool) -> Piece {
        let mut text = token.to_owned();
        for step in &self.steps {
            match step {
                DecoderStep::ByteLevel => {
                    return Piece::Text(bytelevel::decode_token(&text).unwrap_or_else(|| text.into_bytes()));
                }
                DecoderStep::Replace { pattern, content } => {
                    if !pattern.is_empty() {
                        text = text.replace(pattern.as_str(), content);
                    }
                }
                DecoderStep::ByteFallback => {
                    if let Some(b) = parse_byte_token(&text) {
                        return Piece::Byte(b);
                    }
                }
                DecoderStep::Strip { content, start, stop } => {
                    let mut s = text.as_str();
                    for _ in 0..*start {
                        s = s.strip_prefix(*content).unwrap_or(s);
                    }
                    for _ in 0..*stop {
                        s = s.strip_suffix(*content).unwrap_or(s);
                    }
                    text = s.to_owned();
                }
                DecoderStep::Metaspace { replacement, strip_first } => {
                    text = if first && *strip_first {
                        text.chars().filter(|c| c != replacement).collect()
                    } else {
                        text.replace(*replacement, " ")
                    };
                }
                DecoderStep::Fuse => {}
            }
        }
        Piece::Text(text.into_bytes())
    }

    /// Decodes a whole sequence of (already filtered) token pieces.
    pub fn finish_text(&self, pieces: impl IntoIterator<Item = Piece>) -> String {
        let mut bytes = Vec::new();
        let mut run = Vec::new();
        for p in pieces {
            match p {
                Piece::Byte(b) => run.push(b),
                Piece::Text(t) => {
                    resolve_run(&mut run, &mut bytes);
                    bytes.extend_from_slice(&t);
                }
            }
        }
        resolve_run(&mut run, &mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let mut s: &str = &text;
        for _ in 0..self.strip_leading {
            s = s.strip_prefix(self.strip_char).unwrap_or(s);
        }
        s.to_owned()
    }
}

/// `<0xNN>` → the byte.
pub fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Moves a finished run of byte-fallback bytes into `out`: itself when it is valid UTF-8,
/// else one U+FFFD per byte (HF's ByteFallback decoder).
pub fn resolve_run(run: &mut Vec<u8>, out: &mut Vec<u8>) {
    if run.is_empty() {
        return;
    }
    if std::str::from_utf8(run).is_ok() {
        out.extend_from_slice(run);
    } else {
        for _ in 0..run.len() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    fn decode(plan: &DecodePlan, tokens: &[String], ids: &[u32]) -> String {
        plan.finish_text(ids.iter().enumerate().map(|(i, &id)| plan.piece(id, &tokens[id as usize], i == 0)))
    }

    #[test]
    fn sentencepiece_chain_with_byte_fallback() {
        let tokens = toks(&["▁Hello", "▁world", "<0xE4>", "<0xBD>", "<0xA0>", "<0x80>", "!"]);
        let steps = vec![
            DecoderStep::Replace { pattern: "▁".into(), content: " ".into() },
            DecoderStep::ByteFallback,
            DecoderStep::Fuse,
            DecoderStep::Strip { content: ' ', start: 1, stop: 0 },
        ];
        let plan = DecodePlan::new(Some(steps), &tokens).unwrap();
        assert_eq!(decode(&plan, &tokens, &[0, 1, 2, 3, 4, 6]), "Hello world你!");
        // An invalid run becomes one U+FFFD per byte.
        assert_eq!(decode(&plan, &tokens, &[0, 5, 2, 6]), "Hello\u{FFFD}\u{FFFD}!");
    }

    #[test]
    fn metaspace_strips_only_the_first_token() {
        let tokens = toks(&["▁", "▁Hi", "▁▁there"]);
        let steps = vec![DecoderStep::Metaspace { replacement: '▁', strip_first: true }];
        let plan = DecodePlan::new(Some(steps), &tokens).unwrap();
        assert_eq!(decode(&plan, &tokens, &[0, 1, 2]), " Hi  there");
        assert_eq!(decode(&plan, &tokens, &[1, 2]), "Hi  there");
    }

    #[test]
    fn byte_level_and_no_decoder() {
        let tokens = toks(&["Hello", "Ġworld", "ðŁ", "ĺ", "Ģ", "<|im_end|>"]);
        let plan = DecodePlan::new(Some(vec![DecoderStep::ByteLevel]), &tokens).unwrap();
        assert_eq!(decode(&plan, &tokens, &[0, 1, 2, 3, 4, 5]), "Hello world😀<|im_end|>");
        assert_eq!(decode(&plan, &tokens, &[2, 0]), "\u{FFFD}Hello");
        let plan = DecodePlan::new(None, &tokens).unwrap();
        assert_eq!(decode(&plan, &tokens, &[0, 1]), "Hello Ġworld");
        let bad = DecodePlan::new(Some(vec![DecoderStep::Fuse, DecoderStep::ByteFallback]), &tokens);
        assert!(bad.is_err());
    }
}
