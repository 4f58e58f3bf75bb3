//! Builds tokenizer parts from a [`TokenizerSpec`] (GGUF metadata), the way llama.cpp reads
//! it: byte-level BPE with ranked merges and a pre-tokenizer chosen by `pre`, or
//! SentencePiece-style BPE merging by score with `▁` for spaces and `<0xNN>` byte fallback.

use super::added::AddedToken;
use super::bpe::{Bpe, BpeOptions, Vocab};
use super::decode::{DecodePlan, DecoderStep};
use super::normalize::Normalizer;
use super::pretok;
use super::spec::{TokenType, TokenizerModel, TokenizerSpec};
use super::{Parts, TokenizerError};

pub(crate) fn parts(spec: TokenizerSpec) -> Result<Parts, TokenizerError> {
    let n = spec.tokens.len();
    if !spec.token_types.is_empty() && spec.token_types.len() != n {
        return Err(TokenizerError::Invalid(format!("{} token types for {n} tokens", spec.token_types.len())));
    }
    let vocab = Vocab::new(spec.tokens)?;
    let kind = |id: usize| spec.token_types.get(id).copied().unwrap_or(TokenType::Normal);
    let valid = |what: &str, id: Option<u32>| -> Result<Option<u32>, TokenizerError> {
        match id {
            Some(i) if i as usize >= n => {
                Err(TokenizerError::Invalid(format!("{what} id {i} is outside the vocabulary of {n} tokens")))
            }
            other => Ok(other),
        }
    };
    let bos = valid("BOS", spec.bos_token_id)?;
    let eos = valid("EOS", spec.eos_token_id)?;
    let unk = valid("UNK", spec.unk_token_id)?;
    let pad = valid("PAD", spec.pad_token_id)?;

    // Control, unknown and user-defined tokens are matched verbatim (llama.cpp's special cache);
    // control and unknown ones, and the configured BOS/EOS/UNK/PAD, are special.
    let named: Vec<u32> = [bos, eos, unk, pad].into_iter().flatten().collect();
    let mut added = Vec::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        let t = kind(id);
        let is_named = named.contains(&(id as u32));
        let special = matches!(t, TokenType::Control | TokenType::Unknown) || is_named;
        if (special || t == TokenType::UserDefined) && !token.is_empty() {
            added.push(AddedToken::plain(token.to_string(), id as u32, special));
        }
    }

    let (bpe, normalizer, pre, steps) = match spec.model {
        TokenizerModel::ByteLevelBpe => {
            let merges = parse_merges(&spec.merges)?;
            let pre_name = spec.pre.as_deref();
            let ignore_merges = matches!(pre_name, Some("llama3" | "llama-v3" | "llama-bpe"));
            let opts = BpeOptions { ignore_merges, ..Default::default() };
            let bpe = Bpe::from_merges(&vocab, &merges, opts)?;
            (bpe, None, Some(pretok::for_gguf_pre(pre_name)?), vec![DecoderStep::ByteLevel])
        }
        TokenizerModel::SentencePieceBpe => {
            let opts = BpeOptions { byte_fallback: true, unk_id: unk, fuse_unk: false, ignore_merges: false };
            let mergeable: Vec<bool> =
                (0..n).map(|i| matches!(kind(i), TokenType::Normal | TokenType::UserDefined)).collect();
            let bpe = if spec.merges.is_empty() {
                if spec.scores.is_empty() {
                    return Err(TokenizerError::Invalid("a SentencePiece vocabulary needs scores or merges".into()));
                }
                Bpe::from_scores(&vocab, &spec.scores, &mergeable, opts)?
            } else {
                Bpe::from_merges(&vocab, &parse_merges(&spec.merges)?, opts)?
            };
            let normalizer = Normalizer::Sequence(vec![
                Normalizer::Prepend("▁".into()),
                Normalizer::ReplaceString { pattern: " ".into(), content: "▁".into() },
            ]);
            let steps = vec![
                DecoderStep::Replace { pattern: "▁".into(), content: " ".into() },
                DecoderStep::ByteFallback,
                DecoderStep::Fuse,
                DecoderStep::Strip { content: ' ', start: 1, stop: 0 },
            ];
            (bpe, Some(normalizer), None, steps)
        }
    };
    let decoder = DecodePlan::new(Some(steps), &vocab.tokens)?;
    let mut prefix = Vec::new();
    let mut suffix = Vec::new();
    if spec.add_bos_token {
        prefix.push(bos.ok_or_else(|| TokenizerError::Invalid("add_bos_token is set but there is no BOS id".into()))?);
    }
    if spec.add_eos_token {
        suffix.push(eos.ok_or_else(|| TokenizerError::Invalid("add_eos_token is set but there is no EOS id".into()))?);
    }
    let extra_eos = spec.eos_token_ids.iter().map(|&id| valid("EOS", Some(id))).collect::<Result<Vec<_>, _>>()?;
    Ok(Parts {
        vocab,
        bpe,
        added,
        normalizer,
        pre,
        prefix,
        suffix,
        decoder,
        bos,
        eos,
        extra_eos: extra_eos.into_iter().flatten().collect(),
        chat_template: spec.chat_template,
        clean_up_spaces: false,
    })
}

