//! `Llm` and its builder: loads a model through the one loader (`Model::load`: the built-in
//! default, a GGUF file, an HF or engine directory, dummy weights, optionally with a TOML model
//! definition, on one engine or tensor-parallel ranks), starts an executor, and generates.

use super::output::RequestOutput;
use super::prompt::Prompt;
use super::stream::{OutputStream, OutputStreamAsync};
use super::tracker::RequestTracker;
use crate::engine::BuildConfig;
use crate::model::{Definition, Model, ModelError, ModelSource, ModelSpec};
use crate::parallel::ModelRunner;
use crate::registry::{DiscoveryOptions, Registry};
use crate::runtime::executor::{
    Executor, ExecutorConfig, ExecutorError, ExecutorStats, Request, RequestError, RequestHandle, SubmitError,
};
use crate::runtime::kv_cache::KvCacheConfig;
use crate::runtime::scheduler::CapacitySchedulerPolicy;
use crate::sampling::{SamplingError, SamplingParams};
use crate::tokenizer::{ChatMessage, ContentSpecialTokens, Tokenizer, TokenizerError};
use rtllm_models::ModelConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Request(RequestError),
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    #[error("the request ended without output")]
    Closed,
}

/// Configures and loads an [`Llm`].
#[derive(Clone, Debug, Default)]
pub struct LlmBuilder {
    spec: ModelSpec,
    executor: ExecutorConfig,
    plugin_paths: Vec<PathBuf>,
    registry: Option<Arc<Registry>>,
}

impl LlmBuilder {
    /// A GGUF file, an HF directory or an engine directory (default: the built-in default model).
    pub fn model(mut self, path: impl Into<PathBuf>) -> Self {
        self.spec.source = ModelSource::Path(path.into());
        self
    }

    /// A TOML model definition to assemble the model from instead of its registered architecture.
    pub fn model_definition(mut self, path: impl Into<PathBuf>) -> Self {
        self.spec.definition = Some(Definition::File(path.into()));
        self
    }

    /// Random weights for a config instead of a model file (see `weights::dummy`).
    pub fn dummy_weights(mut self, spec: crate::weights::dummy::DummySpec) -> Self {
        self.spec.source = ModelSource::Dummy(spec);
        self
    }

    /// The whole model choice at once (source and definition).
    pub fn model_spec(mut self, spec: ModelSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Engine build settings: max_batch_size, max_num_tokens, max_seq_len, dtypes, device, pins.
    pub fn build_config(mut self, build: BuildConfig) -> Self {
        self.executor.build = build;
        self
    }

    /// Splits the model across this many ranks (tensor parallelism; on a GPU one device per
    /// rank from the build's `device_ordinal`). Sets `build_config().tensor_parallel_size`.
    pub fn tensor_parallel_size(mut self, ranks: usize) -> Self {
        self.executor.build.tensor_parallel_size = ranks;
        self
    }

    pub fn kv_cache_config(mut self, kv: KvCacheConfig) -> Self {
        self.executor.kv_cache = kv;
        self
    }

    pub fn capacity_scheduler_policy(mut self, policy: CapacitySchedulerPolicy) -> Self {
        self.executor.capacity_scheduler_policy = policy;
        self
    }

    pub fn enable_chunked_prefill(mut self, on: bool) -> Self {
        self.executor.enable_chunked_prefill = on;
        self
    }

    /// The whole executor configuration at once (scheduler limits, KV cache, build).
    pub fn executor_config(mut self, config: ExecutorConfig) -> Self {
        self.executor = config;
        self
    }

    /// A plugin dylib or directory to load in addition to the default discovery.
    pub fn plugin_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.plugin_paths.push(path.into());
        self
    }

    /// Uses this registry instead of discovering plugins.
    pub fn registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Loads the model (see [`Model::load`]) and starts its executor.
    pub fn build(self) -> Result<Llm, LlmError> {
        let registry = match self.registry {
            Some(r) => r,
            None => Arc::new(Registry::load(
                &DiscoveryOptions::default()
                    .with_paths(self.plugin_paths)
                    .for_device(self.executor.build.selection.device),
            )),
        };
        let model = Model::load(&self.spec, &registry, &self.executor.build)?;
        Llm::start(model, self.executor)
    }
}

