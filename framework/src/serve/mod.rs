//! `rtllm serve`: an OpenAI-compatible HTTP server (axum + tokio) over one shared [`Llm`], so
//! requests from every client are batched together in its executor. Owns the router
//! ([`router`]), binding and running ([`bind`], [`Server`]) and the configuration
//! ([`ServeConfig`]); the routes live in `completions`, `chat` and `routes`.
//!
//! Routes: POST /v1/completions, POST /v1/chat/completions (both streaming over SSE or not),
//! GET /v1/models, /health, /health_generate, /metrics. With an API key every route but
//! /health needs `Authorization: Bearer <key>`. Errors are OpenAI-style JSON bodies.

mod chat;
mod completions;
pub mod error;
mod generation;
mod http;
mod logprobs;
pub mod metrics;
mod params;
pub mod protocol;
mod routes;

pub use error::ApiError;
pub use metrics::Metrics;

use crate::api::Llm;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// The environment variable that supplies the API key when `--api-key` is not given.
pub const API_KEY_ENV: &str = "RTLLM_API_KEY";

/// How the server answers.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The model name clients send (and /v1/models lists).
    pub served_model_name: String,
    /// When set, every route but /health needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// How long /health_generate waits for its token.
    pub health_generate_timeout: Duration,
}

impl ServeConfig {
    pub fn new(served_model_name: impl Into<String>) -> ServeConfig {
        ServeConfig {
            served_model_name: served_model_name.into(),
            api_key: None,
            max_body_bytes: 4 << 20,
            body_timeout: Duration::from_secs(30),
            health_generate_timeout: Duration::from_secs(60),
        }
    }

    pub fn with_api_key(mut self, key: Option<String>) -> ServeConfig {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }
}

/// The model name served for a model file or directory: its file stem (`model.gguf` →
/// `model`) or directory name.
pub fn model_name_from_path(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// What every handler shares.
pub struct AppState {
    llm: Arc<Llm>,
    config: ServeConfig,
    metrics: Arc<Metrics>,
}

/// The server's routes over `llm`.
pub fn router(llm: Arc<Llm>, config: ServeConfig) -> Router {
    let state = Arc::new(AppState { llm, config, metrics: Arc::new(Metrics::default()) });
    Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/health_generate", get(routes::health_generate))
        .route("/metrics", get(routes::metrics))
        .fallback(http::not_found)
        .layer(from_fn_with_state(state.clone(), http::require_api_key))
        .layer(from_fn_with_state(state.clone(), http::count_requests))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    app: Router,
    addr: SocketAddr,
}

/// Binds `addr` (`host:port`; port 0 picks a free port) and builds the router; see [`Server::local_addr`].
pub async fn bind(addr: &str, llm: Arc<Llm>, config: ServeConfig) -> Result<Server, ServeError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
    let addr = listener.local_addr()?;
    Ok(Server { listener, app: router(llm, config), addr })
}

impl Server {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends.
    pub async fn run(self) -> Result<(), ServeError> {
        Ok(axum::serve(self.listener, self.app).await?)
    }

    /// Serves until `shutdown` completes, then lets open requests finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        Ok(axum::serve(self.listener, self.app).with_graceful_shutdown(shutdown).await?)
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
