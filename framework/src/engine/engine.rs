//! The Engine: a built graph with its kernels, bound weights, activation arena, workspace and
//! KV cache pools; `forward` runs one packed batch and returns the requested logits.

use super::batch::StepBatch;
use super::buffer::AlignedBuf;
use super::decode_graphs::DecodeGraphs;
use super::graph::{Graph, ValueSource};
use super::load::WeightSource;
use super::plan::{plan_memory, MemoryPlan, Symbols};
use super::step_io::{self, Region, RowSampling, StepIo};
use crate::device::{CudaDevice, DeviceBuffer, Memory, PinnedBuffer};
use crate::host_pool::HostPool;
use rtllm_models::{io, Value};
use rtllm_plugin_api::{DType, DeviceKind, InputView, KernelBox, LaunchEnv, OutputView, TensorMeta};
use std::sync::Arc;

/// Limits an engine is built for (TensorRT-LLM's names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    pub max_seq_len: usize,
    pub tokens_per_block: usize,
    pub num_kv_blocks: usize,
}

impl EngineLimits {
    pub fn max_blocks_per_seq(&self) -> usize {
        self.max_seq_len.div_ceil(self.tokens_per_block)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error("{scope}: op '{op}' (plugin {plugin}) failed: {message}")]
    Kernel { scope: String, op: String, plugin: String, message: String },
    #[error("engine setup: {0}")]
    Setup(String),
}

/// Where a value's bytes are during a forward pass.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Arena(usize),
    Weight(usize),
    Kv(usize),
    Step(Region),
    Unbound,
}

/// Weight bytes the engine reads: borrowed from the weight source (kept alive by the engine),
/// converted into a host buffer of its own, or uploaded to the device.
pub enum WeightBytes {
    Borrowed { ptr: *const u8, len: usize },
    Owned(AlignedBuf),
    Device(DeviceBuffer),
}

impl WeightBytes {
    fn ptr(&self) -> *mut u8 {
        match self {
            WeightBytes::Borrowed { ptr, .. } => *ptr as *mut u8,
            WeightBytes::Owned(b) => b.as_ptr() as *mut u8,
            WeightBytes::Device(b) => b.device_ptr() as usize as *mut u8,
        }
    }