impl Llm {
    /// Starts an executor over a loaded model (one engine or several ranks); `executor.build`
    /// is not used (the model is built already).
    pub fn start(model: Model, executor: ExecutorConfig) -> Result<Llm, LlmError> {
        let eos_ids = model.eos_ids();
        let Model { path, config, tokenizer, engine, load_time, registry } = model;
        let tokenizer = Arc::new(tokenizer);
        let max_seq_len = engine.limits().max_seq_len;
        let mut executor_config = executor;
        executor_config.eos_token_ids = eos_ids.clone();
        executor_config.tokenizer = Some(tokenizer.clone());
        let executor = Executor::new(engine, executor_config)?;
        Ok(Llm { executor, tokenizer, config, eos_ids, path, max_seq_len, load_time, _registry: registry })
    }
}

/// A loaded model behind a running executor. Every call feeds the same executor, so requests
/// from several threads (or tasks) are batched together.
pub struct Llm {
    executor: Executor,
    tokenizer: Arc<Tokenizer>,
    config: ModelConfig,
    eos_ids: Vec<u32>,
    path: PathBuf,
    max_seq_len: usize,
    load_time: Duration,
    _registry: Arc<Registry>,
}

impl Llm {
    /// Loads a GGUF file or HF directory with default settings.
    pub fn new(model: impl AsRef<Path>) -> Result<Llm, LlmError> {
        Llm::builder().model(model.as_ref()).build()
    }

    /// Loads the built-in default model (SmolLM2-135M-Instruct) from the cache.
    pub fn default_model() -> Result<Llm, LlmError> {
        Llm::builder().build()
    }

    pub fn builder() -> LlmBuilder {
        LlmBuilder::default()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn model_path(&self) -> &Path {
        &self.path
    }

    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// How long loading the model took (reading, building or the engine cache).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Token ids that end generation.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn stats(&self) -> ExecutorStats {
        self.executor.stats()
    }

    /// Requests and prompt tokens waiting for admission to the executor's batch now (a
    /// cancelled request leaves this count at once).
    pub fn queued(&self) -> (usize, usize) {
        self.executor.queued()
    }

    /// Tokenizes a prompt (text gets BOS as the model configures it).
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, LlmError> {
        match prompt {
            Prompt::Text(t) => Ok(self.tokenizer.encode(t, true)?),
            Prompt::Tokens(ids) => Ok(ids.clone()),
        }
    }

