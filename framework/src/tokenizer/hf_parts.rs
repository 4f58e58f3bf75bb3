//! Parsers for the components of an HF `tokenizer.json`: normalizer, pre-tokenizer, decoder
//! and post-processor. Anything not supported is an error that names the component.

use serde_json::Value;

use super::decode::DecoderStep;
use super::normalize::Normalizer;
use super::pretok::{self, PreTokenizer, PrependScheme, SplitBehavior};
use super::TokenizerError;

fn unsupported(what: &str, v: &Value) -> TokenizerError {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("<no type>");
    TokenizerError::Unsupported(format!("{what} \"{ty}\""))
}

fn field<'a>(v: &'a Value, what: &str, key: &str) -> Result<&'a Value, TokenizerError> {
    v.get(key).ok_or_else(|| TokenizerError::Invalid(format!("{what} has no \"{key}\" field")))
}

fn str_field<'a>(v: &'a Value, what: &str, key: &str) -> Result<&'a str, TokenizerError> {
    field(v, what, key)?
        .as_str()
        .ok_or_else(|| TokenizerError::Invalid(format!("{what} field \"{key}\" is not a string")))
}

fn bool_or(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn list<'a>(v: &'a Value, what: &str, key: &str) -> Result<&'a Vec<Value>, TokenizerError> {
    field(v, what, key)?
        .as_array()
        .ok_or_else(|| TokenizerError::Invalid(format!("{what} field \"{key}\" is not a list")))
}

fn one_char(s: &str, what: &str) -> Result<char, TokenizerError> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c),
        _ => Err(TokenizerError::Unsupported(format!("{what} {s:?}: expected one character"))),
    }
}

/// `{"String": ".."}` or `{"Regex": ".."}`.
enum Pattern<'a> {
    String(&'a str),
    Regex(&'a str),
}

fn pattern<'a>(v: &'a Value, what: &str) -> Result<Pattern<'a>, TokenizerError> {
    let p = field(v, what, "pattern")?;
    if let Some(s) = p.get("String").and_then(Value::as_str) {
        Ok(Pattern::String(s))
    } else if let Some(s) = p.get("Regex").and_then(Value::as_str) {
        Ok(Pattern::Regex(s))
    } else {
        Err(TokenizerError::Invalid(format!("{what} pattern {p} is neither String nor Regex")))
    }
}

pub fn normalizer(v: &Value) -> Result<Option<Normalizer>, TokenizerError> {
    if v.is_null() {
        return Ok(None);
    }
    let what = "normalizer";
    let ty = str_field(v, what, "type")?;
    Ok(Some(match ty {
        "NFC" => Normalizer::Nfc,
        "NFD" => Normalizer::Nfd,
        "NFKC" => Normalizer::Nfkc,
        "NFKD" => Normalizer::Nfkd,
        "Lowercase" => Normalizer::Lowercase,
        "Prepend" => Normalizer::Prepend(str_field(v, what, "prepend")?.to_owned()),
        "Strip" => Normalizer::Strip { left: bool_or(v, "strip_left", true), right: bool_or(v, "strip_right", true) },
        "Replace" => {
            let content = str_field(v, what, "content")?.to_owned();
            match pattern(v, what)? {
                Pattern::String(s) => Normalizer::ReplaceString { pattern: s.to_owned(), content },
                Pattern::Regex(r) => Normalizer::ReplaceRegex { pattern: pretok::compile(r)?, content },
            }
        }
        "Sequence" => {
            let steps = list(v, what, "normalizers")?;
            Normalizer::Sequence(steps.iter().filter_map(|s| normalizer(s).transpose()).collect::<Result<_, _>>()?)
        }
        _ => return Err(unsupported(what, v)),
    }))
}

pub fn pre_tokenizer(v: &Value) -> Result<Option<PreTokenizer>, TokenizerError> {
    if v.is_null() {
        return Ok(None);
    }
    let what = "pre_tokenizer";
    let ty = str_field(v, what, "type")?;
    Ok(Some(match ty {
        "ByteLevel" => PreTokenizer::ByteLevel {
            add_prefix_space: bool_or(v, "add_prefix_space", true),
            use_regex: bool_or(v, "use_regex", true),
        },
        "Split" => {
            let behavior = SplitBehavior::parse(str_field(v, what, "behavior")?)?;
            let invert = bool_or(v, "invert", false);
            let regex = match pattern(v, what)? {
                Pattern::Regex(r) => pretok::compile(r)?,
                Pattern::String(s) => pretok::compile(&fancy_regex::escape(s))?,
            };
            PreTokenizer::Split { pattern: regex, behavior, invert }
        }
        "Digits" => PreTokenizer::Digits { individual: bool_or(v, "individual_digits", false) },
        "Metaspace" => {
            let replacement = one_char(str_field(v, what, "replacement")?, "Metaspace replacement")?;
            PreTokenizer::Metaspace { replacement, scheme: prepend_scheme(v)?, split: bool_or(v, "split", true) }
        }
        "Sequence" => {
            let steps = list(v, what, "pretokenizers")?;
            PreTokenizer::Sequence(steps.iter().filter_map(|s| pre_tokenizer(s).transpose()).collect::<Result<_, _>>()?)
        }
        _ => return Err(unsupported(what, v)),
    }))
}

