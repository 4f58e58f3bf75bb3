//! Runs a request's prompts on the shared `Llm`: submits them (all or none), wraps each output
//! stream so it records TTFT / TPOT / latency and token counts, merges the streams, and either
//! collects the final outputs or drives an SSE body (chunks, the usage chunk, `[DONE]`).
//! Dropping what this returns drops the `Llm` streams, which cancels the requests.

use super::error::ApiError;
use super::metrics::Metrics;
use super::protocol::Usage;
use super::AppState;
use crate::api::{LlmError, OutputStreamAsync, Prompt, RequestOutput};
use crate::sampling::SamplingParams;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use futures_util::stream::{self, SelectAll, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// One prompt's output stream, recording metrics as outputs arrive.
pub struct TimedStream {
    inner: OutputStreamAsync,
    metrics: Arc<Metrics>,
    start: Instant,
    first_token: Option<Instant>,
    done: bool,
}

impl TimedStream {
    fn record(&mut self, out: &RequestOutput) {
        let new: usize = out.outputs.iter().map(|o| o.token_ids_diff.len()).sum();
        if new > 0 {
            self.metrics.add_generation_tokens(new);
            if self.first_token.is_none() {
                let now = Instant::now();
                self.first_token = Some(now);
                self.metrics.observe_ttft(now - self.start);
            }
        }
        if out.finished && !self.done {
            self.done = true;
            let now = Instant::now();
            self.metrics.observe_e2e(now - self.start);
            let longest = out.outputs.iter().map(|o| o.token_ids.len()).max().unwrap_or(0);
            if let (Some(first), true) = (self.first_token, longest > 1) {
                self.metrics.observe_tpot((now - first) / (longest as u32 - 1));
            }
        }
    }
}

impl Stream for TimedStream {
    type Item = Result<RequestOutput, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(out))) = &polled {
            self.record(out);
        }
        polled
    }
}

/// Outputs of all of a request's prompts, tagged with the prompt's index.
pub type Merged = SelectAll<stream::Map<TimedStream, Box<dyn FnMut(Result<RequestOutput, LlmError>) -> Tagged + Send>>>;
pub type Tagged = (usize, Result<RequestOutput, LlmError>);

/// A submitted request: its merged outputs and the prompt lengths.
pub struct Submitted {
    pub outputs: Merged,
    pub prompt_tokens: Vec<usize>,
}

/// Submits every prompt with its parameters (validated beforehand, so a failure here is rare;
/// the prompts already submitted are then cancelled as their streams drop).
pub fn submit(
    state: &AppState,
    prompts: Vec<Vec<u32>>,
    params: &[SamplingParams],
    prompt_param: &str,
) -> Result<Submitted, ApiError> {
    let start = Instant::now();
    let prompt_tokens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut streams = Vec::with_capacity(prompts.len());
    for (i, (ids, p)) in prompts.into_iter().zip(params).enumerate() {
        let inner = state
            .llm
            .generate_async_stream(Prompt::Tokens(ids), p)
            .map_err(|e| ApiError::from_llm(&e, prompt_param))?;
        let timed = TimedStream { inner, metrics: state.metrics.clone(), start, first_token: None, done: false };
        let tag: Box<dyn FnMut(Result<RequestOutput, LlmError>) -> Tagged + Send> = Box::new(move |r| (i, r));
        streams.push(timed.map(tag));
    }
    state.metrics.add_prompt_tokens(prompt_tokens.iter().sum());
    Ok(Submitted { outputs: stream::select_all(streams), prompt_tokens })
}

impl Submitted {
    /// Waits for every prompt's final output (in prompt order) and the usage.
    pub async fn collect(mut self, prompt_param: &str) -> Result<(Vec<RequestOutput>, Usage), ApiError> {
        let mut last: Vec<Option<RequestOutput>> = vec![None; self.prompt_tokens.len()];
        while let Some((i, out)) = self.outputs.next().await {
            let out = out.map_err(|e| ApiError::from_llm(&e, prompt_param))?;
            if let Some(slot) = last.get_mut(i) {
                *slot = Some(out);
            }
        }
        let outputs: Vec<RequestOutput> = last
            .into_iter()
            .map(|o| o.ok_or_else(|| ApiError::from_llm(&LlmError::Closed, prompt_param)))
            .collect::<Result<_, _>>()?;
        let completion = outputs.iter().flat_map(|o| &o.outputs).map(|o| o.token_ids.len()).sum();
        Ok((outputs, Usage::new(self.prompt_tokens.iter().sum(), completion)))
    }

    /// An SSE response: the chunks `format` makes of each output, then (when `include_usage`)
    /// `format.usage_chunk`, then `data: [DONE]`. A failure midway is sent as an error chunk.
    pub fn into_sse<F: ChunkFormat>(self, format: F, include_usage: bool, prompt_param: &'static str) -> Response {
        let completion_tokens = vec![0; self.prompt_tokens.len()];
        let driver = SseDriver {
            outputs: self.outputs,
            prompt_tokens: self.prompt_tokens.iter().sum(),
            completion_tokens,
            pending: VecDeque::new(),
            format,
            include_usage,
            prompt_param,
            phase: Phase::Running,
        };
        let events =
            stream::unfold(driver, |mut d| async move { d.next_event().await.map(|e| (Ok::<_, Infallible>(e), d)) });
        Sse::new(events).keep_alive(KeepAlive::default()).into_response()
    }
}

/// Makes an endpoint's stream chunks (JSON values) out of outputs.
pub trait ChunkFormat: Send + 'static {
    /// The chunks for one prompt's new output (one per sample that has something to say).
    fn chunks(&mut self, prompt: usize, out: &RequestOutput) -> Vec<serde_json::Value>;
    /// The final chunk carrying the usage.
    fn usage_chunk(&self, usage: Usage) -> serde_json::Value;
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Running,
    Usage,
    Done,
    End,
}

struct SseDriver<F> {
    outputs: Merged,
    prompt_tokens: usize,
    completion_tokens: Vec<usize>,
    pending: VecDeque<serde_json::Value>,
    format: F,
    include_usage: bool,
    prompt_param: &'static str,
    phase: Phase,
}

impl<F: ChunkFormat> SseDriver<F> {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Event::default().data(chunk.to_string()));
            }
            match self.phase {
                Phase::Running => match self.outputs.next().await {
                    Some((i, Ok(out))) => {
                        if let Some(c) = self.completion_tokens.get_mut(i) {
                            *c = out.outputs.iter().map(|o| o.token_ids.len()).sum();
                        }
                        self.pending.extend(self.format.chunks(i, &out));
                    }
                    Some((_, Err(e))) => {
                        self.phase = Phase::Done;
                        return Some(
                            Event::default().data(ApiError::from_llm(&e, self.prompt_param).body().to_string()),
                        );
                    }
                    None => self.phase = if self.include_usage { Phase::Usage } else { Phase::Done },
                },
                Phase::Usage => {
                    self.phase = Phase::Done;
                    let usage = Usage::new(self.prompt_tokens, self.completion_tokens.iter().sum());
                    return Some(Event::default().data(self.format.usage_chunk(usage).to_string()));
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Some(Event::default().data("[DONE]"));
                }
                Phase::End => return None,
            }
        }
    }
}
