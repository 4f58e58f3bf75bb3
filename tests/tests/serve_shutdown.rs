//! Issue 20, item 3: SIGTERM (what Docker and Kubernetes send) drains like SIGINT. The
//! `rtllm serve` binary on the default model gets SIGTERM while a stream runs: the stream
//! finishes whole with `[DONE]` and the process exits 0; with a short `--shutdown-timeout` a
//! stream that cannot finish in time ends with an error event, then `[DONE]`, and the process
//! still exits 0.

mod serve_support;

use futures_util::StreamExt;
use rtllm::model::default_model_path;
use serde_json::{json, Value};
use serve_support::{client, sse_payloads};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `rtllm serve` and its address.
struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Option<Serve> {
    if !default_model_path().exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", default_model_path().display());
        return None;
    }
    let mut child = Command::new(rtllm_tests::rtllm_binary())
        .args(["serve", "--port", "0", "--no-api-key"])
        .args(extra)
        .env("RTLLM_PLUGIN_PATH", rtllm_tests::plugin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts rtllm serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reads stdout");
        if let Some(u) = line.strip_prefix("listening on ") {
            url = Some(u.trim().to_string());
            break;
        }
    }
    let url = url.expect("rtllm serve prints its address");
    Some(Serve { child, url })
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("runs kill");
    assert!(status.success());
}

/// Exit status within a generous deadline (a hang detector).
fn exit_code(child: &mut Child) -> Option<i32> {
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        if let Some(status) = child.try_wait().expect("waits") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rtllm serve did not exit after SIGTERM");
}

/// Streams a completion, sends SIGTERM once the first chunk arrived, returns the payloads.
async fn stream_through_sigterm(s: &Serve, body: Value) -> Vec<String> {
    let resp = client().post(format!("{}/v1/completions", s.url)).json(&body).send().await.expect("sends");
    assert_eq!(resp.status().as_u16(), 200);
    let mut bytes = resp.bytes_stream();
    let mut text = String::new();
    let mut signalled = false;
    while let Some(chunk) = bytes.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is not cut")));
        if !signalled && text.contains("data: ") {
            sigterm(&s.child);
            signalled = true;
        }
    }
    sse_payloads(&text)
}

#[tokio::test]
async fn sigterm_lets_a_running_stream_finish_and_exits_0() {
    let Some(mut s) = serve(&["--shutdown-timeout", "120"]) else { return };
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "ignore_eos": true, "stream": true});
    let events = stream_through_sigterm(&s, body).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("JSON")).collect();
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "{events:?}");
    let finish = chunks.iter().flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default()).last();
    assert_eq!(finish.map(|c| c["finish_reason"].clone()), Some(json!("length")), "the stream ran to its end");
    assert_eq!(exit_code(&mut s.child), Some(0));
}

#[tokio::test]
async fn past_the_shutdown_timeout_a_stream_ends_with_an_error_event_and_done() {
    let Some(mut s) = serve(&["--shutdown-timeout", "1"]) else { return };
    let body = json!({"prompt": "Once upon a time", "temperature": 0, "ignore_eos": true, "stream": true});
    let events = stream_through_sigterm(&s, body).await;
    let n = events.len();
    assert!(n >= 2 && events[n - 1] == "[DONE]", "{events:?}");
    let error: Value = serde_json::from_str(&events[n - 2]).expect("JSON");
    assert_eq!(error["error"]["code"], "shutting_down", "{error}");
    assert_eq!(exit_code(&mut s.child), Some(0));
}
