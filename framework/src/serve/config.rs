//! How the server answers and what it tolerates: the served name and API key, request limits
//! (body size and time, prompts per request, how special-token text in chat messages is
//! encoded, how many requests are prepared at once) and connection limits (how many, header
//! and idle timeouts, how long a shutdown may drain). Every limit has a safe default.

use crate::tokenizer::ContentSpecialTokens;
use std::time::Duration;

/// The environment variable that supplies the API key when `--api-key` is not given.
pub const API_KEY_ENV: &str = "RTLLM_API_KEY";

/// Longest `model` name a request may send (longer ones are refused without being echoed).
pub const MAX_MODEL_NAME_BYTES: usize = 256;

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
    /// Most prompts one /v1/completions request may carry.
    pub max_prompts_per_request: usize,
    /// How text inside chat messages that spells a special token is encoded.
    pub content_special_tokens: ContentSpecialTokens,
    /// Requests parsed, templated and tokenized at once (off the async runtime).
    pub preprocess_threads: usize,
    pub connections: ConnectionLimits,
}

/// What one client connection may hold and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most. A connection beyond it closes the connection idle the
    /// longest, or is answered 503 and closed when every connection has a request running.
    pub max_connections: usize,
    /// A request's headers must arrive within this (counted from when the server starts
    /// waiting for them, so it also closes a connection that never sends any).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub keep_alive_timeout: Duration,
    /// On SIGINT / SIGTERM, how long running requests may finish before streams are ended
    /// with an error event and `[DONE]`.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeConfig {
    pub fn new(served_model_name: impl Into<String>) -> ServeConfig {
        ServeConfig {
            served_model_name: served_model_name.into(),
            api_key: None,
            max_body_bytes: 4 << 20,
            body_timeout: Duration::from_secs(30),
            health_generate_timeout: Duration::from_secs(60),
            max_prompts_per_request: 64,
            content_special_tokens: ContentSpecialTokens::Text,
            preprocess_threads: default_preprocess_threads(),
            connections: ConnectionLimits::default(),
        }
    }

    /// Sets the API key; an empty key is kept (and matches nothing) rather than disabling
    /// authentication (the CLI refuses one).
    pub fn with_api_key(mut self, key: Option<String>) -> ServeConfig {
        self.api_key = key;
        self
    }
}

/// Half the cores (at least 1, at most 8): preparation must not starve the executor.
fn default_preprocess_threads() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cores / 2).clamp(1, 8)
}
