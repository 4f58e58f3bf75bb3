//! `rtllm serve` end to end over real HTTP on loopback, on the default model: every bad input
//! is a 400 with an OpenAI-style error body, the API key guards every route but /health,
//! completions and chat (streaming with usage, and not), /health, /health_generate, /models and
//! /metrics, 64 concurrent streaming clients each get the text they get alone, and a client
//! that disconnects has its request cancelled and its KV blocks freed.

use futures_util::StreamExt;
use rtllm::api::Llm;
use rtllm::model::default_model_path;
use rtllm::serve::{bind, ServeConfig};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

const MODEL: &str = "smollm2-test";
const KEY: &str = "sk-test-key";

struct Shared {
    llm: Arc<Llm>,
    /// The open server.
    addr: SocketAddr,
    /// The same model behind an API key.
    keyed: SocketAddr,
}

/// Tests that assert the executor is idle take this for writing; the others for reading.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// One model and two servers for the whole test binary, on a runtime of their own.
fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if !default_model_path().exists() {
                eprintln!(
                    "skipping: {} is missing; run scripts/fetch-default-model.sh",
                    default_model_path().display()
                );
                return None;
            }
            let registry = Arc::new(rtllm_tests::registry_with(rtllm_tests::builtin_plugin_files()));
            let llm = Arc::new(Llm::builder().registry(registry).build().expect("the default model loads"));
            let (tx, rx) = std::sync::mpsc::channel();
            let server_llm = llm.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let open = bind("127.0.0.1:0", server_llm.clone(), ServeConfig::new(MODEL)).await.expect("binds");
                    let keyed_config = ServeConfig::new(MODEL).with_api_key(Some(KEY.into()));
                    let keyed = bind("127.0.0.1:0", server_llm, keyed_config).await.expect("binds");
                    tx.send((open.local_addr(), keyed.local_addr())).expect("sends the addresses");
                    let (a, b) = tokio::join!(open.run(), keyed.run());
                    a.and(b).expect("serves");
                });
            });
            let (addr, keyed) = rx.recv().expect("the server starts");
            Some(Shared { llm, addr, keyed })
        })
        .as_ref()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().expect("client")
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("sends");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The `data:` payloads of an SSE response, in order.
async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = resp.text().await.expect("reads the stream");
    body.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string)).collect()
}

/// The streamed text of choice 0 and the usage chunk, checking the framing.
async fn stream_completion(addr: SocketAddr, body: Value) -> (String, Option<Value>, Vec<Value>) {
    let resp = client().post(format!("http://{addr}/v1/completions")).json(&body).send().await.expect("sends");
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("JSON chunk")).collect();
    let mut text = String::new();
    let mut usage = None;
    for c in &chunks {
        assert_eq!(c["object"], "text_completion");
        if let Some(u) = c.get("usage") {
            assert!(c["choices"].as_array().unwrap().is_empty());
            usage = Some(u.clone());
        }
        for ch in c["choices"].as_array().unwrap() {
            text.push_str(ch["text"].as_str().unwrap());
        }
    }
    (text, usage, chunks)
}

fn assert_openai_error(status: u16, body: &Value, want_status: u16, want_param: Option<&str>, what: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    assert_eq!(e["type"], "invalid_request_error", "{what}: {body}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{what}: {body}");
    if let Some(p) = want_param {
        assert_eq!(e["param"], p, "{what}: {body}");
    }
}

