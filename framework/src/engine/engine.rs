//! The Engine: the executable graph (`executable`), the memory it runs in (`memory`: arena,
//! workspace, weights, KV pools), the step I/O (`step_io` in, `readback` out) and the launch
//! layer around the graph (`launcher`: CUDA graphs, profilers, the host pool), composed.
//! `forward` runs one packed batch and returns the requested logits; `forward_sample` samples
//! them on the device.

use super::batch::StepBatch;
use super::budget::Part;
use super::error::{EngineError, LoadError};
use super::executable::ExecutableGraph;
use super::graph::Graph;
use super::launcher::Launcher;
use super::limits::EngineLimits;
use super::memory::{EngineMemory, MemorySetup};
use super::observe::{ActivationStats, MatmulObserver};
use super::plan::MemoryPlan;
use super::readback::Readback;
use super::sampler::{DeviceSampler, Logits};
use super::source::WeightSource;
use super::step_io::{self, Region, RowSampling, StepIo};
use super::weight_bytes::WeightBytes;
use crate::device::CudaDevice;
use rtllm_models::{io, Value};
use rtllm_plugin_api::{DType, DeviceKind, KernelBox};
use std::sync::Arc;

/// Where an engine runs and how its device memory is used.
#[derive(Default)]
pub struct Placement {
    /// The GPU (None: the host).
    pub device: Option<Arc<CudaDevice>>,
    /// On a GPU with no explicit block count: the share of the memory still free after weights
    /// and activations that the KV cache takes (TensorRT-LLM's `free_gpu_memory_fraction`).
    pub free_gpu_memory_fraction: Option<f64>,
    /// Capture decode steps into CUDA graphs (GPU only).
    pub cuda_graphs: bool,
    /// A `sample` kernel for the logits' dtype: `forward_sample` picks tokens on the device.
    pub sampler: Option<KernelBox>,
    /// The graph has collectives that block until the other ranks arrive (tensor parallelism):
    /// a CPU step then runs on the calling thread, not inside the shared host pool, whose
    /// threads must never wait on another rank.
    pub blocking_collectives: bool,
    /// Record the activation input of every weight matmul (calibration; see `observe`).
    pub observe_matmul_inputs: bool,
}

/// A finished graph with everything it runs with, before the engine allocates its memory: what
/// the engine serializer writes (`engine::serialize`) and what [`BuiltParts::into_engine`] runs.
pub struct BuiltParts {
    pub graph: Graph,
    /// One per node of `graph`, created after the passes.
    pub kernels: Vec<KernelBox>,
    /// Owner of the memory `WeightBytes::Borrowed` points into.
    pub weights: Arc<dyn WeightSource>,
    /// One entry per `graph.weight_uses()` item, in that order.
    pub bound: Vec<WeightBytes>,
    pub limits: EngineLimits,
    pub kv_cache_dtype: DType,
    /// Host, or the GPU with its KV sizing, graphs and sampler.
    pub placement: Placement,
}

impl BuiltParts {
    pub fn into_engine(self) -> Result<Engine, LoadError> {
        let executable = ExecutableGraph::new(self.graph, self.kernels)?;
        Ok(Engine::new(executable, self.weights, self.bound, self.limits, self.kv_cache_dtype, self.placement)?)
    }
}

/// The step inputs (pinned and mirrored on a GPU) and the logits readback, as budget parts.
fn io_parts(limits: &EngineLimits, on_gpu: bool, readback_bytes: Option<usize>) -> Vec<Part> {
    let sized_by = "max_num_tokens, max_batch_size and max_seq_len (--max-num-tokens, --max-batch-size, --max-seq-len)";
    let staged = step_io::staged_bytes(limits);
    let mut parts = vec![Part::host("step inputs", staged, sized_by)];
    if on_gpu {
        parts.push(Part { on_device: true, ..Part::host("step inputs", staged, sized_by) });
    }
    // Logits come back at most max_batch_size rows at a time (pinned on a GPU, as f32 on the host).
    parts.push(Part::host("logits readback", readback_bytes, "max_batch_size (--max-batch-size)"));
    parts
}

pub struct Engine {
    exe: ExecutableGraph,
    memory: EngineMemory,
    io: StepIo,
    readback: Readback,
    launcher: Launcher,
    sampler: Option<DeviceSampler>,
    limits: EngineLimits,
    device: Option<Arc<CudaDevice>>,
    logits: Value,
    logits_dtype: DType,
    vocab_size: usize,
    /// The padded copy of a decode step (reused).
    padded: StepBatch,
}

