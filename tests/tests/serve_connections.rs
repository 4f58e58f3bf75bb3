//! Issue 20, item 2: connections under abuse. With a small connection limit and short
//! timeouts on the default model: a flood of idle connections (and half-sent headers) cannot
//! lock a real client out of /health (the longest-idle connection makes room); a half-sent
//! header and an idle keep-alive connection are closed by their timeouts; when every
//! connection has a request running, a new one is answered 503 with a JSON body; and a
//! graceful shutdown does not wait on a connection that sent half a header.

mod serve_support;

use rtllm::runtime::executor::ExecutorConfig;
use rtllm::serve::{ConnectionLimits, ServeConfig};
use serde_json::json;
use serve_support::{client, closed_within, load, raw_json, start, TestServer, MODEL};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MAX_CONNECTIONS: usize = 8;

fn config() -> ServeConfig {
    let mut config = ServeConfig::new(MODEL);
    config.connections = ConnectionLimits {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: Duration::from_secs(2),
        keep_alive_timeout: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(5),
    };
    config
}

fn server() -> Option<TestServer> {
    Some(start(load(ExecutorConfig::default())?, config(), 2))
}

async fn health(server: &TestServer) -> u16 {
    client().get(server.url("/health")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn idle_and_half_sent_connections_cannot_lock_health_out() {
    let Some(server) = server() else { return };
    let mut held = Vec::new();
    for i in 0..20 * MAX_CONNECTIONS {
        let mut s = TcpStream::connect(server.addr).expect("connects");
        if i % 2 == 0 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").expect("half a header");
        }
        held.push(s);
    }
    for _ in 0..5 {
        assert_eq!(health(&server).await, 200, "a real client gets through {} idle connections", held.len());
    }
}

#[tokio::test]
async fn timeouts_close_half_sent_headers_and_idle_keep_alive_connections() {
    let Some(server) = server() else { return };
    let mut half = TcpStream::connect(server.addr).expect("connects");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").expect("writes");
    assert!(closed_within(&mut half, Duration::from_secs(30)), "a half-sent header is closed by the header timeout");

    let mut idle = TcpStream::connect(server.addr).expect("connects");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("writes");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(30)), "an idle keep-alive connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_beyond_the_limit_are_refused_with_a_json_503() {
    let Some(server) = server() else { return };
    let body = json!({"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": true, "stream": true});
    let mut streams = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let r = client().post(server.url("/v1/completions")).json(&body).send().await.expect("sends");
        assert_eq!(r.status().as_u16(), 200);
        streams.push(r);
    }
    let answer = tokio::task::spawn_blocking({
        let addr = server.addr;
        move || serve_support::raw(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    })
    .await
    .expect("reads");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(raw_json(&answer)["error"]["code"], "too_many_connections", "{answer}");
    drop(streams);
    let mut ok = false;
    for _ in 0..100 {
        if health(&server).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "room again once the streams are gone");
}

#[test]
fn shutdown_does_not_wait_on_a_half_sent_header() {
    let Some(mut server) = server() else { return };
    let mut half = TcpStream::connect(server.addr).expect("connects");
    half.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le").expect("writes");
    server.begin_shutdown();
    assert!(server.stopped_within(Duration::from_secs(60)), "the shutdown hangs on a half-sent header");
    assert!(closed_within(&mut half, Duration::from_secs(5)));
    assert!(TcpStream::connect(server.addr).is_err(), "no longer listening");
}
