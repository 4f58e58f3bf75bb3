//! Request fields the server does not implement. A body's fields that no request struct
//! reads are collected (`extra`) and checked here: a known OpenAI or vLLM field is accepted
//! only when absent, `null`, or set to what the server does anyway (`"tools": []`,
//! `"response_format": {"type": "text"}`, ...), and refused with a 400 naming it otherwise; an
//! unknown field is refused as OpenAI does.

use super::error::ApiError;
use serde_json::{Map, Value};

/// A field and whether a value of it changes nothing here.
type Harmless = fn(&Value) -> bool;

fn empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

fn any(_: &Value) -> bool {
    true
}

/// Known fields that are not implemented, and which of their values are harmless.
const KNOWN: &[(&str, Harmless)] = &[
    ("response_format", |v| v.get("type").and_then(Value::as_str) == Some("text")),
    ("logit_bias", empty),
    ("tools", empty),
    ("tool_choice", |v| v.as_str() == Some("none") || v.as_str() == Some("auto")),
    ("functions", empty),
    ("function_call", |v| v.as_str() == Some("none") || v.as_str() == Some("auto")),
    ("parallel_tool_calls", any),
    ("use_beam_search", is_false),
    ("length_penalty", |v| v.as_f64() == Some(1.0)),
    ("early_stopping", is_false),
    ("guided_json", empty),
    ("guided_regex", empty),
    ("guided_choice", empty),
    ("guided_grammar", empty),
    ("guided_decoding_backend", any),
    ("guided_whitespace_pattern", empty),
    ("structured_outputs", empty),
    ("prompt_logprobs", |v| v.as_u64() == Some(0)),
    ("truncate_prompt_tokens", |_| false),
    ("logits_processors", empty),
    ("allowed_token_ids", empty),
    ("bad_words", empty),
    ("chat_template", empty),
    ("chat_template_kwargs", empty),
    ("add_generation_prompt", |v| v == &Value::Bool(true)),
    ("continue_final_message", is_false),
    ("add_special_tokens", any),
    ("spaces_between_special_tokens", |v| v == &Value::Bool(true)),
    ("documents", empty),
    ("modalities", |v| v.as_array().is_some_and(|a| a.iter().all(|m| m.as_str() == Some("text")))),
    ("audio", empty),
    ("prediction", empty),
    ("reasoning_effort", empty),
    ("web_search_options", empty),
    ("store", is_false),
    ("metadata", any),
    ("service_tier", |v| v.as_str() == Some("auto") || v.as_str() == Some("default")),
    ("priority", |v| v.as_i64() == Some(0)),
];

/// Refuses the first field of `extra` that would be ignored.
pub fn refuse_unsupported(extra: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in extra {
        if value.is_null() {
            continue;
        }
        match KNOWN.iter().find(|(known, _)| known == name) {
            Some((_, harmless)) if harmless(value) => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    format!("`{name}` is not supported by this server (leave it out)"),
                    Some(name),
                )
                .with_code("unsupported_parameter"))
            }
            None => {
                return Err(ApiError::bad_request(format!("unrecognized request argument `{name}`"), Some(name))
                    .with_code("unknown_parameter"))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), Option<String>> {
        refuse_unsupported(v.as_object().unwrap()).map_err(|e| e.param)
    }

    #[test]
    fn ignored_fields_are_refused_unless_harmless() {
        assert_eq!(check(json!({"response_format": {"type": "json_object"}})), Err(Some("response_format".into())));
        assert_eq!(check(json!({"logit_bias": {"50256": -100}})), Err(Some("logit_bias".into())));
        assert_eq!(check(json!({"tools": [{"type": "function"}]})), Err(Some("tools".into())));
        assert_eq!(check(json!({"use_beam_search": true})), Err(Some("use_beam_search".into())));
        assert_eq!(check(json!({"frobnicate": 1})), Err(Some("frobnicate".into())));
        assert!(check(
            json!({"response_format": {"type": "text"}, "logit_bias": {}, "tools": [], "tool_choice": "none",
                             "use_beam_search": false, "store": false, "guided_json": null})
        )
        .is_ok());
    }
}
