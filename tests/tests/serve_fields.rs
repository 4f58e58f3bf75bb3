//! Issue 20, item 10: fields the server does not implement are refused with a 400 naming the
//! field instead of being accepted and ignored; the same fields set to what the server does
//! anyway (empty, null, defaults) are accepted.

mod serve_support;

use rtllm::runtime::executor::ExecutorConfig;
use rtllm::serve::ServeConfig;
use serde_json::{json, Value};
use serve_support::{assert_error, load, post, start, MODEL};

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

#[tokio::test]
async fn unsupported_fields_are_400s_naming_the_field() {
    let Some(llm) = load(ExecutorConfig::default()) else { return };
    let server = start(llm, ServeConfig::new(MODEL), 2);
    let completion = json!({"prompt": "Hello", "max_tokens": 2, "temperature": 0});
    let chat = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0});
    let refused = [
        ("response_format", json!({"type": "json_object"})),
        ("logit_bias", json!({"42": 100})),
        ("tools", json!([{"type": "function", "function": {"name": "f", "parameters": {}}}])),
        ("tool_choice", json!("required")),
        ("use_beam_search", json!(true)),
        ("guided_json", json!({"type": "object"})),
        ("logprobs_typo", json!(3)),
    ];
    for (field, value) in &refused {
        for (path, body) in [("/v1/completions", &completion), ("/v1/chat/completions", &chat)] {
            let (status, _, out) = post(&server, path, &with(body.clone(), field, value.clone())).await;
            assert_error(status, &out, 400, Some(field), &format!("{path} {field}"));
        }
    }
    let harmless = [
        ("response_format", json!({"type": "text"})),
        ("logit_bias", json!({})),
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("use_beam_search", json!(false)),
        ("guided_json", Value::Null),
        ("user", json!("someone")),
    ];
    for (field, value) in &harmless {
        for (path, body) in [("/v1/completions", &completion), ("/v1/chat/completions", &chat)] {
            let (status, _, out) = post(&server, path, &with(body.clone(), field, value.clone())).await;
            assert_eq!(status, 200, "{path} {field} = {value}: {out}");
        }
    }
}
