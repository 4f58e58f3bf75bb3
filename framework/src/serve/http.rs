//! HTTP plumbing shared by the routes: reading a JSON body (size and time limits, OpenAI-style
//! 400s for malformed JSON), the API-key check, per-route request counting, and the 404 fallback.

use super::error::ApiError;
use super::{AppState, ServeConfig};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Reads and parses a JSON request body within the configured size and time limits.
pub async fn read_json<T: DeserializeOwned>(req: Request, config: &ServeConfig) -> Result<T, ApiError> {
    let limit = config.max_body_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::bad_request(format!("the request body is larger than {limit} bytes"), None)
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let bytes = match tokio::time::timeout(config.body_timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Err(_) => {
            return Err(ApiError::bad_request(
                format!("the request body did not arrive within {:?}", config.body_timeout),
                None,
            )
            .with_status(StatusCode::REQUEST_TIMEOUT))
        }
        Ok(Err(e)) => {
            return Err(ApiError::bad_request(
                format!("cannot read the request body (at most {limit} bytes): {e}"),
                None,
            ))
        }
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "invalid request",
            _ => "malformed JSON in the request body",
        };
        ApiError::bad_request(format!("{what}: {e}"), None)
    })
}

/// The route label of a path for the metrics (unknown paths share one label).
pub fn route_label(path: &str) -> &'static str {
    const ROUTES: &[&str] =
        &["/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/health_generate", "/metrics"];
    ROUTES.iter().find(|r| **r == path).copied().unwrap_or("other")
}

/// Whether `headers` carry `Authorization: Bearer <key>` (compared in constant time).
pub fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(given) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), key.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: with an API key configured, every route but /health needs it.
pub async fn require_api_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        if req.uri().path() != "/health" && !authorized(req.headers(), key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Middleware: counts every answered request by route and status.
pub async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let response = next.run(req).await;
    state.metrics.record_request(route, response.status().as_u16());
    response
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_keys_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert!(authorized(&h, "k1"));
        assert!(!authorized(&h, "k2"));
        assert!(!authorized(&h, "k11"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert!(!authorized(&h, "k1"));
    }

    #[test]
    fn unknown_routes_share_a_label() {
        assert_eq!(route_label("/v1/completions"), "/v1/completions");
        assert_eq!(route_label("/v1/completions/x"), "other");
    }
}
