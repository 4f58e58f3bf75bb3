//! The small routes: GET /health (liveness), /health_generate (a one-token generation that
//! jumps the executor's queue, shared by concurrent callers), /v1/models (the served model)
//! and /metrics (Prometheus text).

use super::error::ApiError;
use super::protocol::{ModelCard, ModelList};
use super::{unix_time, AppState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use std::time::Instant;

pub async fn health() -> StatusCode {
    StatusCode::OK
}

/// Runs a one-token greedy generation through the shared executor ahead of its queue
/// (`Llm::probe`). Callers that arrive while a probe runs wait for it and share its result, so
/// hammering this route costs one probe at a time.
pub async fn health_generate(State(state): State<Arc<AppState>>) -> Response {
    let asked = Instant::now();
    let mut last = state.probe.lock().await;
    let result = match &*last {
        Some((finished, result)) if *finished >= asked => result.clone(),
        _ => {
            let result = probe(&state).await;
            *last = Some((Instant::now(), result.clone()));
            result
        }
    };
    drop(last);
    match result {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(why) => ApiError::server(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn probe(state: &AppState) -> Result<(), String> {
    let timeout = state.config.health_generate_timeout;
    match tokio::time::timeout(timeout, state.llm.probe()).await {
        Ok(Ok(out)) if out.outputs.first().is_some_and(|o| !o.token_ids.is_empty()) => Ok(()),
        Ok(Ok(_)) => Err("the health generation produced no token".into()),
        Ok(Err(e)) => Err(format!("the health generation failed: {e}")),
        Err(_) => Err(format!("the health generation took longer than {timeout:?}")),
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
