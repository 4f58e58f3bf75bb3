//! The server's errors as HTTP responses in OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}` with the matching status, and the mapping
//! from the `Llm` API's errors (sampling, submission, tokenizer, request) onto them.

use crate::api::LlmError;
use crate::runtime::executor::{RequestError, SubmitError};
use axum::http::StatusCode;
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
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found"),
        }
    }

    /// A failure on the server's side (5xx).
    pub fn server(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind: "server_error", param: None, code: None }
    }

    /// The JSON body (also sent as an SSE `data:` line when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }

    /// Maps an `Llm` error; `prompt_param` names the request's prompt field
    /// (`prompt` or `messages`).
    pub fn from_llm(e: &LlmError, prompt_param: &str) -> ApiError {
        match e {
            LlmError::Sampling(s) => ApiError::bad_request(s.to_string(), Some(s.field)),
            LlmError::Submit(s) => ApiError::from_submit(s, prompt_param),
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
        (self.status, Json(self.body())).into_response()
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
}
