//! The executor (TensorRT-LLM's `Executor`): a background thread that owns the engine and
//! runs the in-flight batching loop (see `worker`; each request's samplers, stop checks and
//! streamed text are its `client`), with `submit` → `RequestHandle` for clients (its updates
//! come over `updates`; its place in the bounded waiting queue is a `queue` slot), stats, and
//! `shutdown`.

mod beam;
mod client;
mod queue;
mod request;
mod updates;
mod worker;

pub use queue::QueueLimits;
pub use request::{OutputUpdate, Request, RequestError, RequestHandle, SampleOutput, SubmitError};

use super::kv_cache::{KvCacheConfig, KvCacheManager, KvCacheStats};
use super::scheduler::{CapacitySchedulerPolicy, Scheduler, SchedulerConfig};
use crate::engine::BuildConfig;
use crate::parallel::ModelRunner;
use crate::tokenizer::Tokenizer;
use queue::{QueueGauge, QueueSlot};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How the executor runs. `build` is the engine build config callers load the model with
/// (`Model::load(path, registry, &config.build)`); the scheduler limits default to the engine's.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    pub build: BuildConfig,
    pub kv_cache: KvCacheConfig,
    pub capacity_scheduler_policy: CapacitySchedulerPolicy,
    /// At most the engine's max_batch_size (default: the engine's).
    pub max_batch_size: Option<usize>,
    /// At most the engine's max_num_tokens (default: the engine's).
    pub max_num_tokens: Option<usize>,
    pub enable_chunked_prefill: bool,
    /// Tokens that end a sample unless `ignore_eos` (usually `Model::eos_ids()`).
    pub eos_token_ids: Vec<u32>,
    /// Detokenizes outputs: the updates then carry text, and requests may have stop strings
    /// (usually the model's tokenizer; `Llm` sets it).
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// How many requests and prompt tokens may wait for admission (default: unbounded).
    pub queue: QueueLimits,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            build: BuildConfig::default(),
            kv_cache: KvCacheConfig::default(),
            capacity_scheduler_policy: CapacitySchedulerPolicy::default(),
            max_batch_size: None,
            max_num_tokens: None,
            enable_chunked_prefill: true,
            eos_token_ids: Vec::new(),
            tokenizer: None,
            queue: QueueLimits::default(),
        }
    }
}

impl ExecutorConfig {
    /// A config whose engine build allows `max_batch_size` sequences per step.
    pub fn with_max_batch_size(max_batch_size: usize) -> ExecutorConfig {
        let mut c = ExecutorConfig::default();
        c.build.max_batch_size = max_batch_size;
        c
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecutorError {
    #[error("{name} = {value} exceeds the engine's {limit}")]
    ExceedsEngine { name: &'static str, value: usize, limit: usize },
    #[error("invalid executor config: {0}")]
    Config(String),
    #[error("cannot start the executor thread: {0}")]
    Spawn(String),
    #[error("the executor thread panicked")]
    Panicked,
}

/// What the loop reports after every step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutorStats {
    pub running_requests: usize,
    pub waiting_requests: usize,
    /// Most requests running at once so far.
    pub peak_running_requests: usize,
    pub steps: u64,
    pub preemptions: u64,
    pub completed_requests: u64,
    pub generated_tokens: u64,
    pub kv: KvCacheStats,
}

pub(crate) enum Command {
    Submit(Box<worker::NewRequest>),
    Wake,
    Shutdown,
}

/// Fixed facts the submit path checks requests against.
#[derive(Clone, Debug)]
struct Limits {
    vocab_size: usize,
    max_batch_size: usize,
    max_seq_len: usize,
    tokens_per_block: usize,
    total_blocks: usize,
    detokenizes: bool,
}

/// A running executor; dropping it shuts the loop down.
pub struct Executor {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<ExecutorStats>>,
    next_id: AtomicU64,
    limits: Limits,
    queue: Arc<QueueGauge>,
}

impl Executor {
    /// Starts the loop on a thread that takes ownership of `engine` (an `Engine`, or a
    /// `parallel::TensorParallelEngine` whose ranks it drives in lockstep).
    pub fn new<R: ModelRunner + 'static>(engine: R, config: ExecutorConfig) -> Result<Executor, ExecutorError> {
        let lim = engine.limits().clone();
        let max_batch_size = config.max_batch_size.unwrap_or(lim.max_batch_size);
        let max_num_tokens = config.max_num_tokens.unwrap_or(lim.max_num_tokens);
        if max_batch_size > lim.max_batch_size {
            return Err(ExecutorError::ExceedsEngine {
                name: "max_batch_size",
                value: max_batch_size,
                limit: lim.max_batch_size,
            });
        }
        if max_num_tokens > lim.max_num_tokens {
            return Err(ExecutorError::ExceedsEngine {
                name: "max_num_tokens",
                value: max_num_tokens,
                limit: lim.max_num_tokens,
            });
        }
        if max_batch_size == 0 || max_num_tokens < max_batch_size {
            return Err(ExecutorError::Config(format!(
                "need 1 <= max_batch_size ({max_batch_size}) <= max_num_tokens ({max_num_tokens})"
            )));
        }
        let kv = KvCacheManager::new(&config.kv_cache, lim.num_kv_blocks, lim.tokens_per_block);
        if kv.total_blocks() == 0 {
            return Err(ExecutorError::Config(format!(
                "kv_cache.max_tokens {:?} holds no block of {} tokens",
                config.kv_cache.max_tokens, lim.tokens_per_block
            )));
        }
        let limits = Limits {
            vocab_size: engine.vocab_size(),
            max_batch_size,
            max_seq_len: lim.max_seq_len,
            tokens_per_block: lim.tokens_per_block,
            total_blocks: kv.total_blocks(),
            detokenizes: config.tokenizer.is_some(),
        };
        let scheduler = Scheduler::new(SchedulerConfig {
            capacity_scheduler_policy: config.capacity_scheduler_policy,
            max_batch_size,
            max_num_tokens,
            enable_chunked_prefill: config.enable_chunked_prefill,
            max_logits_rows: lim.max_batch_size,
            max_seq_len: lim.max_seq_len,
        });
        let stats = Arc::new(Mutex::new(ExecutorStats { kv: kv.stats(), ..Default::default() }));
        let (tx, rx) = channel();
        let mut w =
            worker::Worker::new(engine, kv, scheduler, config.eos_token_ids, config.tokenizer, rx, stats.clone());
        let thread = std::thread::Builder::new()
            .name("rtllm-executor".into())
            .spawn(move || w.run())
            .map_err(|e| ExecutorError::Spawn(e.to_string()))?;
        let queue = Arc::new(QueueGauge::new(config.queue));
        Ok(Executor { commands: tx, thread: Some(thread), stats, next_id: AtomicU64::new(1), limits, queue })
    }

    /// Queues a request; refuses one that can never run, and one the queue has no room for
    /// (`QueueFull`). The effective `max_tokens` is clamped to `max_seq_len - prompt_len` (so
    /// `usize::MAX` means "until the context is full").
    pub fn submit(&self, request: Request) -> Result<RequestHandle, SubmitError> {
        let mut handles = self.submit_all(vec![request])?;
        handles.pop().ok_or(SubmitError::ShutDown)
    }

    /// Queues several requests, all or none: each is checked, then the queue's room for all of
    /// them is reserved at once, then they are sent to the loop.
    pub fn submit_all(&self, mut requests: Vec<Request>) -> Result<Vec<RequestHandle>, SubmitError> {
        for r in &mut requests {
            self.check(r)?;
        }
        let counted = requests.iter().filter(|r| !r.priority);
        let (count, tokens) = counted.fold((0, 0), |(n, t), r| (n + 1, t + r.prompt_ids.len()));
        self.queue.reserve(count, tokens)?;
        // From here each request's slot owns its share of the reservation.
        let slots: Vec<Arc<QueueSlot>> = requests
            .iter()
            .map(|r| Arc::new(QueueSlot::reserved(self.queue.clone(), r.prompt_ids.len(), !r.priority)))
            .collect();
        let mut handles = Vec::with_capacity(requests.len());
        for (request, slot) in requests.into_iter().zip(slots) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let cancelled = Arc::new(AtomicBool::new(false));
            let (tx, rx) = updates::update_channel();
            let new = worker::NewRequest { id, request, updates: tx, cancelled: cancelled.clone(), slot: slot.clone() };
            // On failure the handles made so far drop, which cancels their requests.
            self.commands.send(Command::Submit(Box::new(new))).map_err(|_| SubmitError::ShutDown)?;
            handles.push(RequestHandle { id, updates: rx, cancelled, commands: self.commands.clone(), slot });
        }
        Ok(handles)
    }

