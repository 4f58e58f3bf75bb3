//! The `prompt` of /v1/completions in its four OpenAI forms (a string, strings, token ids,
//! token-id lists), parsed from the raw JSON with a bound on how many prompts it holds: the
//! parse stops at the first prompt past the bound, so a 4 MB list of a million prompts costs
//! the syntax check of the body, not a million allocations.

use super::error::ApiError;
use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// `prompt`: a string, a list of strings, token ids, or a list of token-id lists.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl PromptInput {
    /// Parses `raw`, refusing more than `max_prompts` prompts (400s naming `prompt`).
    pub fn parse(raw: &RawValue, max_prompts: usize) -> Result<PromptInput, ApiError> {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        PromptSeed { max_prompts }
            .deserialize(&mut de)
            .map_err(|e| ApiError::bad_request(format!("invalid prompt: {e}"), Some("prompt")))
    }

    /// How many prompts.
    pub fn count(&self) -> usize {
        match self {
            PromptInput::Text(_) | PromptInput::Tokens(_) => 1,
            PromptInput::Texts(v) => v.len(),
            PromptInput::TokenLists(v) => v.len(),
        }
    }
}

struct PromptSeed {
    max_prompts: usize,
}

/// The first element of a list decides the form.
#[derive(Deserialize)]
#[serde(untagged)]
enum First {
    Id(u32),
    Text(String),
    Ids(Vec<u32>),
}

impl<'de> DeserializeSeed<'de> for PromptSeed {
    type Value = PromptInput;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<PromptInput, D::Error> {
        de.deserialize_any(self)
    }
}

impl PromptSeed {
    /// The rest of a list of prompts, at most `max_prompts` in all.
    fn rest<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(&self, first: T, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut all = vec![first];
        while let Some(next) = seq.next_element()? {
            if all.len() == self.max_prompts {
                return Err(A::Error::custom(format!(
                    "more than {} prompts in one request (--max-prompts-per-request)",
                    self.max_prompts
                )));
            }
            all.push(next);
        }
        Ok(all)
    }
}

impl<'de> Visitor<'de> for PromptSeed {
    type Value = PromptInput;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a list of strings, a list of token ids or a list of token-id lists")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PromptInput, E> {
        Ok(PromptInput::Text(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptInput, A::Error> {
        Ok(match seq.next_element::<First>()? {
            None => PromptInput::TokenLists(Vec::new()),
            Some(First::Id(id)) => {
                let mut ids = vec![id];
                while let Some(id) = seq.next_element()? {
                    ids.push(id);
                }
                PromptInput::Tokens(ids)
            }
            Some(First::Text(t)) => PromptInput::Texts(self.rest(t, seq)?),
            Some(First::Ids(ids)) => PromptInput::TokenLists(self.rest(ids, seq)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, max: usize) -> Result<PromptInput, ApiError> {
        PromptInput::parse(&RawValue::from_string(s.to_string()).unwrap(), max)
    }

    #[test]
    fn prompts_in_every_openai_form() {
        assert_eq!(parse(r#""hi""#, 8).unwrap(), PromptInput::Text("hi".into()));
        assert_eq!(parse(r#"["a", "b"]"#, 8).unwrap(), PromptInput::Texts(vec!["a".into(), "b".into()]));
        assert_eq!(parse("[1, 2]", 8).unwrap(), PromptInput::Tokens(vec![1, 2]));
        assert_eq!(parse("[[1], [2, 3]]", 8).unwrap(), PromptInput::TokenLists(vec![vec![1], vec![2, 3]]));
        assert_eq!(parse("[]", 8).unwrap().count(), 0);
        for bad in ["3", "[1, \"a\"]", "[[1], 2]", "[-1]", "{}", "[4000000000000]"] {
            assert_eq!(parse(bad, 8).unwrap_err().param.as_deref(), Some("prompt"), "{bad}");
        }
    }

    #[test]
    fn lists_past_the_bound_are_refused_without_parsing_the_rest() {
        let many = format!("[{}]", vec!["[1]"; 1000].join(","));
        assert_eq!(parse(&many, 1000).unwrap().count(), 1000);
        // The third prompt is refused before the (badly typed) fourth is looked at.
        let e = parse(r#"[[1], [1], [1], "not ids"]"#, 2).unwrap_err();
        assert!(e.message.contains("more than 2 prompts"), "{}", e.message);
        assert!(parse(r#"["a", "b", "c"]"#, 2).is_err());
        assert_eq!(parse("[1, 2, 3, 4]", 2).unwrap().count(), 1, "token ids are one prompt");
    }
}
