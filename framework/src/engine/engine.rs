//! The Engine: a built graph with its kernels, bound weights, activation arena, workspace and
//! KV cache pools; `forward` runs one packed batch and returns the requested logits.

use super::batch::StepBatch;
use super::buffer::AlignedBuf;
use super::graph::{Graph, ValueSource};
use super::load::WeightSource;
use super::plan::{plan_memory, MemoryPlan, Symbols};
use crate::host_pool::HostPool;
use rtllm_models::{io, Value};
use rtllm_plugin_api::{DType, DeviceKind, LaunchContext, TensorArg, TensorMeta};
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
    Step(usize),
    Unbound,
}

/// Weight bytes the engine reads: borrowed from the weight source (kept alive by the engine)
/// or converted into a buffer of its own.
pub enum WeightBytes {
    Borrowed { ptr: *const u8, len: usize },
    Owned(AlignedBuf),
}

impl WeightBytes {
    fn ptr(&self) -> *mut u8 {
        match self {
            WeightBytes::Borrowed { ptr, .. } => *ptr as *mut u8,
            WeightBytes::Owned(b) => b.as_ptr() as *mut u8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            WeightBytes::Borrowed { len, .. } => *len,
            WeightBytes::Owned(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Engine {
    graph: Graph,
    plan: MemoryPlan,
    limits: EngineLimits,
    arena: AlignedBuf,
    workspace: AlignedBuf,
    weights: Vec<WeightBytes>,
    kv: Vec<AlignedBuf>,
    kv_meta: TensorMeta,
    slots: Vec<Slot>,
    logits: Value,
    vocab_size: usize,
    pool: &'static HostPool,
    /// Owner of the memory `WeightBytes::Borrowed` points into.
    _weight_source: Arc<dyn WeightSource>,
    // Reused per step so a steady decode loop allocates nothing.
    step_inputs: [Vec<i32>; 6],
    /// Each node's launch arguments; metas are rebuilt only when the step's shape changes.
    node_args: Vec<NodeArgs>,
    /// The (T, S, MB, L) the metas in `node_args` were resolved for.
    args_shape: Option<[usize; 4]>,
}

/// One node's launch arguments.
#[derive(Default)]
struct NodeArgs {
    inputs: Vec<TensorArg>,
    outputs: Vec<TensorArg>,
}

// SAFETY: the raw pointers inside are to buffers the engine owns (or 'static mappings).
unsafe impl Send for Engine {}

const STEP_INPUTS: [&str; 6] =
    [io::INPUT_IDS, io::POSITIONS, io::BLOCK_TABLES, io::SEQ_LENS, io::QUERY_START, io::LOGITS_INDICES];

impl Engine {
    /// Assembles an engine from a built graph and its bound weights (one entry per
    /// `graph.weight_uses()` item, in that order).
    pub fn new(
        graph: Graph,
        weight_source: Arc<dyn WeightSource>,
        weights: Vec<WeightBytes>,
        limits: EngineLimits,
        kv_dtype: DType,
    ) -> Result<Engine, EngineError> {
        let logits =
            graph.output(io::LOGITS).ok_or_else(|| EngineError::Setup("the graph has no 'logits' output".into()))?;
        let vocab_size = graph.meta(logits).dims.get(1).and_then(|d| d.known()).ok_or_else(|| {
            EngineError::Setup(format!("logits output {} has no known vocab dim", graph.meta(logits)))
        })?;
        let symbols = Self::max_symbols(&limits);
        let plan = plan_memory(&graph, &symbols).map_err(EngineError::Setup)?;

        let uses = graph.weight_uses();
        if uses.len() != weights.len() {
            return Err(EngineError::Setup(format!("{} weights bound for {} weight uses", weights.len(), uses.len())));
        }
        let mut slots = vec![Slot::Unbound; graph.values.len()];
        let mut kv_layers: Vec<(String, usize)> = Vec::new();
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
                    if let Some(k) = STEP_INPUTS.iter().position(|s| s == name) {
                        Slot::Step(k)
                    } else if name.starts_with("kv_cache.") {
                        kv_meta.get_or_insert_with(|| info.meta.clone());
                        kv_layers.push((name.clone(), i));
                        Slot::Kv(kv_layers.len() - 1)
                    } else {
                        return Err(EngineError::Setup(format!("graph input '{name}' is not one the runtime binds")));
                    }
                }
            };
        }
        let kv_meta = kv_meta.ok_or_else(|| EngineError::Setup("the graph declares no KV cache inputs".into()))?;
        let kv_meta = TensorMeta { dtype: kv_dtype, ..kv_meta };
        let kv_bytes = symbols.bytes(&kv_meta).map_err(EngineError::Setup)?;
        let kv = kv_layers.iter().map(|_| AlignedBuf::zeroed(kv_bytes)).collect();

        let mut workspace_bytes = 0usize;
        for node in &graph.nodes {
            let metas: Vec<TensorMeta> = node.inputs.iter().map(|v| symbols.resolve(graph.meta(*v))).collect();
            let need = node
                .kernel
                .workspace_bytes(&metas)
                .map_err(|e| EngineError::Setup(format!("{} '{}': {e}", node.scope, node.op)))?;
            workspace_bytes = workspace_bytes.max(need);
        }
        tracing::debug!(
            arena = plan.arena_bytes,
            unshared = plan.unshared_bytes,
            workspace = workspace_bytes,
            kv_per_layer = kv_bytes,
            "engine memory plan"
        );
        Ok(Engine {
            arena: AlignedBuf::zeroed(plan.arena_bytes),
            workspace: AlignedBuf::zeroed(workspace_bytes),
            graph,
            plan,
            limits,
            weights,
            kv,
            kv_meta,
            slots,
            logits,
            vocab_size,
            pool: HostPool::global(),
            _weight_source: weight_source,
            step_inputs: Default::default(),
            node_args: Vec::new(),
            args_shape: None,
        })
    }

    fn max_symbols(l: &EngineLimits) -> Symbols {
        let mut s = Symbols::default();
        s.set(io::SYM_TOKENS, l.max_num_tokens);
        s.set(io::SYM_SEQS, l.max_batch_size);
        s.set(io::SYM_SEQS_PLUS_ONE, l.max_batch_size + 1);
        s.set(io::SYM_MAX_BLOCKS, l.max_blocks_per_seq());
        s.set(io::SYM_NUM_BLOCKS, l.num_kv_blocks);
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

    /// Bytes of KV cache per block across all layers (K and V).
    pub fn kv_bytes_per_block(&self) -> usize {
        let per_layer = self.kv.first().map(|b| b.len()).unwrap_or(0);
        per_layer * self.kv.len() / self.limits.num_kv_blocks.max(1)
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
            let per = buf.len() / nb;
            buf.as_bytes_mut().copy_within(src * per..(src + 1) * per, dst * per);
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

    fn ptr(&mut self, v: Value) -> *mut u8 {
        match self.slots[v.0] {
            // SAFETY: the plan put every arena slot inside the arena.
            Slot::Arena(off) => unsafe { self.arena.as_mut_ptr().add(off) },
            Slot::Weight(i) => self.weights[i].ptr(),
            Slot::Kv(i) => self.kv[i].as_mut_ptr(),
            Slot::Step(k) => self.step_inputs[k].as_mut_ptr() as *mut u8,
            Slot::Unbound => std::ptr::null_mut(),
        }
    }

    /// Brings every node's launch arguments up to date for this step: metas when the step's
    /// shape differs from the last one, data pointers always (step inputs may move).
    fn prepare_args(&mut self, batch: &StepBatch, symbols: &Symbols) {
        let shape = [batch.num_tokens(), batch.num_seqs(), batch.max_blocks, batch.logits_indices.len()];
        let mut node_args = std::mem::take(&mut self.node_args);
        if self.args_shape != Some(shape) || node_args.len() != self.graph.nodes.len() {
            node_args.clear();
            for node in &self.graph.nodes {
                let arg = |v: &Value| {
                    // SAFETY: the pointer is set below before any launch.
                    unsafe {
                        TensorArg::new(symbols.resolve(self.graph.meta(*v)), std::ptr::null_mut(), DeviceKind::Cpu)
                    }
                };
                node_args.push(NodeArgs {
                    inputs: node.inputs.iter().map(arg).collect(),
                    outputs: node.outputs.iter().map(arg).collect(),
                });
            }
            self.args_shape = Some(shape);
        }
        for (n, args) in node_args.iter_mut().enumerate() {
            for i in 0..args.inputs.len() {
                args.inputs[i].data = self.ptr(self.graph.nodes[n].inputs[i]);
            }
            for i in 0..args.outputs.len() {
                args.outputs[i].data = self.ptr(self.graph.nodes[n].outputs[i]);
            }
        }
        self.node_args = node_args;
    }

    /// Runs one packed batch; returns logits, `logits_indices.len() × vocab_size` row-major.
    pub fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError> {
        self.validate(batch)?;
        let symbols = self.step_symbols(batch);
        let sources = [
            &batch.input_ids,
            &batch.positions,
            &batch.block_tables,
            &batch.seq_lens,
            &batch.query_start,
            &batch.logits_indices,
        ];
        for (dst, src) in self.step_inputs.iter_mut().zip(sources) {
            dst.clear();
            dst.extend_from_slice(src);
        }
        let ctx = LaunchContext {
            device: DeviceKind::Cpu,
            ordinal: 0,
            stream: std::ptr::null_mut(),
            workspace: self.workspace.as_mut_ptr(),
            workspace_bytes: self.workspace.len(),
            host: self.pool.services(),
        };
        self.prepare_args(batch, &symbols);
        let mut result = Ok(());
        for (node, args) in self.graph.nodes.iter().zip(&self.node_args) {
            if let Err(e) = node.kernel.launch(&ctx, &args.inputs, &args.outputs) {
                result = Err(EngineError::Kernel {
                    scope: node.scope.clone(),
                    op: node.op.clone(),
                    plugin: node.provider.plugin.clone(),
                    message: e.to_string(),
                });
                break;
            }
        }
        result?;
        let Slot::Arena(off) = self.slots[self.logits.0] else {
            return Err(EngineError::Setup("logits are not an op output".into()));
        };
        let n = batch.logits_indices.len() * self.vocab_size;
        // SAFETY: the logits slot holds at least L × vocab f32s, written by the last node.
        Ok(unsafe { std::slice::from_raw_parts(self.arena.as_ptr().add(off) as *const f32, n) })
    }
}