    /// Whether `requests` more requests of `tokens` prompt tokens in all would find room in the
    /// queue now (a check before the work of preparing them; `submit` reserves the room).
    pub fn check_queue(&self, requests: usize, tokens: usize) -> Result<(), SubmitError> {
        self.queue.check(requests, tokens)
    }

    /// Requests and prompt tokens waiting for admission now.
    pub fn queued(&self) -> (usize, usize) {
        self.queue.queued()
    }

    /// Refuses a request that can never run; clamps its `max_tokens` to the context left.
    fn check(&self, request: &mut Request) -> Result<(), SubmitError> {
        let l = &self.limits;
        let prompt = request.prompt_ids.len();
        if prompt == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if let Some(&token) = request.prompt_ids.iter().find(|&&t| t as usize >= l.vocab_size) {
            return Err(SubmitError::TokenOutOfRange { token, vocab_size: l.vocab_size });
        }
        request.params.validate()?;
        if let Some(p) = &request.params.prompt_logprobs {
            if p.start >= prompt {
                return Err(SubmitError::NothingToScore { start: p.start, prompt });
            }
        }
        if !l.detokenizes && !request.params.stop.is_empty() {
            return Err(SubmitError::StopStringsNeedTokenizer);
        }
        if request.n == 0 || request.n > l.max_batch_size {
            return Err(SubmitError::BadSampleCount { n: request.n, max_batch_size: l.max_batch_size });
        }
        let p = &request.params;
        if p.use_beam_search && (p.beam_width > l.max_batch_size || request.n > p.beam_width) {
            return Err(SubmitError::BadBeamWidth {
                beam_width: p.beam_width,
                n: request.n,
                max_batch_size: l.max_batch_size,
            });
        }
        if prompt + 1 > l.max_seq_len {
            return Err(SubmitError::TooLong { prompt, max_seq_len: l.max_seq_len });
        }
        let needed = (prompt + 1).div_ceil(l.tokens_per_block);
        if needed > l.total_blocks {
            return Err(SubmitError::ExceedsKvCache { needed, total: l.total_blocks });
        }
        request.params.max_tokens = request.params.max_tokens.min(l.max_seq_len - prompt);
        Ok(())
    }

    /// The loop's counters as of its last step.
    pub fn stats(&self) -> ExecutorStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Stops the loop (running requests end without a final update; the `Llm` API reports
    /// them `Cancelled`) and joins its thread.
    pub fn shutdown(mut self) -> Result<(), ExecutorError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ExecutorError> {
        let _ = self.commands.send(Command::Shutdown);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ExecutorError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
