//! The accept loop and graceful shutdown of a bound [`Server`]: each accepted connection takes
//! a place among [`Connections`] (or is answered 503 and closed when every place is busy) and
//! is served on a task of its own; on shutdown the listener closes, every connection finishes
//! its request and closes, and after `shutdown_timeout` the streams still running are ended
//! (an error event, then `[DONE]`) and whatever is left is dropped.

use super::connections::Connections;
use super::error::ApiError;
use super::shutdown::Phase;
use super::{conn, AppState, ServeError};
use axum::http::StatusCode;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long ended streams get to be written before the last connections are dropped.
const FINAL_GRACE: Duration = Duration::from_secs(2);

/// A bound, not yet running server.
pub struct Server {
    pub(super) listener: TcpListener,
    pub(super) app: Router,
    pub(super) state: Arc<AppState>,
    pub(super) addr: SocketAddr,
}

impl Server {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends.
    pub async fn run(self) -> Result<(), ServeError> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then drains: no new connection or request is
    /// admitted, running requests finish within `shutdown_timeout`, streams still running
    /// then end with an error event and `[DONE]`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let Server { listener, app, state, .. } = self;
        let limits = state.config.connections;
        let set = Connections::new(limits.max_connections);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match set.admit() {
                        Some(place) => {
                            let phase = state.shutdown.subscribe();
                            tasks.spawn(conn::serve(stream, place, set.clone(), app.clone(), limits, phase));
                        }
                        None => refuse(stream),
                    },
                    Err(e) => {
                        // Out of file descriptors, most likely: let connections close.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!(open = set.open(), "shutting down: draining open requests");
        state.shutdown.advance(Phase::Draining);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.shutdown_timeout, drain).await.is_err() {
            tracing::warn!(open = set.open(), "shutdown timeout: ending the requests still running");
            state.shutdown.advance(Phase::Expired);
            let drain = async { while tasks.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(FINAL_GRACE, drain).await;
            tasks.abort_all();
        }
        Ok(())
    }
}

/// Answers a connection beyond the limit with a 503 (if the socket takes it at once) and
/// closes it.
fn refuse(stream: TcpStream) {
    let body = ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "too many open connections; retry later")
        .with_code("too_many_connections")
        .body()
        .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}
