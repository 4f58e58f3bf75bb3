//! HTTP plumbing shared by the routes: reading a body (size and time limits) and parsing it as
//! JSON (OpenAI-style 400s for malformed JSON), the API-key check, per-route request counting,
//! and the 404 and 405 fallbacks.

use super::error::ApiError;
use super::shutdown::Phase;
use super::{AppState, ServeConfig};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Refuses new work once the server drains (503).
pub fn admitting(state: &AppState) -> Result<(), ApiError> {
    match state.shutdown.phase() {
        Phase::Serving => Ok(()),
        _ => {
            Err(ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down")
                .with_code("shutting_down"))
        }
    }
}

/// Reads a request body within the configured size and time limits.
pub async fn read_body(req: Request, config: &ServeConfig) -> Result<Bytes, ApiError> {
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
    Ok(bytes)
}

/// Parses a JSON request body.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
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

/// Whether `headers` carry `Authorization: Bearer <key>` (the scheme in any case, as RFC 7235
/// says; the key compared in constant time). An empty key matches nothing.
pub fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.trim_start().split_once([' ', '\t']) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return false;
    }
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

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::bad_request(format!("{method} is not allowed on {}", uri.path()), None)
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .with_code("method_not_allowed")
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
        for scheme in ["bearer k1", "BEARER k1", "BeArEr  k1"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(scheme));
            assert!(authorized(&h, "k1"), "{scheme}");
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearerk1"));
        assert!(!authorized(&h, "k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!authorized(&h, ""), "an empty key matches nothing");
    }

    #[test]
    fn unknown_routes_share_a_label() {
        assert_eq!(route_label("/v1/completions"), "/v1/completions");
        assert_eq!(route_label("/v1/completions/x"), "other");
    }
}
