//! Issue 20, item 9 (the server half): the HTTP layer's own answers carry OpenAI-style JSON
//! bodies (405 for a wrong method, 431 for too many or too large headers, 400 for a request
//! line that is not HTTP), and preparing requests (JSON, chat template, tokenizer) runs off the
//! async runtime: a server on one runtime thread answers /health throughout eight 4 MB prompts.

mod serve_support;

use rtllm::runtime::executor::ExecutorConfig;
use rtllm::serve::ServeConfig;
use serde_json::json;
use serve_support::{assert_error, client, load, raw, raw_json, start, MODEL};

#[tokio::test]
async fn framework_errors_have_json_bodies() {
    let Some(llm) = load(ExecutorConfig::default()) else { return };
    let server = start(llm, ServeConfig::new(MODEL), 2);
    let r = client().get(server.url("/v1/completions")).send().await.expect("sends");
    let status = r.status().as_u16();
    let body = r.json().await.expect("a JSON body");
    assert_error(status, &body, 405, None, "GET /v1/completions");
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let addr = server.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
        let big = format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(70 << 10));
        [
            raw(addr, format!("GET /health HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes()),
            raw(addr, big.as_bytes()),
            raw(addr, b"NOT HTTP AT ALL\r\n\r\n"),
        ]
    })
    .await
    .expect("reads");
    for (answer, want) in answers.iter().zip(["431", "431", "400"]) {
        if answer.is_empty() {
            // The server may close while the client still writes (a reset can drop the answer).
            continue;
        }
        assert!(answer.starts_with(&format!("HTTP/1.1 {want}")), "{answer}");
        let body = raw_json(answer);
        assert_error(want.parse().unwrap(), &body, want.parse().unwrap(), None, answer);
    }
    assert!(!answers[0].is_empty() && !answers[2].is_empty(), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_stays_up_while_huge_prompts_are_tokenized() {
    let Some(llm) = load(ExecutorConfig::default()) else { return };
    let mut config = ServeConfig::new(MODEL);
    config.preprocess_threads = 1;
    let server = start(llm, config, 1);
    let prompt = "lorem ipsum ".repeat(330_000);
    let big: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (server.url("/v1/completions"), json!({"prompt": prompt.clone(), "max_tokens": 1}));
            tokio::spawn(async move {
                let r = client().post(url).json(&body).send().await.expect("sends");
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
            })
        })
        .collect();
    let mut healthy = 0;
    while big.iter().any(|t| !t.is_finished()) {
        let r = client().get(server.url("/health")).send().await.expect("health answers");
        assert_eq!(r.status().as_u16(), 200);
        healthy += 1;
    }
    assert!(healthy > 0);
    for t in big {
        let (status, body) = t.await.expect("completes");
        assert_error(status, &body, 400, Some("prompt"), "a 4 MB prompt");
        assert_eq!(body["error"]["code"], "context_length_exceeded", "{body}");
    }
}
