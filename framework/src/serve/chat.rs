//! POST /v1/chat/completions: messages rendered with the model's chat template and tokenized
//! off the async runtime (`Llm::chat_prompt_with`; special-token text inside a message stays
//! text unless configured otherwise), streamed as `chat.completion.chunk`s or answered whole,
//! with usage and chat log-probabilities.

use super::config::ServeConfig;
use super::error::ApiError;
use super::fields::refuse_unsupported;
use super::generation::{submit, ChunkFormat, Prepared};
use super::http::parse_json;
use super::logprobs::chat_logprobs;
use super::params::{check_model, ParamsSpec};
use super::preprocess::read_and_prepare;
use super::protocol::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatMessageIn, ChatMessageOut, ChatRequest, ChatResponse,
    MessageContent, Usage,
};
use super::{unix_time, AppState};
use crate::api::RequestOutput;
use crate::tokenizer::ChatMessage;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::sync::Arc;

pub async fn chat_completions(State(state): State<Arc<AppState>>, req: Request) -> Response {
    handle(state, req).await.unwrap_or_else(IntoResponse::into_response)
}

/// The messages as the chat template takes them (text content only).
fn messages(input: Vec<ChatMessageIn>) -> Result<Vec<ChatMessage>, ApiError> {
    if input.is_empty() {
        return Err(ApiError::bad_request("messages is empty", Some("messages")));
    }
    input
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::bad_request(
                                    format!(
                                        "messages[{i}]: content part of type `{kind}` is not supported (text only)"
                                    ),
                                    Some("messages"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(m.role, content))
        })
        .collect()
}

/// The body checked before anything touches the model: its JSON, unsupported fields, the model
/// name, the log-probability fields and the messages (text content only).
pub(super) fn parse_body(bytes: &[u8], config: &ServeConfig) -> Result<(ChatRequest, Vec<ChatMessage>), ApiError> {
    let mut body: ChatRequest = parse_json(bytes)?;
    refuse_unsupported(&body.extra)?;
    check_model(body.common.model.as_deref(), &config.served_model_name)?;
    if body.logprobs != Some(true) && body.top_logprobs.is_some() {
        return Err(ApiError::bad_request("top_logprobs needs logprobs = true", Some("top_logprobs")));
    }
    let messages = messages(std::mem::take(&mut body.messages))?;
    Ok((body, messages))
}

/// The sampling fields of a body, before a prompt's length is known.
pub(super) fn params_spec(body: &ChatRequest) -> ParamsSpec<'_> {
    let max_tokens = match (body.max_completion_tokens, body.max_tokens) {
        (Some(m), _) => Some((m, "max_completion_tokens")),
        (None, Some(m)) => Some((m, "max_tokens")),
        (None, None) => None,
    };
    ParamsSpec {
        common: &body.common,
        max_tokens,
        logprobs: (body.logprobs == Some(true)).then(|| body.top_logprobs.unwrap_or(0)),
        logprobs_param: "top_logprobs",
        best_of: None,
        prompt_param: "messages",
    }
}

/// Everything before submission (run off the async runtime).
fn prepare(state: &AppState, bytes: &[u8]) -> Result<Prepared, ApiError> {
    let (body, messages) = parse_body(bytes, &state.config)?;
    state.llm.check_queue(1, 0).map_err(|e| ApiError::from_llm(&e, "messages"))?;
    // Longer than the context is refused anyway: stop tokenizing there.
    let prompt = state
        .llm
        .chat_prompt_with(&messages, state.config.content_special_tokens, state.llm.max_seq_len())
        .map_err(|e| ApiError::from_llm(&e, "messages"))?;
    let params = params_spec(&body).build(prompt.len(), state.llm.max_seq_len())?;
    Ok(Prepared::new(vec![prompt], vec![params], &body.common))
}

async fn handle(state: Arc<AppState>, req: Request) -> Result<Response, ApiError> {
    let Prepared { prompts, params, stream, include_usage } = read_and_prepare(&state, req, prepare).await?;
    let submitted = submit(&state, prompts, &params, "messages")?;
    let id = format!("chatcmpl-{:032x}", rand::random::<u128>());
    let model = state.config.served_model_name.clone();
    let created = unix_time();
    if stream {
        let format = ChatChunks { id, model, created, state: state.clone(), sent: HashMap::new() };
        return Ok(submitted.into_sse(format, include_usage, "messages"));
    }
    let (outputs, usage) = submitted.collect("messages").await?;
    let choices = outputs
        .iter()
        .flat_map(|out| &out.outputs)
        .map(|o| ChatChoice {
            index: o.index,
            message: ChatMessageOut { role: "assistant", content: o.text.clone() },
            logprobs: o.logprobs.as_ref().map(|lps| chat_logprobs(state.llm.tokenizer(), lps)),
            finish_reason: o.finish_reason.as_ref().map(|f| f.as_openai_str()),
        })
        .collect();
    let response = ChatResponse { id, object: "chat.completion", created, model, choices, usage };
    Ok(Json(response).into_response())
}

struct ChatChunks {
    id: String,
    model: String,
    created: u64,
    state: Arc<AppState>,
    /// Per choice: log-probabilities sent so far (present once the role was sent).
    sent: HashMap<usize, usize>,
}

impl ChatChunks {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> serde_json::Value {
        let c = ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        };
        serde_json::to_value(c).unwrap_or(serde_json::Value::Null)
    }
}

impl ChunkFormat for ChatChunks {
    fn chunks(&mut self, _prompt: usize, out: &RequestOutput) -> Vec<serde_json::Value> {
        let mut chunks = Vec::new();
        for o in &out.outputs {
            if o.text_diff.is_empty() && o.finish_reason.is_none() {
                continue;
            }
            let first = !self.sent.contains_key(&o.index);
            let sent = self.sent.get(&o.index).copied().unwrap_or(0);
            let logprobs = o.logprobs.as_ref().map(|lps| {
                self.sent.insert(o.index, lps.len());
                chat_logprobs(self.state.llm.tokenizer(), lps.get(sent..).unwrap_or(&[]))
            });
            self.sent.entry(o.index).or_insert(0);
            let delta = ChatDelta {
                role: first.then_some("assistant"),
                content: (first || !o.text_diff.is_empty()).then(|| o.text_diff.clone()),
            };
            let finish_reason = o.finish_reason.as_ref().map(|f| f.as_openai_str());
            chunks.push(self.chunk(vec![ChatChunkChoice { index: o.index, delta, logprobs, finish_reason }], None));
        }
        chunks
    }

    fn usage_chunk(&self, usage: Usage) -> serde_json::Value {
        self.chunk(Vec::new(), Some(usage))
    }
}
