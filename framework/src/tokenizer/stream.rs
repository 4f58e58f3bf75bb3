//! Incremental detokenization: feed generated ids one at a time and get back only newly
//! completed text. Bytes that do not yet form a whole UTF-8 character (byte-level tokens can
//! end mid-character) and unfinished `<0xNN>` byte runs are held back, so the deltas joined
//! with [`DecodeStream::finish`] equal `Tokenizer::decode` of all the ids, exactly.

use super::decode::{resolve_run, Piece};
use super::{clean_up_tokenization, Tokenizer, TokenizerError};

/// The state of one sequence being detokenized. It holds no reference to the tokenizer, so it
/// can live beside an `Arc<Tokenizer>` in a request; pass the same tokenizer to every call.
#[derive(Debug, Clone)]
pub struct DecodeStream {
    skip_special_tokens: bool,
    /// No token has reached the decoder yet (Metaspace treats the first token differently).
    first: bool,
    /// An unfinished run of byte-fallback bytes.
    run: Vec<u8>,
    /// Bytes not yet emitted: an incomplete UTF-8 character at the end.
    pending: Vec<u8>,
    /// Leading strip characters still to remove (Strip decoder after Fuse).
    strip_left: usize,
    /// Text held back while clean-up might still rewrite it (it ends within a " x" pattern).
    held: String,
}

impl DecodeStream {
    /// A stream for `tok`'s decoder; pass the same tokenizer to every later call.
    pub fn new(tok: &Tokenizer, skip_special_tokens: bool) -> DecodeStream {
        DecodeStream {
            skip_special_tokens,
            first: true,
            run: Vec::new(),
            pending: Vec::new(),
            strip_left: tok.decoder.strip_leading,
            held: String::new(),
        }
    }

    /// Adds one id; returns the text it completes, if any. An unknown id is an error and
    /// leaves the stream unchanged.
    pub fn step(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>, TokenizerError> {
        let token = tok.token_str(id)?;
        if self.skip_special_tokens && tok.is_special(id) {
            return Ok(None);
        }
        let piece = tok.decoder.piece(id, token, self.first);
        self.first = false;
        match piece {
            Piece::Byte(b) => {
                self.run.push(b);
                Ok(None)
            }
            Piece::Text(bytes) => {
                resolve_run(&mut self.run, &mut self.pending);
                self.pending.extend_from_slice(&bytes);
                let text = self.drain(false);
                Ok(self.emit(tok, text, false))
            }
        }
    }

    /// Flushes what is held at the end of generation (an incomplete character becomes U+FFFD,
    /// as in `decode`). The stream can be reused for more ids afterwards only as a new text.
    pub fn finish(&mut self, tok: &Tokenizer) -> Option<String> {
        resolve_run(&mut self.run, &mut self.pending);
        let text = self.drain(true);
        self.emit(tok, text, true)
    }

    /// Takes the decodable prefix of `pending`, replacing invalid sequences like `from_utf8_lossy`.
    fn drain(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start = valid + n;
                        }
                        None if at_end => {
                            out.push('\u{FFFD}');
                            start = self.pending.len();
                        }
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Applies the whole-text steps (leading strip, clean-up) to newly decoded text.
    fn emit(&mut self, tok: &Tokenizer, text: String, at_end: bool) -> Option<String> {
        let strip_char = tok.decoder.strip_char;
        let left = &mut self.strip_left;
        let mut s = text.as_str();
        while *left > 0 && !s.is_empty() {
            match s.strip_prefix(strip_char) {
                Some(rest) => {
                    s = rest;
                    *left -= 1;
                }
                None => *left = 0,
            }
        }
        let out = if tok.clean_up_spaces {
            self.held.push_str(s);
            // Every clean-up pattern starts with a space and is at most 4 characters long:
            // hold back from a space among the last 4 characters.
            let cut = if at_end {
                self.held.len()
            } else {
                let tail_start = self.held.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
                self.held[tail_start..].find(' ').map_or(self.held.len(), |p| tail_start + p)
            };
            let ready: String = self.held.drain(..cut).collect();
            clean_up_tokenization(&ready)
        } else {
            s.to_owned()
        };
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bytelevel;
    use super::super::Tokenizer;
    use proptest::prelude::*;

    /// A byte-level tokenizer whose vocabulary is the 256 byte characters plus multi-byte
    /// tokens that cut characters apart, and two special tokens.
    fn byte_level_tokenizer(clean_up: bool) -> Tokenizer {
        let mut vocab: Vec<String> = (0..=255u8).map(|b| bytelevel::byte_char(b).to_string()).collect();
        // Tokens that end or start mid-character ("ðŁĺ" is 3 of 😀's 4 bytes), and " .".
        for piece in ["😀", "你好", " ."] {
            let chars: Vec<char> = bytelevel::encode_bytes(piece).chars().collect();
            let cut = chars.len().div_ceil(2) + 1;
            for part in [&chars[..cut.min(chars.len())], &chars[cut.min(chars.len())..]] {
                let t: String = part.iter().collect();
                if part.len() > 1 && !vocab.contains(&t) {
                    vocab.push(t);
                }
            }
        }
        vocab.push("<|im_start|>".into());
        vocab.push("<|im_end|>".into());
        let n = vocab.len();
        let json = serde_json::json!({
            "model": {"type": "BPE", "vocab": vocab.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::json!(i))).collect::<serde_json::Map<_, _>>(), "merges": []},
            "added_tokens": [
                {"id": n - 2, "content": "<|im_start|>", "special": true},
                {"id": n - 1, "content": "<|im_end|>", "special": true}
            ],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            "decoder": {"type": "ByteLevel"}
        });
        let cfg = serde_json::json!({"clean_up_tokenization_spaces": clean_up});
        Tokenizer::from_hf_json(&json.to_string(), Some(&cfg.to_string())).unwrap()
    }

    fn streamed(tok: &Tokenizer, ids: &[u32], skip: bool) -> String {
        let mut s = tok.decode_stream(skip);
        let mut out = String::new();
        for &id in ids {
            if let Some(d) = s.step(tok, id).unwrap() {
                out.push_str(&d);
            }
        }
        out.extend(s.finish(tok));
        out
    }

    #[test]
    fn holds_partial_characters() {
        let tok = byte_level_tokenizer(false);
        let bytes = "😀".as_bytes();
        let mut s = tok.decode_stream(false);
        let ids: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
        assert_eq!(s.step(&tok, ids[0]).unwrap(), None);
        assert_eq!(s.step(&tok, ids[1]).unwrap(), None);
        assert_eq!(s.step(&tok, ids[2]).unwrap(), None);
        assert_eq!(s.step(&tok, ids[3]).unwrap().as_deref(), Some("😀"));
        assert_eq!(s.step(&tok, b'!' as u32).unwrap().as_deref(), Some("!"));
        assert!(s.step(&tok, 100_000).is_err());
        assert_eq!(s.finish(&tok), None);
    }

    proptest! {
        #[test]
        fn deltas_join_to_decode(ids in proptest::collection::vec(0u32..262, 0..40), skip in any::<bool>(), clean in any::<bool>()) {
            let tok = byte_level_tokenizer(clean);
            prop_assert_eq!(streamed(&tok, &ids, skip), tok.decode(&ids, skip).unwrap());
        }
    }
}