    /// The host bytes (None once uploaded to a device).
    pub fn host_bytes(&self) -> Option<&[u8]> {
        match self {
            // SAFETY: the weight source keeps the borrowed range alive and unchanged.
            WeightBytes::Borrowed { ptr, len } => Some(unsafe { std::slice::from_raw_parts(*ptr, *len) }),
            WeightBytes::Owned(b) => Some(b.as_bytes()),
            WeightBytes::Device(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            WeightBytes::Borrowed { len, .. } => *len,
            WeightBytes::Owned(b) => b.len(),
            WeightBytes::Device(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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
}

pub struct Engine {
    graph: Graph,
    plan: MemoryPlan,
    limits: EngineLimits,
    device: Option<Arc<CudaDevice>>,
    arena: Memory,
    workspace: Memory,
    weights: Vec<WeightBytes>,
    /// One pool per layer and K/V, each with one scratch block past `num_kv_blocks` that
    /// padding rows of a decode graph write into.
    kv: Vec<Memory>,
    kv_meta: TensorMeta,
    slots: Vec<Slot>,
    logits: Value,
    logits_dtype: DType,
    vocab_size: usize,
    pool: &'static HostPool,
    /// Run CPU steps inside `pool` (off when collectives block; see `Placement`).
    step_in_pool: bool,
    /// Owner of the memory `WeightBytes::Borrowed` points into.
    _weight_source: Arc<dyn WeightSource>,
    io: StepIo,
    /// Each node's launch arguments; metas are rebuilt only when the step's shape changes.
    node_args: Vec<NodeArgs>,
    /// The (T, S, MB, L) the metas in `node_args` were resolved for.
    args_shape: Option<[usize; 4]>,
    graphs: Option<DecodeGraphs>,
    /// The padded copy of a decode step (reused).
    padded: StepBatch,
    sampler: Option<SamplerState>,
    /// Logits or tokens read back from the device, and the f32 logits handed out.
    readback: Option<PinnedBuffer>,
    logits_f32: Vec<f32>,
    tokens: Vec<i32>,
    profile: Option<super::op_profile::OpProfile>,
    step_profile: Option<super::step_profile::StepProfile>,
}

/// The device sampler and its launch arguments (rebuilt when L changes).
struct SamplerState {
    kernel: KernelBox,
    args: Option<(usize, NodeArgs)>,
}

/// One node's launch arguments: views of the engine's own buffers (hence `'static`: they live
/// as long as the engine, which never moves or frees the memory they address).
#[derive(Default)]
struct NodeArgs {
    inputs: Vec<InputView<'static>>,
    outputs: Vec<OutputView<'static>>,
}

// SAFETY: the raw pointers inside are to buffers the engine owns (or 'static mappings).
unsafe impl Send for Engine {}

impl Drop for Engine {
    /// Work in flight finishes, then the captured decode graphs go before the kernels they
    /// launch: a graph holding NCCL collectives must be destroyed while its communicator (owned
    /// by the collective kernels in `graph`) still exists.
    fn drop(&mut self) {
        if let Some(device) = &self.device {
            if let Err(e) = device.synchronize() {
                tracing::warn!("synchronizing the GPU before freeing the engine: {e}");
            }
        }
        self.graphs = None;
    }
}

fn setup(what: &str) -> impl Fn(crate::device::CudaError) -> EngineError + '_ {
    move |e| EngineError::Setup(format!("{what}: {e}"))
}

impl Engine {
    /// Assembles an engine from a built graph and its bound weights (one entry per
    /// `graph.weight_uses()` item, in that order), placed on the host or a GPU.
    pub fn new(
        graph: Graph,
        weight_source: Arc<dyn WeightSource>,
        weights: Vec<WeightBytes>,
        mut limits: EngineLimits,
        kv_dtype: DType,
        placement: Placement,
    ) -> Result<Engine, EngineError> {
        let device = placement.device.clone();
        if let Some(d) = &device {
            d.bind().map_err(setup("binding the GPU"))?;
        }
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
        let symbols = Self::max_symbols(&limits);
        let plan = plan_memory(&graph, &symbols).map_err(EngineError::Setup)?;

        let uses = graph.weight_uses();
        if uses.len() != weights.len() {
            return Err(EngineError::Setup(format!("{} weights bound for {} weight uses", weights.len(), uses.len())));
        }
        let mut slots = vec![Slot::Unbound; graph.values.len()];
        let mut kv_layers = 0usize;
        let mut kv_meta = None;
        for (i, info) in graph.values.iter().enumerate() {
            slots[i] = match &info.source {
                ValueSource::Node { .. } => plan.slots.get(&i).map(|s| Slot::Arena(s.0)).unwrap_or(Slot::Unbound),
                ValueSource::Weight { name, dtype } => {
                    let idx = uses
                        .iter()
                        .position(|(n, d)| n == name && d == dtype)
                        .ok_or_else(|| EngineError::Setup(format!("weight {name} unbound")))?;
                    let need = symbols.bytes(&info.meta).map_err(EngineError::Setup)?;
                    if weights[idx].len() < need {
                        return Err(EngineError::Setup(format!(
                            "weight {name}: {} bytes bound, {need} needed for {}",
                            weights[idx].len(),
                            info.meta
                        )));
                    }
                    Slot::Weight(idx)
                }
                ValueSource::Input(name) => {
                    if let Some(r) = step_io::region_of(name) {
                        Slot::Step(r)
                    } else if name.starts_with("kv_cache.") {
                        kv_meta.get_or_insert_with(|| info.meta.clone());
                        kv_layers += 1;
                        Slot::Kv(kv_layers - 1)
                    } else {
                        return Err(EngineError::Setup(format!("graph input '{name}' is not one the runtime binds")));
                    }
                }
            };
        }
        let kv_meta = kv_meta.ok_or_else(|| EngineError::Setup("the graph declares no KV cache inputs".into()))?;
        check_in_place(&graph, &slots)?;
        let kv_meta = TensorMeta { dtype: kv_dtype, ..kv_meta };

        let weights = match &device {
            None => weights,
            Some(d) => upload_weights(d, weights)?,
        };
        let mut workspace_bytes = 0usize;
        for node in &graph.nodes {
            let metas: Vec<TensorMeta> = node.inputs.iter().map(|v| symbols.resolve(graph.meta(*v))).collect();
            let need = node
                .kernel
                .workspace_bytes(&metas)
                .map_err(|e| EngineError::Setup(format!("{} '{}': {e}", node.scope, node.op)))?;
            workspace_bytes = workspace_bytes.max(need);
        }
        let arena = Memory::zeroed(device.as_ref(), plan.arena_bytes).map_err(setup("activation arena"))?;
        let workspace = Memory::zeroed(device.as_ref(), workspace_bytes).map_err(setup("workspace"))?;
        let io = StepIo::new(&limits, device.as_ref())?;

        // One block per layer pool (K or V) across all layers, plus the scratch block.
        let block_bytes = {
            let mut one = Self::max_symbols(&limits);
            one.set(io::SYM_NUM_BLOCKS, 1);
            one.bytes(&kv_meta).map_err(EngineError::Setup)?
        };
        if let (Some(d), Some(fraction)) = (&device, placement.free_gpu_memory_fraction) {
            let (free, total) = d.mem_info().map_err(setup("reading free GPU memory"))?;
            let budget = (free as f64 * fraction) as usize;
            let blocks = (budget / (block_bytes * kv_layers).max(1)).saturating_sub(1);
            if blocks == 0 {
                return Err(EngineError::Setup(format!(
                    "free_gpu_memory_fraction {fraction} of {free} free bytes (of {total}) holds no KV block of {} bytes",
                    block_bytes * kv_layers
                )));
            }
            limits.num_kv_blocks = blocks;
        }
        let kv_pool_bytes = block_bytes * (limits.num_kv_blocks + 1);
        let kv = (0..kv_layers)
            .map(|_| Memory::zeroed(device.as_ref(), kv_pool_bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup("KV cache"))?;
        let logits_row_bytes = vocab_size * logits_meta.dtype.block_bytes();
        let readback = match &device {
            None => None,
            Some(d) => {
                Some(d.alloc_pinned(limits.max_batch_size * logits_row_bytes).map_err(setup("logits readback"))?)
            }
        };
        tracing::info!(
            device = device.as_ref().map(|d| d.name()).unwrap_or("cpu"),
            arena = plan.arena_bytes,
            unshared = plan.unshared_bytes,
            workspace = workspace_bytes,
            kv_blocks = limits.num_kv_blocks,
            kv_bytes = kv_pool_bytes * kv_layers,
            "engine memory"
        );
        let profile = device.as_ref().and_then(|_| super::op_profile::OpProfile::from_env());
        let step_profile = device.as_ref().and_then(|d| super::step_profile::StepProfile::from_env(d));
        let graphs = (device.is_some() && placement.cuda_graphs && profile.is_none())
            .then(|| DecodeGraphs::new(limits.max_batch_size, limits.max_num_tokens));
        Ok(Engine {
            arena,
            workspace,
            graph,
            plan,
            limits,
            device,
            weights,
            kv,
            kv_meta,
            slots,
            logits,
            logits_dtype: logits_meta.dtype,
            vocab_size,
            pool: HostPool::global(),
            step_in_pool: !placement.blocking_collectives,
            _weight_source: weight_source,
            io,
            node_args: Vec::new(),
            args_shape: None,
            graphs,
            padded: StepBatch::default(),
            sampler: placement.sampler.map(|kernel| SamplerState { kernel, args: None }),
            readback,
            logits_f32: Vec::new(),
            tokens: Vec::new(),
            profile,
            step_profile,
        })
    }

    fn max_symbols(l: &EngineLimits) -> Symbols {
        let mut s = Symbols::default();
        s.set(io::SYM_TOKENS, l.max_num_tokens);
        s.set(io::SYM_SEQS, l.max_batch_size);
        s.set(io::SYM_SEQS_PLUS_ONE, l.max_batch_size + 1);
        s.set(io::SYM_MAX_BLOCKS, l.max_blocks_per_seq());
        // The pools hold one scratch block past the ones the KV manager hands out.
        s.set(io::SYM_NUM_BLOCKS, l.num_kv_blocks + 1);
        s.set(io::SYM_BLOCK_SIZE, l.tokens_per_block);
        s.set(io::SYM_LOGITS, l.max_batch_size.max(1));
        s
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.plan
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

    /// Decode-step CUDA graphs captured so far.
    pub fn captured_graphs(&self) -> usize {
        self.graphs.as_ref().map_or(0, |g| g.captured())
    }

    /// Bytes of KV cache per block across all layers (K and V).
    pub fn kv_bytes_per_block(&self) -> usize {
        let per_layer = self.kv.first().map(|b| b.len()).unwrap_or(0);
        per_layer * self.kv.len() / (self.limits.num_kv_blocks + 1)
    }

    pub fn kv_cache_dtype(&self) -> DType {
        self.kv_meta.dtype
    }

    /// Copies KV cache block `src` over block `dst` in every layer (copy-on-write for forks).
    pub fn copy_kv_block(&mut self, src: usize, dst: usize) -> Result<(), EngineError> {
        let nb = self.limits.num_kv_blocks;
        if src >= nb || dst >= nb {
            return Err(EngineError::Batch(format!("KV block copy {src} -> {dst} outside the pool of {nb}")));
        }
        for buf in &mut self.kv {
            let per = buf.len() / (nb + 1);
            match buf {
                Memory::Host(b) => b.as_bytes_mut().copy_within(src * per..(src + 1) * per, dst * per),
                Memory::Device(b) => {
                    let base = b.device_ptr();
                    // SAFETY: both blocks lie inside this pool (checked above).
                    unsafe { b.device().copy_device_async(base + (dst * per) as u64, base + (src * per) as u64, per) }
                        .map_err(|e| EngineError::Batch(format!("KV block copy: {e}")))?;
                }
            }
        }
        Ok(())
    }

    fn validate(&self, b: &StepBatch) -> Result<(), EngineError> {
        let (t, s, l) = (b.num_tokens(), b.num_seqs(), b.logits_indices.len());
        let lim = &self.limits;
        let bad = |m: String| Err(EngineError::Batch(m));
        if t == 0 || s == 0 {
            return bad("empty batch".into());
        }
        if t > lim.max_num_tokens {
            return bad(format!("{t} tokens exceed max_num_tokens {}", lim.max_num_tokens));
        }
        if s > lim.max_batch_size || l > lim.max_batch_size {
            return bad(format!("{s} sequences / {l} logits rows exceed max_batch_size {}", lim.max_batch_size));
        }
        if b.positions.len() != t || b.query_start.len() != s + 1 || b.block_tables.len() != s * b.max_blocks {
            return bad("inconsistent packed lengths".into());
        }
        if b.max_blocks > lim.max_blocks_per_seq() {
            return bad(format!("{} blocks per sequence exceed max_seq_len {}", b.max_blocks, lim.max_seq_len));
        }
        if b.query_start[0] != 0 || b.query_start[s] as usize != t || b.query_start.windows(2).any(|w| w[1] < w[0]) {
            return bad("query_start must rise from 0 to the token count".into());
        }
        if let Some(&x) = b.block_tables.iter().find(|&&x| x < 0 || x as usize >= lim.num_kv_blocks) {
            return bad(format!("block id {x} outside the pool of {}", lim.num_kv_blocks));
        }
        for (i, &len) in b.seq_lens.iter().enumerate() {
            let q = b.query_start[i + 1] - b.query_start[i];
            if len < q || len as usize > lim.max_seq_len || len as usize > b.max_blocks * lim.tokens_per_block {
                return bad(format!(
                    "sequence {i}: length {len} with {q} new tokens does not fit its blocks / max_seq_len"
                ));
            }
        }
        if let Some(&x) = b.logits_indices.iter().find(|&&x| x < 0 || x as usize >= t) {
            return bad(format!("logits index {x} outside {t} tokens"));
        }
        Ok(())
    }

    fn step_symbols(&self, b: &StepBatch) -> Symbols {
        let mut s = Self::max_symbols(&self.limits);
        s.set(io::SYM_TOKENS, b.num_tokens());
        s.set(io::SYM_SEQS, b.num_seqs());
        s.set(io::SYM_SEQS_PLUS_ONE, b.num_seqs() + 1);
        s.set(io::SYM_MAX_BLOCKS, b.max_blocks);
        s.set(io::SYM_LOGITS, b.logits_indices.len());
        s
    }

    fn ptr(&self, v: Value) -> *mut u8 {
        match self.slots[v.0] {
            // The plan put every arena slot inside the arena (host or device address).
            Slot::Arena(off) => self.arena.addr().wrapping_add(off),
            Slot::Weight(i) => self.weights[i].ptr(),
            Slot::Kv(i) => self.kv[i].addr(),
            Slot::Step(r) => self.io.addr(r),
            Slot::Unbound => std::ptr::null_mut(),
        }
    }

    fn device_kind(&self) -> DeviceKind {
        if self.device.is_some() {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        }
    }

    /// Brings every node's launch arguments up to date for this step's shape. Every address
    /// (arena, weights, KV pools, staged inputs) is fixed for the engine's life, so only the
    /// metas change, and only when the shape does.
    fn prepare_args(&mut self, batch: &StepBatch, symbols: &Symbols) {
        let shape = [batch.num_tokens(), batch.num_seqs(), batch.max_blocks, batch.logits_indices.len()];
        if self.args_shape == Some(shape) && self.node_args.len() == self.graph.nodes.len() {
            return;
        }
        let kind = self.device_kind();
        let meta = |v: &Value| symbols.resolve(self.graph.meta(*v));
        // SAFETY (every view below): the pointer is the engine's own buffer for this value,
        // sized by the plan and alive as long as the engine. The plan gives every node's
        // outputs memory disjoint from its inputs and from each other; `check_in_place` made
        // sure an input written in place is a KV pool or activation, passed to the node once.
        let node_args = self
            .graph
            .nodes
            .iter()
            .map(|node| NodeArgs {
                inputs: node
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| unsafe {
                        if node.provider.in_place.contains(&i) {
                            InputView::new_in_place(meta(v), self.ptr(*v), kind)
                        } else {
                            InputView::new(meta(v), self.ptr(*v), kind)
                        }
                    })
                    .collect(),
                outputs: node.outputs.iter().map(|v| unsafe { OutputView::new(meta(v), self.ptr(*v), kind) }).collect(),
            })
            .collect();
        self.node_args = node_args;
        self.args_shape = Some(shape);
    }

    fn launch_env(&self) -> LaunchEnv<'static> {
        // SAFETY: the workspace is the engine's, sized for every node, and the engine launches
        // one node at a time; the stream is its device's.
        unsafe {
            LaunchEnv::new(
                self.device_kind(),
                self.device.as_ref().map_or(0, |d| d.ordinal as i32),
                self.device.as_ref().map_or(std::ptr::null_mut(), |d| d.stream()),
                self.workspace.addr(),
                self.workspace.len(),
                self.pool.services(),
            )
        }
    }

    fn launch_nodes(&mut self) -> Result<(), EngineError> {
        let mut env = self.launch_env();
        for (node, args) in self.graph.nodes.iter().zip(&mut self.node_args) {
            node.kernel.launch(&mut env, &mut args.inputs, &mut args.outputs).map_err(|e| EngineError::Kernel {
                scope: node.scope.clone(),
                op: node.op.clone(),
                plugin: node.provider.plugin.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// `launch_nodes` with an event before each node and after the last (RTLLM_PROFILE_OPS).
    fn launch_nodes_profiled(&mut self) -> Result<(), EngineError> {
        let (Some(device), Some(mut profile)) = (self.device.clone(), self.profile.take()) else {
            return self.launch_nodes();
        };
        let mut env = self.launch_env();
        let mut result = Ok(());
        for (i, (node, args)) in self.graph.nodes.iter().zip(&mut self.node_args).enumerate() {
            if let Err(e) = profile.event(&device, i).and_then(|ev| ev.record(&device)) {
                result = Err(device_error("profile event", e));
                break;
            }
            if let Err(e) = node.kernel.launch(&mut env, &mut args.inputs, &mut args.outputs) {
                result = Err(EngineError::Kernel {
                    scope: node.scope.clone(),
                    op: node.op.clone(),
                    plugin: node.provider.plugin.clone(),
                    message: e.to_string(),
                });
                break;
            }
        }
        let n = self.graph.nodes.len();
        if result.is_ok() {
            let end = profile.event(&device, n).and_then(|ev| ev.record(&device));
            let collected = end.and_then(|_| profile.collect(&device, self.graph.nodes.iter().map(|n| n.op.as_str())));
            result = collected.map_err(|e| self.device_error("profile", e));
        }
        self.profile = Some(profile);
        result
    }

    fn device_error(&self, what: &str, e: crate::device::CudaError) -> EngineError {
        device_error(what, e)
    }

    /// Stages the batch and runs the graph (replaying a captured decode graph where one
    /// applies). Returns the number of logits rows computed (padding included).
    fn run(&mut self, batch: &StepBatch, sampling: Option<&[RowSampling]>) -> Result<usize, EngineError> {
        self.validate(batch)?;
        if let Some(d) = &self.device {
            d.bind().map_err(|e| self.device_error("bind", e))?;
        }
        let bucket = match &self.graphs {
            Some(g) if step_io::is_decode_step(batch) => g.bucket_for(batch.num_seqs()),
            _ => None,
        };
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
        let symbols = self.step_symbols(batch);
        self.io.stage(batch, sampling)?;
        self.io.upload(self.device.as_ref())?;
        self.prepare_args(batch, &symbols);
        match (bucket, self.graphs.as_ref().and_then(|g| bucket.and_then(|b| g.get(b)))) {
            (Some(_), Some(graph)) => graph.launch().map_err(|e| self.device_error("graph launch", e))?,
            (Some(b), None) => {
                // First run of this bucket: run it, then record the same launches for replay.
                self.launch_nodes()?;
                let device = self.device.clone().ok_or_else(|| EngineError::Setup("graphs need a GPU".into()))?;
                device.begin_capture().map_err(|e| self.device_error("begin capture", e))?;
                let recorded = self.launch_nodes();
                let graph = device.end_capture();
                recorded?;
                let graph = graph.map_err(|e| self.device_error("end capture", e))?;
                if let Some(g) = self.graphs.as_mut() {
                    g.insert(b, graph);
                }
                tracing::debug!(bucket = b, "captured a decode-step CUDA graph");
            }
            (None, _) if self.profile.is_some() => self.launch_nodes_profiled()?,
            (None, _) if self.device.is_none() && self.step_in_pool => {
                // On the CPU the whole step runs inside the host pool: each kernel's
                // parallel_for then starts from a pool thread (~1.5 µs) instead of being
                // injected from this one (~6 µs), some 400 times a decode step.
                let pool = self.pool;
                let this = PoolRef(self);
                pool.install(move || this.engine().launch_nodes())?
            }
            (None, _) => self.launch_nodes()?,
        }
        Ok(batch.logits_indices.len())
    }

    fn logits_addr(&self) -> Result<*mut u8, EngineError> {
        match self.slots[self.logits.0] {
            Slot::Arena(_) => Ok(self.ptr(self.logits)),
            _ => Err(EngineError::Setup("logits are not an op output".into())),
        }
    }

    /// Runs one packed batch; returns logits, `logits_indices.len() × vocab_size` row-major (f32,
    /// converted from the graph's logits dtype when that is bf16/f16).
    pub fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError> {
        self.run(batch, None)?;
        let rows = batch.logits_indices.len();
        let n = rows * self.vocab_size;
        let addr = self.logits_addr()?;
        let bytes = n * self.logits_dtype.block_bytes();
        match (&self.device, &mut self.readback) {
            (Some(d), Some(pinned)) => {
                // SAFETY: the logits slot holds at least `rows` rows; the pinned buffer max_batch_size.
                unsafe { d.copy_to_host_async(&mut pinned.as_bytes_mut()[..bytes], addr as usize as u64) }
                    .and_then(|_| d.synchronize())
                    .map_err(|e| EngineError::Kernel {
                        scope: "output".into(),
                        op: "logits readback".into(),
                        plugin: "engine".into(),
                        message: e.to_string(),
                    })?;
                let src = &pinned.as_bytes()[..bytes];
                to_f32(self.logits_dtype, src, &mut self.logits_f32);
                Ok(&self.logits_f32)
            }
            _ if self.logits_dtype == DType::F32 => {
                // SAFETY: the logits slot holds at least L × vocab f32s, written by the last node.
                Ok(unsafe { std::slice::from_raw_parts(addr as *const f32, n) })
            }
            _ => {
                // SAFETY: as above, in the logits dtype.
                let src = unsafe { std::slice::from_raw_parts(addr as *const u8, bytes) };
                to_f32(self.logits_dtype, src, &mut self.logits_f32);
                Ok(&self.logits_f32)
            }
        }
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
        if let (Some(p), Some(d)) = (self.step_profile.as_mut(), self.device.as_ref()) {
            p.begin(d).map_err(|e| EngineError::Setup(format!("step profile: {e}")))?;
        }
        let computed = self.run(batch, Some(rows))?;
        let logits = self.logits_addr()?;
        let kind = self.device_kind();
        let (logits_dtype, vocab) = (self.logits_dtype, self.vocab_size);
        let regions = [Region::Temperature, Region::TopK, Region::TopP, Region::Seeds].map(|r| self.io.addr(r));
        let tokens_out = self.io.addr(Region::Tokens);
        let mut env = self.launch_env();
        let sampler = self.sampler.as_mut().ok_or_else(|| EngineError::Setup("no device sampler".into()))?;
        if sampler.args.as_ref().map(|(l, _)| *l) != Some(computed) {
            let meta = |dtype: DType, dims: &[usize]| TensorMeta::of(dtype, dims);
            // SAFETY: every address is a distinct engine buffer sized for max_batch_size rows.
            let args = unsafe {
                NodeArgs {
                    inputs: vec![
                        InputView::new(meta(logits_dtype, &[computed, vocab]), logits, kind),
                        InputView::new(meta(DType::F32, &[computed]), regions[0], kind),
                        InputView::new(meta(DType::I32, &[computed]), regions[1], kind),
                        InputView::new(meta(DType::F32, &[computed]), regions[2], kind),
                        InputView::new(meta(DType::I64, &[computed]), regions[3], kind),
                    ],
                    outputs: vec![OutputView::new(meta(DType::I32, &[computed]), tokens_out, kind)],
                }
            };
            sampler.args = Some((computed, args));
        }
        if let Some((_, args)) = &mut sampler.args {
            sampler.kernel.launch(&mut env, &mut args.inputs, &mut args.outputs).map_err(|e| EngineError::Kernel {
                scope: "output".into(),
                op: "sample".into(),
                plugin: "sampler".into(),
                message: e.to_string(),
            })?;
        }
        if let (Some(p), Some(d)) = (self.step_profile.as_ref(), self.device.as_ref()) {
            p.mark_end(d).map_err(|e| EngineError::Setup(format!("step profile: {e}")))?;
        }
        let rows_out = batch.logits_indices.len();
        self.tokens.clear();
        match (&self.device, &mut self.readback) {
            (Some(d), Some(pinned)) => {
                let bytes = &mut pinned.as_bytes_mut()[..rows_out * 4];
                // SAFETY: the output region holds max_batch_size i32s.
                unsafe { d.copy_to_host_async(bytes, tokens_out as usize as u64) }
                    .and_then(|_| d.synchronize())
                    .map_err(|e| self.device_error("token readback", e))?;
                let bytes = &self.readback.as_ref().map(|p| p.as_bytes()).unwrap_or(&[])[..rows_out * 4];
                self.tokens.extend(bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                if let Some(p) = self.step_profile.as_mut() {
                    let decode_only = batch.num_tokens() == batch.num_seqs();
                    p.finish(decode_only).map_err(|e| EngineError::Setup(format!("step profile: {e}")))?;
                }
            }
            _ => {
                // SAFETY: host memory holding `rows_out` i32s written by the sampler.
                let src = unsafe { std::slice::from_raw_parts(tokens_out as *const i32, rows_out) };
                self.tokens.extend_from_slice(src);
            }
        }
        Ok(&self.tokens)
    }
}

/// Uploads every weight to the device (host copies are dropped as they go).
/// The engine, handed to a host-pool thread for the duration of one CPU step.
struct PoolRef<'a>(&'a mut Engine);

// SAFETY: while `install` runs the closure the calling thread waits and touches nothing; the
// kernels' buffers (views in `node_args`) are plain host memory, usable from any thread.
unsafe impl Send for PoolRef<'_> {}

impl<'a> PoolRef<'a> {
    /// The engine (a method, so closures capture the whole `PoolRef`, which is Send).
    fn engine(self) -> &'a mut Engine {
        self.0
    }
}

fn device_error(what: &str, e: crate::device::CudaError) -> EngineError {
    EngineError::Kernel { scope: "engine".into(), op: what.into(), plugin: "engine".into(), message: e.to_string() }
}

/// Checks that every input a node's provider writes in place is memory the engine may let it
/// write (a KV pool or an activation, not a weight or a per-step input) and is passed to that
/// node once (no other view of it in the same launch).
fn check_in_place(graph: &Graph, slots: &[Slot]) -> Result<(), EngineError> {
    for node in &graph.nodes {
        for &i in &node.provider.in_place {
            let Some(&v) = node.inputs.get(i) else {
                return Err(EngineError::Setup(format!(
                    "{} '{}': plugin {} declares input {i} in place, but the node has {} inputs",
                    node.scope,
                    node.op,
                    node.provider.plugin,
                    node.inputs.len()
                )));
            };
            let what = match (&slots[v.0], &graph.values[v.0].source) {
                (Slot::Kv(_) | Slot::Arena(_), _) => None,
                (_, ValueSource::Weight { name, .. }) => Some(format!("weight '{name}'")),
                (_, ValueSource::Input(name)) => Some(format!("step input '{name}'")),
                _ => Some("an unbound value".to_string()),
            };
            if let Some(what) = what {
                return Err(EngineError::Setup(format!(
                    "{} '{}': plugin {} writes input {i} in place, which is {what}: only KV caches and \
                     activations may be written",
                    node.scope, node.op, node.provider.plugin
                )));
            }
            if node.inputs.iter().filter(|&&u| u == v).count() > 1 {
                return Err(EngineError::Setup(format!(
                    "{} '{}': input {i} is written in place and also passed as another input",
                    node.scope, node.op
                )));
            }
        }
    }
    Ok(())
}

fn upload_weights(device: &Arc<CudaDevice>, weights: Vec<WeightBytes>) -> Result<Vec<WeightBytes>, EngineError> {
    let mut out = Vec::with_capacity(weights.len());
    for w in weights {
        match w.host_bytes() {
            Some(bytes) => out.push(WeightBytes::Device(device.upload(bytes).map_err(setup("uploading weights"))?)),
            None => out.push(w),
        }
    }
    Ok(out)
}

/// Converts float bytes of `dtype` to f32s in `out`.
fn to_f32(dtype: DType, src: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match dtype {
        DType::BF16 => {
            out.extend(src.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()))
        }
        DType::F16 => {
            out.extend(src.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()))
        }
        _ => out.extend(src.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
    }
}
