//! Normalizers: the text rewrites applied to each piece of input between added tokens
//! before pre-tokenization (HF `normalizer`: NFC/NFD/NFKC/NFKD, Lowercase, Prepend, Replace,
//! Strip, Sequence).

use fancy_regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::TokenizerError;

#[derive(Debug, Clone)]
pub enum Normalizer {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Lowercase,
    /// Prepends the string to every non-empty piece (Llama 2: `▁`).
    Prepend(String),
    /// Replaces every occurrence of a literal string.
    ReplaceString {
        pattern: String,
        content: String,
    },
    /// Replaces every match of a regex.
    ReplaceRegex {
        pattern: Regex,
        content: String,
    },
    /// Strips whitespace at the left and/or right end.
    Strip {
        left: bool,
        right: bool,
    },
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    pub fn apply(&self, text: &str) -> Result<String, TokenizerError> {
        Ok(match self {
            Normalizer::Nfc => text.nfc().collect(),
            Normalizer::Nfd => text.nfd().collect(),
            Normalizer::Nfkc => text.nfkc().collect(),
            Normalizer::Nfkd => text.nfkd().collect(),
            Normalizer::Lowercase => text.to_lowercase(),
            Normalizer::Prepend(p) => {
                if text.is_empty() {
                    String::new()
                } else {
                    format!("{p}{text}")
                }
            }
            Normalizer::ReplaceString { pattern, content } => {
                if pattern.is_empty() {
                    text.to_owned()
                } else {
                    text.replace(pattern.as_str(), content)
                }
            }
            Normalizer::ReplaceRegex { pattern, content } => {
                let mut out = String::with_capacity(text.len());
                let mut last = 0;
                for m in pattern.find_iter(text) {
                    let m = m.map_err(|e| TokenizerError::Regex(e.to_string()))?;
                    out.push_str(&text[last..m.start()]);
                    out.push_str(content);
                    last = m.end();
                }
                out.push_str(&text[last..]);
                out
            }
            Normalizer::Strip { left, right } => {
                let t = if *left { text.trim_start() } else { text };
                let t = if *right { t.trim_end() } else { t };
                t.to_owned()
            }
            Normalizer::Sequence(steps) => {
                let mut s = text.to_owned();
                for step in steps {
                    s = step.apply(&s)?;
                }
                s
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama2_style_sequence() {
        let n = Normalizer::Sequence(vec![
            Normalizer::Prepend("▁".into()),
            Normalizer::ReplaceString { pattern: " ".into(), content: "▁".into() },
        ]);
        assert_eq!(n.apply("Hello world").unwrap(), "▁Hello▁world");
        assert_eq!(n.apply("").unwrap(), "");
    }

    #[test]
    fn unicode_forms_and_regex() {
        assert_eq!(Normalizer::Nfc.apply("e\u{301}").unwrap(), "é");
        assert_eq!(Normalizer::Nfkc.apply("ﬁ").unwrap(), "fi");
        let r = Normalizer::ReplaceRegex { pattern: Regex::new(r" {2,}").unwrap(), content: " ".into() };
        assert_eq!(r.apply("a   b  c").unwrap(), "a b c");
        assert_eq!(Normalizer::Strip { left: true, right: false }.apply("  x ").unwrap(), "x ");
    }
}
