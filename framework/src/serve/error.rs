//! The server's errors as HTTP responses in OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}` with the matching status (and
//! `Retry-After` on a 429), and the mapping from the `Llm` API's errors (sampling, submission,
//! tokenizer, request) onto them. Messages and field names are capped, so an absurd input is
//! never echoed back whole.

use crate::api::LlmError;
use crate::runtime::executor::{RequestError, SubmitError};
use crate::tokenizer::TokenizerError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An error answered to the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u32>,
}

/// Longest message sent back (longer ones are cut, with an ellipsis).
const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest field name sent back.
const MAX_PARAM_BYTES: usize = 128;

/// `text` cut to at most `max` bytes at a character boundary, marked with an ellipsis.
pub fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end]).into()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400 `invalid_request_error`, naming the field at fault when there is one.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// 401 for a missing or wrong API key.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "invalid or missing API key: send `Authorization: Bearer <key>`".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
            retry_after: None,
        }
    }

    /// A failure on the server's side (5xx).
    pub fn server(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind: "server_error", param: None, code: None, retry_after: None }
    }

    /// 429: the server is busy now; retry after `seconds`.
    pub fn busy(message: impl Into<String>, seconds: u32) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: message.into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(seconds),
        }
    }

    /// The JSON body (also sent as an SSE `data:` line when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        let message = capped(&self.message, MAX_MESSAGE_BYTES);
        let param = self.param.as_deref().map(|p| capped(p, MAX_PARAM_BYTES));
        let body = ErrorBody {
            error: ErrorDetail { message: &message, kind: self.kind, param: param.as_deref(), code: self.code },
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }

    /// Maps an `Llm` error; `prompt_param` names the request's prompt field
    /// (`prompt` or `messages`).
    pub fn from_llm(e: &LlmError, prompt_param: &str) -> ApiError {
        match e {
            LlmError::Sampling(s) => ApiError::bad_request(s.to_string(), Some(s.field)),
            LlmError::Submit(s) => ApiError::from_submit(s, prompt_param),
            LlmError::Tokenizer(t @ TokenizerError::TooLong { .. }) => {
                ApiError::bad_request(format!("the prompt is too long: {t}"), Some(prompt_param))
                    .with_code("context_length_exceeded")
            }
            LlmError::Tokenizer(t) => ApiError::bad_request(t.to_string(), Some(prompt_param)),
            LlmError::Unsupported(_) => ApiError::bad_request(e.to_string(), None),
            LlmError::Request(RequestError::Unschedulable(m)) => {
                ApiError::bad_request(format!("request cannot be scheduled: {m}"), Some(prompt_param))
            }
            other => ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }

    fn from_submit(e: &SubmitError, prompt_param: &str) -> ApiError {
        let param = match e {
            SubmitError::Sampling(s) => Some(s.field),
            SubmitError::BadSampleCount { .. } | SubmitError::BadBeamWidth { .. } => Some("n"),
            SubmitError::ShutDown => {
                return ApiError::server(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
            SubmitError::QueueFull { .. } => return ApiError::busy(e.to_string(), 1),
            _ => Some(prompt_param),
        };
        ApiError::bad_request(e.to_string(), param)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    #[test]
    fn sampling_errors_name_the_field_in_a_400() {
        let bad = SamplingParams { top_p: 2.0, ..Default::default() };
        let e = ApiError::from_llm(&LlmError::Sampling(bad.validate().unwrap_err()), "prompt");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["error"]["param"], "top_p");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("top_p"));
    }

    #[test]
    fn submit_errors_map_to_their_field() {
        let e = ApiError::from_llm(&LlmError::Submit(SubmitError::TooLong { prompt: 9, max_seq_len: 8 }), "messages");
        assert_eq!((e.status, e.param.as_deref()), (StatusCode::BAD_REQUEST, Some("messages")));
        let e = ApiError::from_llm(&LlmError::Submit(SubmitError::ShutDown), "prompt");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn echoed_text_is_capped() {
        let e = ApiError::bad_request(
            format!("the model `{}` does not exist", "é".repeat(100_000)),
            Some(&"p".repeat(999)),
        );
        let body = e.body();
        assert!(body["error"]["message"].as_str().unwrap().len() <= MAX_MESSAGE_BYTES);
        assert!(body["error"]["message"].as_str().unwrap().ends_with("..."));
        assert!(body["error"]["param"].as_str().unwrap().len() <= MAX_PARAM_BYTES);
        let busy = ApiError::busy("full", 1).into_response();
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
    }
}