    /// Renders messages with the model's chat template (with the generation prompt) and
    /// tokenizes the result; special-token text typed inside a message stays text.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, LlmError> {
        Ok(Prompt::Tokens(self.chat_prompt_with(messages, ContentSpecialTokens::Text, usize::MAX)?))
    }

    /// [`Llm::chat_prompt`] with the choice of how special-token text inside messages is
    /// encoded, giving up (`TokenizerError::TooLong`) past `max_tokens`.
    pub fn chat_prompt_with(
        &self,
        messages: &[ChatMessage],
        content: ContentSpecialTokens,
        max_tokens: usize,
    ) -> Result<Vec<u32>, LlmError> {
        Ok(self.tokenizer.encode_chat(messages, true, content, max_tokens)?)
    }

    /// Submits one request and returns its output stream.
    pub fn generate_stream(
        &self,
        prompt: impl Into<Prompt>,
        params: &SamplingParams,
    ) -> Result<OutputStream, LlmError> {
        let (request, job) = self.prepare(prompt.into(), params)?;
        Ok(job.stream(self.executor.submit(request)?))
    }

    /// Submits one request per prompt (`params[i]` for `prompts[i]`), all or none: the
    /// executor's queue takes every one of them or refuses the call (`SubmitError::QueueFull`).
    pub fn generate_async_batch(
        &self,
        prompts: Vec<Prompt>,
        params: &[SamplingParams],
    ) -> Result<Vec<OutputStreamAsync>, LlmError> {
        if prompts.len() != params.len() {
            return Err(LlmError::Unsupported("a batch whose prompt and parameter counts differ"));
        }
        let (requests, jobs): (Vec<Request>, Vec<Job>) = prompts
            .into_iter()
            .zip(params)
            .map(|(p, params)| self.prepare(p, params))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let handles = self.executor.submit_all(requests)?;
        Ok(jobs.into_iter().zip(handles).map(|(job, handle)| job.stream(handle).into_async()).collect())
    }

    /// A one-token greedy generation that jumps the executor's queue and may take the batch
    /// slot reserved for it, so it answers quickly on a busy executor: a health probe.
    pub async fn probe(&self) -> Result<RequestOutput, LlmError> {
        let token = self.tokenizer.bos_token_id().or_else(|| self.eos_ids.first().copied()).unwrap_or(0);
        let (mut request, job) = self.prepare(Prompt::Tokens(vec![token]), &SamplingParams::greedy(1))?;
        request.priority = true;
        job.stream(self.executor.submit(request)?).into_async().finish().await
    }

    /// Whether `requests` more requests of `tokens` prompt tokens would find room in the
    /// executor's queue now (`SubmitError::QueueFull` or `ExceedsQueue` when not); a check
    /// before the work of preparing them.
    pub fn check_queue(&self, requests: usize, tokens: usize) -> Result<(), LlmError> {
        Ok(self.executor.check_queue(requests, tokens)?)
    }

    /// Checks the parameters, tokenizes the prompt and makes the executor request (and what
    /// its stream will need).
    fn prepare(&self, prompt: Prompt, params: &SamplingParams) -> Result<(Request, Job), LlmError> {
        params.validate()?;
        let ids = self.encode_prompt(&prompt)?;
        let text = match prompt {
            Prompt::Text(t) => Some(t),
            Prompt::Tokens(_) => None,
        };
        let samples = params.best_of.unwrap_or(params.n).max(params.n);
        let mut request = Request::new(ids.clone(), params.clone());
        request.n = samples;
        Ok((request, Job { ids, params: params.clone(), text, samples }))
    }

    /// Generates for every prompt; all are submitted before any is awaited, so they run
    /// batched together. Outputs come in prompt order.
    pub fn generate<P: Into<Prompt>>(
        &self,
        prompts: impl IntoIterator<Item = P>,
        params: &SamplingParams,
    ) -> Result<Vec<RequestOutput>, LlmError> {
        let streams: Vec<OutputStream> =
            prompts.into_iter().map(|p| self.generate_stream(p, params)).collect::<Result<_, _>>()?;
        streams.into_iter().map(OutputStream::finish).collect()
    }

    /// Chat: renders the messages with the model's template and generates.
    pub fn chat(&self, messages: &[ChatMessage], params: &SamplingParams) -> Result<RequestOutput, LlmError> {
        self.generate_stream(self.chat_prompt(messages)?, params)?.finish()
    }

    /// Async stream of outputs (on any async executor; no thread is taken).
    pub fn generate_async_stream(
        &self,
        prompt: impl Into<Prompt>,
        params: &SamplingParams,
    ) -> Result<OutputStreamAsync, LlmError> {
        Ok(self.generate_stream(prompt, params)?.into_async())
    }

    /// Async generation of one prompt.
    pub async fn generate_async(
        &self,
        prompt: impl Into<Prompt>,
        params: &SamplingParams,
    ) -> Result<RequestOutput, LlmError> {
        self.generate_async_stream(prompt, params)?.finish().await
    }

    /// Stops the executor (running requests end) and joins its thread.
    pub fn shutdown(self) -> Result<(), LlmError> {
        Ok(self.executor.shutdown()?)
    }
}

/// What the output stream of a prepared request needs.
struct Job {
    ids: Vec<u32>,
    params: SamplingParams,
    text: Option<String>,
    samples: usize,
}

impl Job {
    fn stream(self, handle: RequestHandle) -> OutputStream {
        let tracker = RequestTracker::new(handle.id(), self.text, self.ids, &self.params, self.samples);
        OutputStream::new(handle, tracker)
    }
}
