//! Serves one accepted connection: HTTP/1.1 through hyper with a header-read timeout and a
//! bounded head size, hyper's own error answers given JSON bodies (`error_io`), the router
//! behind a service that marks each request in progress (until its response body is done),
//! and a watchdog that closes the connection gracefully when it has been idle for
//! `keep_alive_timeout`, when a newer connection evicts it, or when the server drains.

use super::config::ConnectionLimits;
use super::connections::{Conn, Connections};
use super::error_io::JsonErrorIo;
use super::shutdown::{reached, Phase};
use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Most bytes of a request head (request line and headers); beyond it, a 431.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// Serves `stream` until it closes.
pub async fn serve(
    stream: TcpStream,
    conn: Conn,
    set: Arc<Connections>,
    app: Router,
    limits: ConnectionLimits,
    mut phase: watch::Receiver<Phase>,
) {
    let _ = stream.set_nodelay(true);
    let id = conn.id;
    let requests = set.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = requests.begin(id);
        let mut app = app.clone();
        async move {
            let response = match tower_service::Service::call(&mut app, req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            // The request stays in progress until its body (a stream, perhaps) is done.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_header_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(JsonErrorIo::new(stream)), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_check = match set.idle_since(id) {
            Some(since) => Instant::from_std(since) + limits.keep_alive_timeout,
            None => Instant::now() + limits.keep_alive_timeout,
        };
        tokio::select! {
            _ = connection.as_mut() => break,
            _ = conn.close.notified(), if !closing => closing = true,
            _ = reached(&mut phase, Phase::Draining), if !closing => closing = true,
            _ = tokio::time::sleep_until(idle_check), if !closing => {
                closing = set.idle_since(id).is_some_and(|t| t.elapsed() >= limits.keep_alive_timeout);
            }
        }
        if closing {
            // An idle (or half-sent) connection closes now, a busy one after its response.
            connection.as_mut().graceful_shutdown();
        }
    }
}
