//! `rtllm serve`: an OpenAI-compatible HTTP server (axum over hyper + tokio) over one shared
//! [`Llm`], so requests from every client are batched together in its executor. Owns the
//! router ([`router`]) and binding ([`bind`]); the configuration is `config`, serving
//! connections is `listener` and `conn` (limits, timeouts, graceful shutdown on SIGINT or
//! SIGTERM: `shutdown`), the routes live in `completions`, `chat` and `routes`.
//!
//! Routes: POST /v1/completions, POST /v1/chat/completions (both streaming over SSE or not),
//! GET /v1/models, /health, /health_generate, /metrics. With an API key every route but
//! /health needs `Authorization: Bearer <key>`. Errors are OpenAI-style JSON bodies, those of
//! the HTTP layer (404, 405, 413, 431, ...) included. Admission happens before any work is
//! queued: prompts per request, the executor's queue (429 with `Retry-After` when full),
//! unsupported fields; preparing a request (JSON, template, tokenizer) runs off the async
//! runtime (`preprocess`).

mod chat;
mod completions;
pub mod config;
mod conn;
mod connections;
pub mod error;
mod error_io;
mod fields;
mod generation;
mod http;
mod listener;
mod logprobs;
pub mod metrics;
mod params;
mod preprocess;
mod prompt;
pub mod protocol;
mod routes;
pub mod shutdown;

pub use config::{ConnectionLimits, ServeConfig, API_KEY_ENV, MAX_MODEL_NAME_BYTES};
pub use error::ApiError;
pub use listener::Server;
pub use metrics::Metrics;
pub use shutdown::signal;

use crate::api::Llm;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use preprocess::Preprocess;
use shutdown::Shutdown;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

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
    shutdown: Shutdown,
    preprocess: Preprocess,
    /// The last health probe: when it finished and how (concurrent /health_generate calls
    /// share one probe).
    probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl AppState {
    fn new(llm: Arc<Llm>, config: ServeConfig) -> Arc<AppState> {
        Arc::new(AppState {
            llm,
            preprocess: Preprocess::new(config.preprocess_threads),
            config,
            metrics: Arc::new(Metrics::default()),
            shutdown: Shutdown::default(),
            probe: tokio::sync::Mutex::new(None),
        })
    }
}

/// The server's routes over `llm` (the connection limits of `config` apply to [`bind`]'s
/// server only).
pub fn router(llm: Arc<Llm>, config: ServeConfig) -> Router {
    app(AppState::new(llm, config))
}

fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/health_generate", get(routes::health_generate))
        .route("/metrics", get(routes::metrics))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
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

/// Binds `addr` (`host:port`; port 0 picks a free port) and builds the router; see [`Server::local_addr`].
pub async fn bind(addr: &str, llm: Arc<Llm>, config: ServeConfig) -> Result<Server, ServeError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
    let addr = listener.local_addr()?;
    let state = AppState::new(llm, config);
    Ok(Server { listener, app: app(state.clone()), state, addr })
}

/// Seconds since the Unix epoch (OpenAI's `created`).
fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Entry points for the `http_json` fuzz target in `fuzz/` (compiled only with `--cfg fuzzing`,
/// which scripts/fuzz.sh sets): everything a route does to a request body before the model is
/// involved, and the sampling parameters built for each prompt length the body implies.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::{chat, completions, prompt::PromptInput, ApiError, ServeConfig};

    /// The default configuration's checks on a /v1/completions body, then its parameters.
    pub fn completions_body(bytes: &[u8], max_seq_len: usize) -> Result<(), ApiError> {
        let (body, prompt) = completions::parse_body(bytes, &ServeConfig::new("default"))?;
        let lengths: Vec<usize> = match &prompt {
            PromptInput::Text(t) => vec![t.len()],
            PromptInput::Texts(ts) => ts.iter().map(String::len).collect(),
            PromptInput::Tokens(ids) => vec![ids.len()],
            PromptInput::TokenLists(ls) => ls.iter().map(Vec::len).collect(),
        };
        let spec = completions::params_spec(&body);
        lengths.into_iter().try_for_each(|n| spec.build(n, max_seq_len).map(drop))
    }

    /// The default configuration's checks on a /v1/chat/completions body, then its parameters.
    pub fn chat_body(bytes: &[u8], max_seq_len: usize) -> Result<(), ApiError> {
        let (body, messages) = chat::parse_body(bytes, &ServeConfig::new("default"))?;
        let length = messages.iter().map(|m| m.content.len()).sum::<usize>();
        chat::params_spec(&body).build(length, max_seq_len).map(drop)
    }
}
