//! POST /v1/completions: one or several prompts (text or token ids), checked and tokenized
//! off the async runtime, streamed as `text_completion` chunks or answered whole, with usage
//! and legacy log-probabilities.

use super::config::ServeConfig;
use super::error::ApiError;
use super::fields::refuse_unsupported;
use super::generation::{submit, ChunkFormat, Prepared};
use super::http::parse_json;
use super::logprobs::completion_logprobs;
use super::params::{check_model, ParamsSpec};
use super::preprocess::read_and_prepare;
use super::prompt::PromptInput;
use super::protocol::{CompletionChoice, CompletionRequest, CompletionResponse, Usage};
use super::{unix_time, AppState};
use crate::api::{LlmError, RequestOutput};
use crate::tokenizer::Tokenizer;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::sync::Arc;

pub async fn completions(State(state): State<Arc<AppState>>, req: Request) -> Response {
    handle(state, req).await.unwrap_or_else(IntoResponse::into_response)
}

/// The prompts as token ids (text gets BOS as the model configures), after the admission
/// check that needs no tokenizing: room in the queue for them.
fn tokenize(state: &AppState, prompt: PromptInput) -> Result<Vec<Vec<u32>>, ApiError> {
    state.llm.check_queue(prompt.count(), 0).map_err(|e| ApiError::from_llm(&e, "prompt"))?;
    // Longer than the context is refused anyway: stop tokenizing there.
    let limit = state.llm.max_seq_len();
    let encode = |t: &str| {
        let ids = state.llm.tokenizer().encode_at_most(t, true, limit);
        ids.map_err(|e| ApiError::from_llm(&LlmError::from(e), "prompt"))
    };
    Ok(match prompt {
        PromptInput::Text(t) => vec![encode(&t)?],
        PromptInput::Texts(ts) => ts.iter().map(|t| encode(t)).collect::<Result<_, _>>()?,
        PromptInput::Tokens(ids) => vec![ids],
        PromptInput::TokenLists(ls) => ls,
    })
}

/// The body checked before anything touches the model: its JSON, unsupported fields, the model
/// name, `echo` and `suffix`, and how many prompts it holds (`max_prompts_per_request`).
pub(super) fn parse_body(bytes: &[u8], config: &ServeConfig) -> Result<(CompletionRequest, PromptInput), ApiError> {
    let body: CompletionRequest = parse_json(bytes)?;
    refuse_unsupported(&body.extra)?;
    check_model(body.common.model.as_deref(), &config.served_model_name)?;
    if body.echo == Some(true) {
        return Err(ApiError::bad_request("echo is not supported", Some("echo")));
    }
    if body.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix is not supported", Some("suffix")));
    }
    let prompt = PromptInput::parse(&body.prompt, config.max_prompts_per_request)?;
    if prompt.count() == 0 {
        return Err(ApiError::bad_request("the prompt list is empty", Some("prompt")));
    }
    Ok((body, prompt))
}

/// The sampling fields of a body, before a prompt's length is known.
pub(super) fn params_spec(body: &CompletionRequest) -> ParamsSpec<'_> {
    ParamsSpec {
        common: &body.common,
        max_tokens: body.max_tokens.map(|m| (m, "max_tokens")),
        logprobs: body.logprobs,
        logprobs_param: "logprobs",
        best_of: body.best_of,
        prompt_param: "prompt",
    }
}

/// Everything before submission (run off the async runtime).
fn prepare(state: &AppState, bytes: &[u8]) -> Result<Prepared, ApiError> {
    let (body, prompt) = parse_body(bytes, &state.config)?;
    let prompts = tokenize(state, prompt)?;
    let spec = params_spec(&body);
    let max_seq_len = state.llm.max_seq_len();
    let params = prompts.iter().map(|p| spec.build(p.len(), max_seq_len)).collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared::new(prompts, params, &body.common))
}

async fn handle(state: Arc<AppState>, req: Request) -> Result<Response, ApiError> {
    let Prepared { prompts, params, stream, include_usage } = read_and_prepare(&state, req, prepare).await?;
    let n = params.first().map_or(1, |p| p.n);
    let submitted = submit(&state, prompts, &params, "prompt")?;
    let id = format!("cmpl-{:032x}", rand::random::<u128>());
    let model = state.config.served_model_name.clone();
    let created = unix_time();
    if stream {
        let format = CompletionChunks { id, model, created, n, state: state.clone(), sent: HashMap::new() };
        return Ok(submitted.into_sse(format, include_usage, "prompt"));
    }
    let (outputs, usage) = submitted.collect("prompt").await?;
    let choices = outputs
        .iter()
        .enumerate()
        .flat_map(|(p, out)| out.outputs.iter().map(move |o| (p, o)).collect::<Vec<_>>())
        .map(|(p, o)| CompletionChoice {
            index: p * n + o.index,
            text: o.text.clone(),
            logprobs: o.logprobs.as_ref().map(|lps| completion_logprobs(state.llm.tokenizer(), lps, &mut 0)),
            finish_reason: o.finish_reason.as_ref().map(|f| f.as_openai_str()),
        })
        .collect();
    let response = CompletionResponse { id, object: "text_completion", created, model, choices, usage: Some(usage) };
    Ok(Json(response).into_response())
}

/// Per-choice progress of a stream: log-probabilities sent so far and the text offset.
#[derive(Default)]
struct Sent {
    logprobs: usize,
    offset: usize,
}

struct CompletionChunks {
    id: String,
    model: String,
    created: u64,
    n: usize,
    state: Arc<AppState>,
    sent: HashMap<usize, Sent>,
}

impl CompletionChunks {
    fn tokenizer(&self) -> &Tokenizer {
        self.state.llm.tokenizer()
    }

    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> serde_json::Value {
        let r = CompletionResponse {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        };
        serde_json::to_value(r).unwrap_or(serde_json::Value::Null)
    }
}

impl ChunkFormat for CompletionChunks {
    fn chunks(&mut self, prompt: usize, out: &RequestOutput) -> Vec<serde_json::Value> {
        let mut chunks = Vec::new();
        for o in &out.outputs {
            // Text held back (a possible stop string, a partial character) waits, and its
            // log-probabilities with it.
            if o.text_diff.is_empty() && o.finish_reason.is_none() {
                continue;
            }
            let index = prompt * self.n + o.index;
            let mut sent = self.sent.remove(&index).unwrap_or_default();
            let logprobs = o.logprobs.as_ref().map(|lps| {
                let new = lps.get(sent.logprobs..).unwrap_or(&[]);
                sent.logprobs = lps.len();
                completion_logprobs(self.tokenizer(), new, &mut sent.offset)
            });
            self.sent.insert(index, sent);
            let choice = CompletionChoice {
                index,
                text: o.text_diff.clone(),
                logprobs,
                finish_reason: o.finish_reason.as_ref().map(|f| f.as_openai_str()),
            };
            chunks.push(self.chunk(vec![choice], None));
        }
        chunks
    }

    fn usage_chunk(&self, usage: Usage) -> serde_json::Value {
        self.chunk(Vec::new(), Some(usage))
    }
}
