//! Issue 20, item 1: one request must not deny service. Over HTTP on the default model: a
//! completions request with 100 000 (or 800 000) prompts is refused with a 400 before anything
//! is queued; a full executor queue answers 429 with `Retry-After` and an OpenAI-style body; a
//! request too large for the queue ever is a 400; queued requests take no thread each; and a
//! client that leaves frees its queue places at once, while the batch slot they waited for is
//! still busy (not when they would have been scheduled). Then normal requests are served.

mod serve_support;

use rtllm::api::Llm;
use rtllm::runtime::executor::{ExecutorConfig, QueueLimits};
use rtllm::sampling::SamplingParams;
use rtllm::serve::ServeConfig;
use serde_json::json;
use serve_support::{assert_error, client, eventually, load, post, start, TestServer, MODEL};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const MAX_QUEUED: usize = 64;
const MAX_QUEUED_TOKENS: usize = 4096;

/// One batch slot and a small queue, so a few requests fill it.
fn shared() -> Option<&'static (Arc<Llm>, TestServer)> {
    static SHARED: OnceLock<Option<(Arc<Llm>, TestServer)>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let mut executor = ExecutorConfig::with_max_batch_size(1);
            executor.queue = QueueLimits { max_queued_requests: MAX_QUEUED, max_queued_tokens: MAX_QUEUED_TOKENS };
            let llm = load(executor)?;
            let server = start(llm.clone(), ServeConfig::new(MODEL), 2);
            Some((llm, server))
        })
        .as_ref()
}

/// Threads of this process (Linux), or None.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

async fn chat_works(server: &TestServer) {
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0});
    let (status, _, out) = post(server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{out}");
}

#[tokio::test]
async fn huge_prompt_lists_are_refused_before_anything_is_queued() {
    let Some((llm, server)) = shared() else { return };
    let _g = EXCLUSIVE.lock().await;
    let before = llm.stats().completed_requests;
    for count in [100_000usize, 800_000] {
        let prompts = vec![vec![1u32]; count];
        let (status, _, body) = post(server, "/v1/completions", &json!({"prompt": prompts})).await;
        assert_error(status, &body, 400, Some("prompt"), &format!("{count} prompts"));
        assert!(body["error"]["message"].as_str().unwrap().contains("more than 64 prompts"), "{body}");
        assert_eq!(llm.queued(), (0, 0));
    }
    // Too large for the queue ever (more tokens than it holds): a 400, not a 429.
    let long = vec![vec![1u32; MAX_QUEUED_TOKENS / 2 + 10]; 2];
    let (status, _, body) = post(server, "/v1/completions", &json!({"prompt": long, "max_tokens": 1})).await;
    assert_error(status, &body, 400, Some("prompt"), "more tokens than the queue holds");
    assert_eq!(llm.stats().completed_requests, before, "nothing reached the executor");
    chat_works(server).await;
}

/// The tests that watch the executor's queue run one at a time.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_a_429_and_a_gone_client_frees_it_at_once() {
    let Some((llm, server)) = shared() else { return };
    let _g = EXCLUSIVE.lock().await;
    // A long request holds the only batch slot.
    let params = SamplingParams { max_tokens: 4000, ignore_eos: true, ..SamplingParams::greedy(4000) };
    let mut long = llm.generate_async_stream("Once upon a time", &params).expect("submits");
    assert!(long.next().await.is_some_and(|o| o.is_ok()), "the long request runs");
    let threads_before = threads();
    // One client fills the queue with as many prompts as it holds, and waits.
    let prompts = vec![vec![1u32, 2, 3]; MAX_QUEUED];
    let body = json!({"prompt": prompts, "max_tokens": 8, "stream": true});
    let waiting = client().post(server.url("/v1/completions")).json(&body).send().await.expect("sends");
    assert_eq!(waiting.status().as_u16(), 200);
    assert_eq!(llm.queued(), (MAX_QUEUED, MAX_QUEUED * 3));
    if let (Some(before), Some(now)) = (threads_before, threads()) {
        assert!(now < before + MAX_QUEUED / 2, "{MAX_QUEUED} queued requests took threads: {before} -> {now}");
    }
    // The queue is full: a 429 with Retry-After, before any work.
    let (status, headers, body) = post(server, "/v1/completions", &json!({"prompt": "Hello", "max_tokens": 2})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("queue is full")), "{body}");
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let (status, _, _) = post(server, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 429, "chat is admitted the same way");
    // The waiting client leaves: its places are free while the slot is still busy.
    drop(waiting);
    assert!(
        eventually(Duration::from_secs(30), || llm.queued() == (0, 0)).await,
        "the gone client's requests still wait: {:?}",
        llm.queued()
    );
    assert_eq!(llm.stats().running_requests, 1, "the long request still runs");
    drop(long);
    assert!(eventually(Duration::from_secs(30), || llm.stats().running_requests == 0).await);
    chat_works(server).await;
}
