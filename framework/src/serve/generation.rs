//! Runs a request's prompts on the shared `Llm`: submits them (all or none: the executor's
//! queue takes them all or the call is a 429), wraps each output stream so it records TTFT /
//! TPOT / latency and token counts, merges the streams, and either collects the final outputs
//! or drives an SSE body (chunks, the usage chunk, `[DONE]`). When a shutdown's timeout
//! passes, a stream ends with an error event and `[DONE]`, a collected answer becomes a 503.
//! Dropping what this returns drops the `Llm` streams, which cancels the requests at once.

use super::error::ApiError;
use super::http::admitting;
use super::metrics::Metrics;
use super::protocol::{CommonFields, Usage};
use super::shutdown::{reached, Phase};
use super::AppState;
use crate::api::{LlmError, OutputStreamAsync, Prompt, RequestOutput};
use crate::sampling::SamplingParams;
use axum::http::StatusCode;
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
use tokio::sync::watch;

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

/// A request checked and tokenized off the async runtime, ready to submit.
pub struct Prepared {
    pub prompts: Vec<Vec<u32>>,
    pub params: Vec<SamplingParams>,
    pub stream: bool,
    pub include_usage: bool,
}

impl Prepared {
    pub fn new(prompts: Vec<Vec<u32>>, params: Vec<SamplingParams>, common: &CommonFields) -> Prepared {
        let stream = common.stream == Some(true);
        let include_usage = common.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Prepared { prompts, params, stream, include_usage }
    }
}

/// A submitted request: its merged outputs and the prompt lengths.
pub struct Submitted {
    pub outputs: Merged,
    pub prompt_tokens: Vec<usize>,
    /// The server's shutdown phase (the answer ends when it expires).
    phase: watch::Receiver<Phase>,
}

/// Submits every prompt with its parameters, all or none (validated beforehand; a full queue
/// is a 429).
pub fn submit(
    state: &AppState,
    prompts: Vec<Vec<u32>>,
    params: &[SamplingParams],
    prompt_param: &str,
) -> Result<Submitted, ApiError> {
    admitting(state)?;
    let start = Instant::now();
    let prompt_tokens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let prompts = prompts.into_iter().map(Prompt::Tokens).collect();
    let inner = state.llm.generate_async_batch(prompts, params).map_err(|e| ApiError::from_llm(&e, prompt_param))?;
    let streams = inner.into_iter().enumerate().map(|(i, inner)| {
        let timed = TimedStream { inner, metrics: state.metrics.clone(), start, first_token: None, done: false };
        let tag: Box<dyn FnMut(Result<RequestOutput, LlmError>) -> Tagged + Send> = Box::new(move |r| (i, r));
        timed.map(tag)
    });
    let outputs = stream::select_all(streams);
    state.metrics.add_prompt_tokens(prompt_tokens.iter().sum());
    Ok(Submitted { outputs, prompt_tokens, phase: state.shutdown.subscribe() })
}

/// The next output, or a 503 once the shutdown timeout has passed.
async fn next_output(outputs: &mut Merged, phase: &mut watch::Receiver<Phase>) -> Result<Option<Tagged>, ApiError> {
    tokio::select! {
        next = outputs.next() => Ok(next),
        _ = reached(phase, Phase::Expired) => Err(ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server shut down before the request finished",
        )
        .with_code("shutting_down")),
    }
}

impl Submitted {
    /// Waits for every prompt's final output (in prompt order) and the usage.
    pub async fn collect(mut self, prompt_param: &str) -> Result<(Vec<RequestOutput>, Usage), ApiError> {
        let mut last: Vec<Option<RequestOutput>> = vec![None; self.prompt_tokens.len()];
        while let Some((i, out)) = next_output(&mut self.outputs, &mut self.phase).await? {
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
            phase: Step::Running,
            shutdown: self.phase,
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

/// Where an SSE stream is.
#[derive(Clone, Copy, PartialEq)]
enum Step {
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
    phase: Step,
    shutdown: watch::Receiver<Phase>,
}

impl<F: ChunkFormat> SseDriver<F> {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Event::default().data(chunk.to_string()));
            }
            match self.phase {
                Step::Running => match next_output(&mut self.outputs, &mut self.shutdown).await {
                    Err(e) => {
                        self.phase = Step::Done;
                        return Some(Event::default().data(e.body().to_string()));
                    }
                    Ok(Some((i, Ok(out)))) => {
                        if let Some(c) = self.completion_tokens.get_mut(i) {
                            *c = out.outputs.iter().map(|o| o.token_ids.len()).sum();
                        }
                        self.pending.extend(self.format.chunks(i, &out));
                    }
                    Ok(Some((_, Err(e)))) => {
                        self.phase = Step::Done;
                        return Some(
                            Event::default().data(ApiError::from_llm(&e, self.prompt_param).body().to_string()),
                        );
                    }
                    Ok(None) => self.phase = if self.include_usage { Step::Usage } else { Step::Done },
                },
                Step::Usage => {
                    self.phase = Step::Done;
                    let usage = Usage::new(self.prompt_tokens, self.completion_tokens.iter().sum());
                    return Some(Event::default().data(self.format.usage_chunk(usage).to_string()));
                }
                Step::Done => {
                    self.phase = Step::End;
                    return Some(Event::default().data("[DONE]"));
                }
                Step::End => return None,
            }
        }
    }
}