/// "left right" strings → pairs (splitting at the first space, as llama.cpp does).
pub(crate) fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>, TokenizerError> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
            _ => Err(TokenizerError::Invalid(format!("merge #{i} {m:?} is not \"left right\""))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Tokenizer;
    use super::*;

    /// A small Llama-2-like vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then pieces.
    pub(crate) fn spm_spec() -> TokenizerSpec {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        types.extend(std::iter::repeat_n(TokenType::Byte, 256));
        let pieces = [
            ("▁", -1.0),
            ("H", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("w", -2.0),
            ("r", -2.0),
            ("d", -2.0),
            ("!", -2.0),
            ("ll", -3.0),
            ("▁H", -4.0),
            ("llo", -5.0),
            ("▁He", -6.0),
            ("▁Hello", -7.0),
            ("▁w", -8.0),
            ("or", -9.0),
            ("▁wor", -10.0),
            ("ld", -11.0),
            ("▁world", -12.0),
            ("▁Hell", -13.0),
            ("你", -2.0),
        ];
        let mut scores = vec![0.0f32; tokens.len()];
        for (p, s) in pieces {
            tokens.push(p.into());
            types.push(TokenType::Normal);
            scores.push(s);
        }
        TokenizerSpec {
            model: TokenizerModel::SentencePieceBpe,
            tokens,
            token_types: types,
            scores,
            merges: vec![],
            pre: None,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            eos_token_ids: vec![],
            unk_token_id: Some(0),
            pad_token_id: None,
            add_bos_token: true,
            add_eos_token: false,
            chat_template: None,
        }
    }

    fn names(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| t.id_to_token(i).unwrap().to_string()).collect()
    }

    #[test]
    fn sentencepiece_merges_by_score_with_byte_fallback() {
        let tok = Tokenizer::from_spec(spm_spec()).unwrap();
        let ids = tok.encode("Hello world!", true).unwrap();
        assert_eq!(names(&tok, &ids), ["<s>", "▁Hello", "▁world", "!"]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "Hello world!");
        assert_eq!(tok.decode(&ids, false).unwrap(), "<s> Hello world!");
        // "é" is not in the vocabulary: two byte tokens; "你" is.
        let ids = tok.encode("Hé 你", false).unwrap();
        assert_eq!(names(&tok, &ids), ["▁H", "<0xC3>", "<0xA9>", "▁", "你"]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "Hé 你");
        // Special tokens in text are matched, and the text after them gets its own "▁".
        let ids = tok.encode("Hello</s>world", false).unwrap();
        assert_eq!(names(&tok, &ids), ["▁Hello", "</s>", "▁world"]);
        assert_eq!(tok.bos_token_id(), Some(1));
        assert_eq!(tok.eos_token_ids(), [2]);
        assert!(tok.is_special(1) && tok.is_special(0) && !tok.is_special(300));
        assert!(matches!(tok.decode(&[9999], false), Err(TokenizerError::UnknownId { id: 9999, .. })));
    }

    #[test]
    fn bad_specs_are_errors() {
        let mut spec = spm_spec();
        spec.bos_token_id = Some(100_000);
        assert!(Tokenizer::from_spec(spec).unwrap_err().to_string().contains("BOS id 100000"));
        let mut spec = spm_spec();
        spec.scores.clear();
        assert!(Tokenizer::from_spec(spec).is_err());
        let mut spec = spm_spec();
        spec.model = TokenizerModel::ByteLevelBpe;
        spec.merges = vec!["nospace".into()];
        assert!(Tokenizer::from_spec(spec).unwrap_err().to_string().contains("nospace"));
    }
}