/// Metaspace's `prepend_scheme`, or the older `add_prefix_space` flag.
fn prepend_scheme(v: &Value) -> Result<PrependScheme, TokenizerError> {
    match v.get("prepend_scheme").and_then(Value::as_str) {
        Some("always") => Ok(PrependScheme::Always),
        Some("first") => Ok(PrependScheme::First),
        Some("never") => Ok(PrependScheme::Never),
        Some(other) => Err(TokenizerError::Unsupported(format!("Metaspace prepend_scheme {other:?}"))),
        None if bool_or(v, "add_prefix_space", true) => Ok(PrependScheme::Always),
        None => Ok(PrependScheme::Never),
    }
}

/// The decoder chain; `Ok(None)` when the file has no decoder.
pub fn decoder(v: &Value) -> Result<Option<Vec<DecoderStep>>, TokenizerError> {
    if v.is_null() {
        return Ok(None);
    }
    let mut steps = Vec::new();
    decoder_into(v, &mut steps)?;
    Ok(Some(steps))
}

fn decoder_into(v: &Value, out: &mut Vec<DecoderStep>) -> Result<(), TokenizerError> {
    let what = "decoder";
    match str_field(v, what, "type")? {
        "ByteLevel" => out.push(DecoderStep::ByteLevel),
        "ByteFallback" => out.push(DecoderStep::ByteFallback),
        "Fuse" => out.push(DecoderStep::Fuse),
        "Strip" => {
            let content = one_char(str_field(v, what, "content")?, "Strip content")?;
            let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
            out.push(DecoderStep::Strip { content, start: num("start"), stop: num("stop") });
        }
        "Replace" => match pattern(v, what)? {
            Pattern::String(s) => out.push(DecoderStep::Replace {
                pattern: s.to_owned(),
                content: str_field(v, what, "content")?.to_owned(),
            }),
            Pattern::Regex(_) => {
                return Err(TokenizerError::Unsupported("decoder Replace with a Regex pattern".into()))
            }
        },
        "Metaspace" => {
            let replacement = one_char(str_field(v, what, "replacement")?, "Metaspace replacement")?;
            out.push(DecoderStep::Metaspace { replacement, strip_first: prepend_scheme(v)? != PrependScheme::Never });
        }
        "Sequence" => {
            for d in list(v, what, "decoders")? {
                decoder_into(d, out)?;
            }
        }
        _ => return Err(unsupported(what, v)),
    }
    Ok(())
}

/// Ids a post-processor puts before and after a single sequence.
pub type Template = (Vec<u32>, Vec<u32>);

/// The post-processor's template; `None` when it adds nothing (no processor, ByteLevel).
pub fn post_processor(v: &Value) -> Result<Option<Template>, TokenizerError> {
    if v.is_null() {
        return Ok(None);
    }
    let what = "post_processor";
    match str_field(v, what, "type")? {
        "ByteLevel" => Ok(None),
        "Sequence" => {
            let mut found = None;
            for p in list(v, what, "processors")? {
                if let Some(x) = post_processor(p)? {
                    if found.is_some() {
                        return Err(TokenizerError::Unsupported("post_processor Sequence with two templates".into()));
                    }
                    found = Some(x);
                }
            }
            Ok(found)
        }
        "TemplateProcessing" => {
            let specials = field(v, what, "special_tokens")?;
            let (mut prefix, mut suffix, mut seen_a) = (Vec::new(), Vec::new(), false);
            for item in list(v, what, "single")? {
                if item.get("Sequence").is_some() {
                    seen_a = true;
                } else if let Some(st) = item.get("SpecialToken") {
                    let name = str_field(st, "TemplateProcessing SpecialToken", "id")?;
                    let ids =
                        specials.get(name).and_then(|s| s.get("ids")).and_then(Value::as_array).ok_or_else(|| {
                            TokenizerError::Invalid(format!("TemplateProcessing: no ids for {name:?}"))
                        })?;
                    for id in ids {
                        let id = id
                            .as_u64()
                            .and_then(|i| u32::try_from(i).ok())
                            .ok_or_else(|| TokenizerError::Invalid(format!("TemplateProcessing: bad id {id}")))?;
                        if seen_a {
                            suffix.push(id)
                        } else {
                            prefix.push(id)
                        }
                    }
                } else {
                    return Err(TokenizerError::Invalid(format!("TemplateProcessing item {item}")));
                }
            }
            Ok(Some((prefix, suffix)))
        }
        _ => Err(unsupported(what, v)),
    }
}
