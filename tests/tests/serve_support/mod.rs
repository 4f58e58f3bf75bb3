//! Shared by the server hardening tests (`serve_*.rs`): the default model loaded with a given
//! executor config, a server over it started in-process with a given `ServeConfig` on a runtime
//! of its own (and shut down on demand), and HTTP helpers: JSON posts, SSE payloads, raw TCP.

#![allow(dead_code)]

use rtllm::api::Llm;
use rtllm::model::default_model_path;
use rtllm::runtime::executor::ExecutorConfig;
use rtllm::serve::{bind, ServeConfig};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MODEL: &str = "smollm2-test";

/// The default model behind an executor configured by `executor` (None, with a note, when the
/// model is not fetched).
pub fn load(executor: ExecutorConfig) -> Option<Arc<Llm>> {
    if !default_model_path().exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", default_model_path().display());
        return None;
    }
    let registry = Arc::new(rtllm_tests::registry_with(rtllm_tests::builtin_plugin_files()));
    Some(Arc::new(
        Llm::builder().registry(registry).executor_config(executor).build().expect("the default model loads"),
    ))
}

/// A server running on a thread of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: std::sync::Mutex<mpsc::Receiver<()>>,
}

/// Starts a server over `llm` on a runtime of `workers` threads; returns once it listens.
pub fn start(llm: Arc<Llm>, config: ServeConfig, workers: usize) -> TestServer {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (stopped_tx, stopped) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("rt");
        rt.block_on(async move {
            let server = bind("127.0.0.1:0", llm, config).await.expect("binds");
            ready_tx.send(server.local_addr()).expect("sends the address");
            server
                .run_until(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serves");
        });
        let _ = stopped_tx.send(());
    });
    let addr = ready_rx.recv().expect("the server starts");
    TestServer { addr, stop: Some(stop), stopped: std::sync::Mutex::new(stopped) }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a graceful shutdown (as a signal would).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether the server has returned from `run_until` within `deadline` (a hang detector).
    pub fn stopped_within(&self, deadline: Duration) -> bool {
        self.stopped.lock().map(|r| r.recv_timeout(deadline).is_ok()).unwrap_or(false)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().expect("client")
}

/// POSTs a JSON body; the status, the headers and the JSON answer (Null when not JSON).
pub async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client().post(server.url(path)).json(body).send().await.expect("sends");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string)).collect()
}

/// Asserts an OpenAI-style error body with `status` (and the field at fault, when given).
pub fn assert_error(status: u16, body: &Value, want: u16, param: Option<&str>, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    assert!(e["type"].as_str().is_some() && e.get("param").is_some() && e.get("code").is_some(), "{what}: {body}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{what}: {body}");
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes it (or 30 s pass).
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP answer.
pub fn raw_json(answer: &str) -> Value {
    answer.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null)
}

/// Whether the server closes `stream` (EOF) within `deadline`, reading and dropping whatever
/// it sends before.
pub fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Polls `cond` until it holds or `deadline` passes (a hang detector, not a speed check).
pub async fn eventually(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