#[tokio::test]
async fn bad_inputs_are_400s_with_an_openai_error_body() {
    let Some(s) = shared() else { return };
    let _g = EXCLUSIVE.read().await;
    let max = s.llm.max_seq_len();
    let long_ids: Vec<u32> = vec![100; max];
    let long_text = "hello ".repeat(max + 8);
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("/v1/completions", "{\"prompt\": \"hi\",".into(), None),
        ("/v1/completions", "not json at all".into(), None),
        ("/v1/completions", json!({"model": MODEL}).to_string(), None),
        ("/v1/completions", json!({"prompt": 5}).to_string(), None),
        ("/v1/completions", json!({"model": "gpt-4", "prompt": "hi"}).to_string(), Some("model")),
        ("/v1/completions", json!({"prompt": "hi", "temperature": -1}).to_string(), Some("temperature")),
        ("/v1/completions", json!({"prompt": "hi", "top_p": 1.5}).to_string(), Some("top_p")),
        ("/v1/completions", json!({"prompt": "hi", "top_k": -5}).to_string(), Some("top_k")),
        ("/v1/completions", json!({"prompt": "hi", "min_p": 2}).to_string(), Some("min_p")),
        ("/v1/completions", json!({"prompt": "hi", "presence_penalty": 3}).to_string(), Some("presence_penalty")),
        ("/v1/completions", json!({"prompt": "hi", "frequency_penalty": -2.5}).to_string(), Some("frequency_penalty")),
        ("/v1/completions", json!({"prompt": "hi", "repetition_penalty": 0}).to_string(), Some("repetition_penalty")),
        ("/v1/completions", json!({"prompt": "hi", "n": 2, "temperature": 0}).to_string(), Some("n")),
        ("/v1/completions", json!({"prompt": "hi", "logprobs": 50}).to_string(), Some("logprobs")),
        ("/v1/completions", json!({"prompt": "hi", "stop": ["a", ""]}).to_string(), Some("stop")),
        ("/v1/completions", json!({"prompt": "hi", "max_tokens": 4, "min_tokens": 9}).to_string(), Some("min_tokens")),
        ("/v1/completions", json!({"prompt": "hi", "max_tokens": 0}).to_string(), Some("max_tokens")),
        ("/v1/completions", json!({"prompt": "hi", "max_tokens": max}).to_string(), Some("max_tokens")),
        ("/v1/completions", json!({"prompt": long_ids}).to_string(), Some("prompt")),
        ("/v1/completions", json!({"prompt": long_text}).to_string(), Some("prompt")),
        ("/v1/completions", json!({"prompt": []}).to_string(), Some("prompt")),
        ("/v1/completions", json!({"prompt": [4_000_000_000u32]}).to_string(), Some("prompt")),
        ("/v1/chat/completions", "{\"messages\": [".into(), None),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), Some("messages")),
        (
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            Some("model"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": max}).to_string(),
            Some("max_completion_tokens"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": long_text}]}).to_string(),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}).to_string(),
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).to_string(),
            None,
        ),
    ];
    for (path, body, param) in &cases {
        let (status, json) = post(s.addr, path, body).await;
        assert_openai_error(status, &json, 400, *param, &format!("{path} {}", &body[..body.len().min(80)]));
    }
    let (status, json) = post(s.addr, "/v1/nothing", "{}").await;
    assert_eq!((status, &json["error"]["code"]), (404, &json!("not_found")));
    // The server is still up and idle.
    let r = client().get(format!("http://{}/health", s.addr)).send().await.expect("health");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn the_api_key_guards_every_route_but_health() {
    let Some(s) = shared() else { return };
    let _g = EXCLUSIVE.read().await;
    let c = client();
    let url = |p: &str| format!("http://{}{p}", s.keyed);
    assert_eq!(c.get(url("/health")).send().await.unwrap().status().as_u16(), 200);
    for path in ["/v1/models", "/metrics", "/health_generate"] {
        let r = c.get(url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_openai_error(status, &body, 401, None, path);
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let r = c.get(url(path)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a wrong key");
    }
    let r = c.post(url("/v1/completions")).json(&json!({"prompt": "hi", "max_tokens": 1})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c.get(url("/v1/models")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = json!({"prompt": "hi", "max_tokens": 1, "temperature": 0});
    let r = c.post(url("/v1/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn completions_and_chat_answer_whole_and_streamed() {
    let Some(s) = shared() else { return };
    let _g = EXCLUSIVE.read().await;
    let prompt = "The capital of France is";
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": true});
    let (status, whole) = post(s.addr, "/v1/completions", &body.to_string()).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["model"], MODEL);
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(" Paris"), "{text:?}");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    let prompt_len = s.llm.tokenizer().encode(prompt, true).unwrap().len();
    assert_eq!(
        whole["usage"],
        json!({"prompt_tokens": prompt_len, "completion_tokens": 8, "total_tokens": prompt_len + 8})
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (stream_text, usage, chunks) = stream_completion(s.addr, streamed).await;
    assert_eq!(stream_text, text, "streamed deltas add up to the whole answer");
    assert_eq!(usage, Some(whole["usage"].clone()));
    let finishes: Vec<&Value> =
        chunks.iter().flat_map(|c| c["choices"].as_array().unwrap()).map(|c| &c["finish_reason"]).collect();
    assert_eq!(finishes.last(), Some(&&json!("length")));
    assert!(finishes[..finishes.len() - 1].iter().all(|f| f.is_null()));

    // Several prompts, token-id prompts, logprobs.
    let ids = s.llm.tokenizer().encode(prompt, true).unwrap();
    let multi =
        json!({"prompt": [ids.clone(), ids], "max_tokens": 3, "temperature": 0, "ignore_eos": true, "logprobs": 2});
    let (status, out) = post(s.addr, "/v1/completions", &multi.to_string()).await;
    assert_eq!(status, 200, "{out}");
    let choices = out["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    assert_eq!(choices[1]["index"], 1);
    let lp = &choices[0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert!(lp["token_logprobs"][0].as_f64().unwrap() <= 0.0);

    // Chat: the template is applied and the turn ends with a stop.
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
                      "max_tokens": 24, "temperature": 0, "logprobs": true, "top_logprobs": 1});
    let (status, out) = post(s.addr, "/v1/chat/completions", &chat.to_string()).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["object"], "chat.completion");
    let msg = &out["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    let chat_text = msg["content"].as_str().unwrap().to_string();
    assert!(chat_text.contains("Paris"), "{chat_text:?}");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["choices"][0]["logprobs"]["content"][0]["top_logprobs"].as_array().unwrap().len(), 1);

    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    chat_stream["stream_options"] = json!({"include_usage": true});
    let resp = client().post(format!("http://{}/v1/chat/completions", s.addr)).json(&chat_stream).send().await.unwrap();
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap())
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, chat_text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage, &out["usage"]);
}

#[tokio::test]
async fn health_models_and_metrics() {
    let Some(s) = shared() else { return };
    let _g = EXCLUSIVE.read().await;
    let c = client();
    let url = |p: &str| format!("http://{}{p}", s.addr);
    assert_eq!(c.get(url("/health")).send().await.unwrap().status().as_u16(), 200);
    let r = c.get(url("/health_generate")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let models: Value = c.get(url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["max_model_len"], s.llm.max_seq_len());
    let (status, _) = post(
        s.addr,
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(s.addr, "/v1/completions", "{").await;
    assert_eq!(status, 400);
    let r = c.get(url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for needle in [
        "rtllm_http_requests_total{route=\"/v1/completions\",status=\"200\"}",
        "rtllm_http_requests_total{route=\"/v1/completions\",status=\"400\"}",
        "rtllm_http_requests_total{route=\"/health_generate\",status=\"200\"}",
        "# TYPE rtllm_time_to_first_token_seconds histogram",
        "rtllm_time_per_output_token_seconds_bucket{le=\"+Inf\"}",
        "rtllm_num_requests_waiting ",
        "rtllm_num_requests_running ",
        "rtllm_kv_cache_usage_ratio ",
        "rtllm_kv_cache_hit_rate ",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    let value = |name: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
    };
    // This process's server has served at least that 5-token prompt (nextest runs each test
    // in its own process; under `cargo test` the other tests add more).
    assert!(value("rtllm_prompt_tokens_total ") >= 5.0, "{text}");
    assert!(value("rtllm_generation_tokens_total ") >= 3.0);
    assert!(value("rtllm_time_to_first_token_seconds_count ") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_streams_match_their_text_alone() {
    let Some(s) = shared() else { return };
    let _g = EXCLUSIVE.read().await;
    let prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "My favourite colour is"];
    let body = |p: &str| json!({"prompt": p, "max_tokens": 8, "temperature": 0, "ignore_eos": true, "stream": true});
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(stream_completion(s.addr, body(p)).await.0);
    }
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (addr, b) = (s.addr, body(prompts[i % prompts.len()]));
            tokio::spawn(async move { stream_completion(addr, b).await.0 })
        })
        .collect();
    for (i, t) in futures_util::future::join_all(tasks).await.into_iter().enumerate() {
        let text = t.expect("the client task completes");
        assert_eq!(text, alone[i % prompts.len()], "client {i} ({:?})", prompts[i % prompts.len()]);
    }
}

#[tokio::test]
async fn a_disconnected_client_is_cancelled_and_its_blocks_freed() {
    let Some(s) = shared() else { return };
    let _g = EXCLUSIVE.write().await;
    let before = s.llm.stats().generated_tokens;
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "ignore_eos": true, "stream": true});
    let resp = client().post(format!("http://{}/v1/completions", s.addr)).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut bytes = resp.bytes_stream();
    let first = bytes.next().await.expect("a first chunk").expect("reads");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "), "{first:?}");
    // The executor publishes its stats after the step whose token the client may already have.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = s.llm.stats();
        if st.running_requests == 1 && st.kv.used_blocks > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the streaming request is not seen running: {st:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(bytes);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = s.llm.stats();
        if st.running_requests == 0 && st.waiting_requests == 0 && st.kv.used_blocks == 0 {
            assert!(st.generated_tokens - before < 400, "cancelled before max_tokens: {st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the request still runs after the client left: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = client().get(format!("http://{}/metrics", s.addr)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rtllm_num_requests_running 0\n"), "{metrics}");
    assert!(metrics.contains("rtllm_kv_cache_used_blocks 0\n"), "{metrics}");
}
