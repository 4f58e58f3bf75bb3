//! What a client submits (`Request`) and gets back (`RequestHandle`: a stream of
//! `OutputUpdate`s, read blocking or polled from async code, and `cancel()`), and the errors of
//! submission and of a running request.

use super::queue::{QueueLimits, QueueSlot};
use super::updates::UpdateReceiver;
use super::Command;
use crate::sampling::{FinishReason, PromptLogprob, SampledToken, SamplingError, SamplingParams};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A generation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    /// Independent samples of the same prompt (they share the prompt's KV blocks); under
    /// `params.use_beam_search`, the best hypotheses returned (<= `beam_width`).
    pub n: usize,
    pub arrival: Instant,
    /// Jumps the waiting queue, is not counted against its limits, and may take a batch slot
    /// reserved for it when every other slot is busy (one such sequence at a time). Meant for
    /// health probes: a tiny request that must not wait behind user traffic.
    pub priority: bool,
}

impl Request {
    pub fn new(prompt_ids: Vec<u32>, params: SamplingParams) -> Request {
        Request { prompt_ids, params, n: 1, arrival: Instant::now(), priority: false }
    }
}

/// Why a request was refused at submission.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("n = {n} samples: must be 1..={max_batch_size} (max_batch_size)")]
    BadSampleCount { n: usize, max_batch_size: usize },
    #[error("beam search with beam_width {beam_width} and n = {n}: need n <= beam_width <= {max_batch_size} (max_batch_size)")]
    BadBeamWidth { beam_width: usize, n: usize, max_batch_size: usize },
    #[error("prompt of {prompt} tokens plus one generated exceeds max_seq_len {max_seq_len}")]
    TooLong { prompt: usize, max_seq_len: usize },
    #[error("prompt needs {needed} KV cache blocks but the whole cache has {total}")]
    ExceedsKvCache { needed: usize, total: usize },
    #[error("prompt_logprobs.start = {start}: the prompt of {prompt} tokens has no token to score from there (the last is at position {})", prompt.saturating_sub(1))]
    NothingToScore { start: usize, prompt: usize },
    #[error("stop strings need the executor to detokenize, but it was started without a tokenizer")]
    StopStringsNeedTokenizer,
    #[error("the executor has shut down")]
    ShutDown,
    #[error(
        "the queue is full: {requests} requests of {tokens} prompt tokens are waiting (at most {} requests and {} tokens); retry later",
        limits.max_queued_requests, limits.max_queued_tokens
    )]
    QueueFull { requests: usize, tokens: usize, limits: QueueLimits },
    #[error(
        "{requests} requests of {tokens} prompt tokens can never be queued (at most {} requests and {} tokens wait at once)",
        limits.max_queued_requests, limits.max_queued_tokens
    )]
    ExceedsQueue { requests: usize, tokens: usize, limits: QueueLimits },
}

/// Why a running request ended without finishing normally.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("request cannot be scheduled: {0}")]
    Unschedulable(String),
    #[error("forward pass failed: {0}")]
    Engine(String),
    /// The executor hit an internal fault (a panic in its loop, a failed KV block copy or
    /// fork) while running this request; the executor itself keeps serving.
    #[error("internal executor error: {0}")]
    Internal(String),
}

/// One step's output for one sample of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputUpdate {
    /// Which of the request's `n` samples.
    pub sample: usize,
    /// Tokens generated since the previous update.
    pub token_ids: Vec<u32>,
    /// Text they completed (empty without a tokenizer): text that might still become a stop
    /// string is held back, a matched stop string is trimmed, so the diffs of a sample
    /// concatenate to its final text.
    pub text_diff: String,
    /// Each token's log-probability (and the top alternatives when `logprobs` was asked).
    pub logprobs: Vec<SampledToken>,
    /// Set on the sample's last update.
    pub finish_reason: Option<FinishReason>,
    /// Set (on a last update, for all samples at once) when the request failed.
    pub error: Option<RequestError>,
    /// The executor step that produced it.
    pub step: u64,
    /// The sample's total log-probability, when the executor knows it better than the sum of
    /// `logprobs` (beam search: set on each hypothesis's single final update).
    pub cumulative_logprob: Option<f64>,
    /// Prompt positions scored in this step, in order (`params.prompt_logprobs`; sample 0's
    /// updates only, with no tokens of their own unless the prompt ended in this step).
    pub prompt_logprobs: Vec<PromptLogprob>,
}

impl OutputUpdate {
    /// The single update that ends a failed request.
    pub fn failed(error: RequestError, step: u64) -> OutputUpdate {
        OutputUpdate { error: Some(error), ..OutputUpdate::prompt_scores(Vec::new(), step) }
    }

    /// An update of sample 0 that carries a step's scored prompt positions and nothing else.
    pub fn prompt_scores(prompt_logprobs: Vec<PromptLogprob>, step: u64) -> OutputUpdate {
        OutputUpdate {
            sample: 0,
            token_ids: Vec::new(),
            text_diff: String::new(),
            logprobs: Vec::new(),
            finish_reason: None,
            error: None,
            step,
            cumulative_logprob: None,
            prompt_logprobs,
        }
    }
}

/// A submitted request: iterate (or `poll_recv`) for its updates; the stream ends when every
/// sample is done. Dropping the handle cancels the request.
pub struct RequestHandle {
    pub(super) id: u64,
    pub(super) updates: UpdateReceiver,
    pub(super) cancelled: Arc<AtomicBool>,
    pub(super) commands: Sender<Command>,
    /// Its place in the waiting queue, given back on cancel or drop.
    pub(super) slot: Arc<QueueSlot>,
}

/// A finished sample's tokens and text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleOutput {
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
}

impl RequestHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Asks the executor to stop this request: its place in the queue is free at once, and
    /// the loop drops it (freeing its blocks) before its next step.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.slot.release();
        // Wakes an idle loop; if it is gone there is nothing to cancel.
        let _ = self.commands.send(Command::Wake);
    }

    /// The next update, blocking; `None` once the request is done.
    pub fn recv(&self) -> Option<OutputUpdate> {
        self.updates.recv()
    }

    /// The next update from async code: `Pending` (and `cx` woken later) while there is none,
    /// `Ready(None)` once the request is done.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<OutputUpdate>> {
        self.updates.poll_recv(cx)
    }

    /// Blocks until done and gathers each sample's tokens and text (the first error ends it).
    pub fn wait(self) -> Result<Vec<SampleOutput>, RequestError> {
        let mut samples: Vec<SampleOutput> = Vec::new();
        for u in self {
            if let Some(e) = u.error {
                return Err(e);
            }
            if samples.len() <= u.sample {
                samples.resize(u.sample + 1, SampleOutput::default());
            }
            samples[u.sample].token_ids.extend(&u.token_ids);
            samples[u.sample].text.push_str(&u.text_diff);
            if u.finish_reason.is_some() {
                samples[u.sample].finish_reason = u.finish_reason;
            }
        }
        Ok(samples)
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        // Nobody reads the updates any more: the loop drops the request before its next step
        // (a no-op when it already finished).
        self.cancelled.store(true, Ordering::Release);
        self.slot.release();
    }
}

impl Iterator for RequestHandle {
    type Item = OutputUpdate;

    fn next(&mut self) -> Option<OutputUpdate> {
        self.recv()
    }
}
