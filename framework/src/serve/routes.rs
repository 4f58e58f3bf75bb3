//! The small routes: GET /health (liveness), /health_generate (a one-token generation),
//! /v1/models (the served model) and /metrics (Prometheus text).

use super::error::ApiError;
use super::protocol::{ModelCard, ModelList};
use super::{unix_time, AppState};
use crate::api::Prompt;
use crate::sampling::SamplingParams;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

pub async fn health() -> StatusCode {
    StatusCode::OK
}

/// Runs a one-token greedy generation through the shared executor.
pub async fn health_generate(State(state): State<Arc<AppState>>) -> Response {
    let timeout = state.config.health_generate_timeout;
    let ids = state.llm.tokenizer().bos_token_id().or_else(|| state.llm.eos_token_ids().first().copied()).unwrap_or(0);
    let params = SamplingParams::greedy(1);
    let generation = state.llm.generate_async(Prompt::Tokens(vec![ids]), &params);
    match tokio::time::timeout(timeout, generation).await {
        Ok(Ok(out)) if out.outputs.first().is_some_and(|o| !o.token_ids.is_empty()) => {
            Json(serde_json::json!({"status": "ok"})).into_response()
        }
        Ok(Ok(_)) => {
            ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "the health generation produced no token").into_response()
        }
        Ok(Err(e)) => ApiError::server(StatusCode::SERVICE_UNAVAILABLE, format!("the health generation failed: {e}"))
            .into_response(),
        Err(_) => ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the health generation took longer than {timeout:?}"),
        )
        .into_response(),
    }
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let card = ModelCard {
        id: state.config.served_model_name.clone(),
        object: "model",
        created: unix_time(),
        owned_by: "rtllm",
        max_model_len: state.llm.max_seq_len(),
    };
    Json(ModelList { object: "list", data: vec![card] })
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.llm.stats(), &state.config.served_model_name);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