// SAFETY: the raw pointers inside are to buffers the engine owns (or 'static mappings).
unsafe impl Send for Engine {}

impl Drop for Engine {
    /// Work in flight finishes, then the captured decode graphs go before the kernels they
    /// launch: a graph holding NCCL collectives must be destroyed while its communicator (owned
    /// by the collective kernels) still exists.
    fn drop(&mut self) {
        if let Some(device) = &self.device {
            if let Err(e) = device.synchronize() {
                tracing::warn!("synchronizing the GPU before freeing the engine: {e}");
            }
        }
        self.launcher.release_graphs();
    }
}

impl Engine {
    /// Assembles an engine from an executable graph and its bound weights (one entry per
    /// `graph.weight_uses()` item, in that order), placed on the host or a GPU.
    pub fn new(
        exe: ExecutableGraph,
        weight_source: Arc<dyn WeightSource>,
        weights: Vec<WeightBytes>,
        mut limits: EngineLimits,
        kv_dtype: DType,
        placement: Placement,
    ) -> Result<Engine, EngineError> {
        limits.check().map_err(EngineError::Setup)?;
        let device = placement.device.clone();
        if let Some(d) = &device {
            d.bind().map_err(super::error::setup("binding the GPU"))?;
        }
        let graph = exe.graph();
        let logits =
            graph.output(io::LOGITS).ok_or_else(|| EngineError::Setup("the graph has no 'logits' output".into()))?;
        let logits_meta = graph.meta(logits).clone();
        let vocab_size = logits_meta
            .dims
            .get(1)
            .and_then(|d| d.known())
            .ok_or_else(|| EngineError::Setup(format!("logits output {logits_meta} has no known vocab dim")))?;
        if !matches!(logits_meta.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(EngineError::Setup(format!("logits are {}, not a float dtype", logits_meta.dtype)));
        }
        let workspace_bytes = exe.workspace_bytes(&limits.max_symbols())?;
        let row_bytes = vocab_size.checked_mul(logits_meta.dtype.block_bytes());
        let readback_bytes = row_bytes.and_then(|r| r.checked_mul(limits.max_batch_size));
        let setup = MemorySetup {
            graph,
            weight_source,
            weights,
            kv_dtype,
            workspace_bytes,
            device: device.as_ref(),
            free_gpu_memory_fraction: placement.free_gpu_memory_fraction,
            other_parts: io_parts(&limits, device.is_some(), readback_bytes),
        };
        let memory = EngineMemory::new(setup, &mut limits)?;
        let io = StepIo::new(&limits, device.as_ref())?;
        let readback = Readback::new(device.as_ref(), readback_bytes.unwrap_or(0))?;
        let observer = placement.observe_matmul_inputs.then(|| MatmulObserver::for_graph(graph));
        let launcher = Launcher::new(
            device.clone(),
            placement.cuda_graphs,
            !placement.blocking_collectives,
            (limits.max_batch_size, limits.max_num_tokens),
            observer,
        );
        Ok(Engine {
            exe,
            memory,
            io,
            readback,
            launcher,
            sampler: placement.sampler.map(DeviceSampler::new),
            limits,
            device,
            logits,
            logits_dtype: logits_meta.dtype,
            vocab_size,
            padded: StepBatch::default(),
        })
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    pub fn graph(&self) -> &Graph {
        self.exe.graph()
    }

    pub fn memory_plan(&self) -> &MemoryPlan {
        self.memory.plan()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The GPU this engine runs on (None: the host).
    pub fn device(&self) -> Option<&Arc<CudaDevice>> {
        self.device.as_ref()
    }

    /// Whether `forward_sample` picks tokens on the device.
    pub fn samples_on_device(&self) -> bool {
        self.sampler.is_some()
    }

    /// The largest |activation| each weight matmul has seen over the steps run so far, when
    /// the engine was built with `BuildConfig::observe_matmul_inputs` (None otherwise).
    pub fn activation_stats(&self) -> Option<&ActivationStats> {
        self.launcher.activation_stats()
    }

    /// Decode-step CUDA graphs captured so far.
    pub fn captured_graphs(&self) -> usize {
        self.launcher.captured()
    }

    /// Bytes of KV cache per block across all layers (K and V).
    pub fn kv_bytes_per_block(&self) -> usize {
        self.memory.kv_bytes_per_block(self.limits.num_kv_blocks)
    }

    pub fn kv_cache_dtype(&self) -> DType {
        self.memory.kv_cache_dtype()
    }

    /// Copies KV cache block `src` over block `dst` in every layer (copy-on-write for forks).
    pub fn copy_kv_block(&mut self, src: usize, dst: usize) -> Result<(), EngineError> {
        self.memory.copy_kv_block(src, dst, self.limits.num_kv_blocks)
    }

    fn device_kind(&self) -> DeviceKind {
        if self.device.is_some() {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        }
    }

    /// Stages the batch and runs the graph (replaying a captured decode graph where one
    /// applies). Returns the number of logits rows computed (padding included).
    fn run(&mut self, batch: &StepBatch, sampling: Option<&[RowSampling]>) -> Result<usize, EngineError> {
        self.limits.validate(batch)?;
        if let Some(d) = &self.device {
            d.bind().map_err(|e| EngineError::device("bind", e))?;
        }
        let bucket = if step_io::is_decode_step(batch) { self.launcher.bucket_for(batch.num_seqs()) } else { None };
        let mut padded = std::mem::take(&mut self.padded);
        let effective = match bucket {
            Some(b) => {
                let scratch = self.limits.num_kv_blocks as i32;
                step_io::pad_decode(batch, b, self.limits.max_blocks_per_seq(), scratch, &mut padded);
                &padded
            }
            None => batch,
        };
        let result = self.run_effective(effective, bucket, sampling);
        self.padded = padded;
        result
    }

    fn run_effective(
        &mut self,
        batch: &StepBatch,
        bucket: Option<usize>,
        sampling: Option<&[RowSampling]>,
    ) -> Result<usize, EngineError> {
        self.io.stage(batch, sampling)?;
        self.io.upload(self.device.as_ref())?;
        let shape = [batch.num_tokens(), batch.num_seqs(), batch.max_blocks, batch.logits_indices.len()];
        let kind = self.device_kind();
        let (memory, io, limits) = (&self.memory, &self.io, &self.limits);
        // SAFETY: every address is the engine's own buffer for that value (arena slot, bound
        // weight, KV pool or staging region), sized by the plan for the engine's limits and
        // fixed for the engine's life.
        unsafe { self.exe.prepare(shape, || limits.step_symbols(batch), kind, |v| memory.addr(v, io)) };
        // SAFETY: the engine's workspace, sized for every node, used by one launch at a time.
        let mut env = unsafe { self.launcher.env(self.memory.workspace()) };
        self.launcher.run(&mut self.exe, &mut env, bucket)?;
        Ok(batch.logits_indices.len())
    }

    fn logits_addr(&self) -> Result<*mut u8, EngineError> {
        self.memory.arena_addr(self.logits).ok_or_else(|| EngineError::Setup("logits are not an op output".into()))
    }

    /// Runs one packed batch; returns logits, `logits_indices.len() × vocab_size` row-major (f32,
    /// converted from the graph's logits dtype when that is bf16/f16).
    pub fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError> {
        self.run(batch, None)?;
        let n = batch.logits_indices.len() * self.vocab_size;
        let addr = self.logits_addr()?;
        self.readback.logits(self.device.as_ref(), addr, n, self.logits_dtype)
    }

    /// Runs one packed batch and samples one token per logits row with the `sample` kernel,
    /// so only token ids come back (`rows[i]` is row i's parameters). Needs a sampler
    /// (`samples_on_device`).
    pub fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<&[i32], EngineError> {
        if self.sampler.is_none() {
            return Err(EngineError::Setup("this engine has no device sampler".into()));
        }
        if rows.len() != batch.logits_indices.len() {
            return Err(EngineError::Batch(format!(
                "{} sampling rows for {} logits rows",
                rows.len(),
                batch.logits_indices.len()
            )));
        }
        self.launcher.begin_step()?;
        let computed = self.run(batch, Some(rows))?;
        let logits =
            Logits { addr: self.logits_addr()?, dtype: self.logits_dtype, vocab: self.vocab_size, rows: computed };
        // SAFETY: as in `run_effective`.
        let mut env = unsafe { self.launcher.env(self.memory.workspace()) };
        let kind = self.device_kind();
        let sampler = self.sampler.as_mut().ok_or_else(|| EngineError::Setup("no device sampler".into()))?;
        sampler.launch(&mut env, &logits, &self.io, kind)?;
        self.launcher.end_step()?;
        let rows_out = batch.logits_indices.len();
        let tokens = self.readback.tokens(self.device.as_ref(), self.io.addr(Region::Tokens), rows_out)?;
        self.launcher.finish_step(batch.num_tokens() == batch.num_seqs())?;
        Ok(tokens)
    }
}
