//! The engine's memory: the activation plan and its arena, the kernels' shared workspace, the
//! bound weights, the KV cache pools (one per layer and K/V, each with a scratch block past
//! the ones the KV manager hands out) and where each graph value lives (`addr`).

use super::budget::{self, product, Part, KV_BLOCK_ENTRY_BYTES};
use super::error::{setup, EngineError};
use super::graph::{Graph, ValueSource};
use super::limits::EngineLimits;
use super::plan::{plan_memory, MemoryPlan};
use super::source::WeightSource;
use super::step_io::{self, Region, StepIo};
use super::weight_bytes::{upload_all, WeightBytes};
use crate::device::{CudaDevice, Memory};
use rtllm_models::{io, Value};
use rtllm_plugin_api::{DType, TensorMeta};
use std::sync::Arc;

/// Where a value's bytes are during a forward pass.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Arena(usize),
    Weight(usize),
    Kv(usize),
    Step(Region),
    Unbound,
}

/// Checks that every input a node's provider writes in place is memory the engine may let it
/// write (a KV pool or an activation, never a weight or a staged step input) and is passed to
/// that node once, so the writable view is the only view of it in the launch.
fn check_in_place(graph: &Graph, slots: &[Slot]) -> Result<(), EngineError> {
    for node in &graph.nodes {
        let at = || format!("{} '{}' (plugin {})", node.scope, node.op, node.provider.plugin);
        for &i in &node.provider.in_place {
            let Some(&v) = node.inputs.get(i) else {
                return Err(EngineError::Setup(format!(
                    "{}: declares input {i} in place, but the node has {} inputs",
                    at(),
                    node.inputs.len()
                )));
            };
            let what = match (slots.get(v.0), &graph.values[v.0].source) {
                (Some(Slot::Kv(_) | Slot::Arena(_)), _) => None,
                (_, ValueSource::Weight { name, .. }) => Some(format!("weight '{name}'")),
                (_, ValueSource::Input(name)) => Some(format!("step input '{name}'")),
                _ => Some("an unbound value".to_string()),
            };
            if let Some(what) = what {
                return Err(EngineError::Setup(format!(
                    "{}: writes input {i} in place, which is {what}; only KV caches and activations may be written",
                    at()
                )));
            }
            if node.inputs.iter().filter(|&&u| u == v).count() > 1 {
                return Err(EngineError::Setup(format!(
                    "{}: input {i} is written in place and also passed as another input",
                    at()
                )));
            }
        }
    }
    Ok(())
}

/// The parts of the engine's own memory: arena, workspace, KV pools (on the device for a GPU
/// engine; left out when they are sized from the free memory later) and the KV manager's
/// entries (host).
fn planned_parts(
    on_device: bool,
    plan: &MemoryPlan,
    workspace_bytes: usize,
    limits: &EngineLimits,
    kv_pools: Option<(usize, usize)>,
) -> Vec<Part> {
    let tokens = "max_num_tokens and max_batch_size (--max-num-tokens, --max-batch-size)";
    let blocks = "num_kv_blocks (--num-kv-blocks, or --kv-cache-bytes)";
    let mut parts = vec![
        Part { what: "activation arena", bytes: Some(plan.arena_bytes), sized_by: tokens, on_device },
        Part { what: "kernel workspace", bytes: Some(workspace_bytes), sized_by: tokens, on_device },
        Part::host("KV block table", product(&[limits.num_kv_blocks, KV_BLOCK_ENTRY_BYTES]), blocks),
    ];
    if let Some((layers, block_bytes)) = kv_pools {
        let kv = limits.num_kv_blocks.checked_add(1).and_then(|n| product(&[block_bytes, n, layers]));
        parts.push(Part { what: "KV cache", bytes: kv, sized_by: blocks, on_device });
    }
    parts
}

/// What the engine's memory is made for.
pub(super) struct MemorySetup<'a> {
    pub graph: &'a Graph,
    /// Owner of the memory `WeightBytes::Borrowed` points into.
    pub weight_source: Arc<dyn WeightSource>,
    /// One entry per `graph.weight_uses()` item, in that order.
    pub weights: Vec<WeightBytes>,
    pub kv_dtype: DType,
    pub workspace_bytes: usize,
    pub device: Option<&'a Arc<CudaDevice>>,
    /// On a GPU: size the KV pools to this share of the memory still free (overrides
    /// `limits.num_kv_blocks`).
    pub free_gpu_memory_fraction: Option<f64>,
    /// What the engine allocates besides this memory (step inputs, readback), checked with it.
    pub other_parts: Vec<Part>,
}

pub struct EngineMemory {
    plan: MemoryPlan,
    arena: Memory,
    workspace: Memory,
    weights: Vec<WeightBytes>,
    /// One pool per layer and K/V, each with one scratch block past `num_kv_blocks` that
    /// padding rows of a decode graph write into.
    kv: Vec<Memory>,
    kv_meta: TensorMeta,
    slots: Vec<Slot>,
    /// Owner of the memory `WeightBytes::Borrowed` points into (None once every weight is on
    /// the device: a GPU engine then holds no host copy of its weights).
    _weight_source: Option<Arc<dyn WeightSource>>,
}

impl EngineMemory {
    /// Plans and allocates everything for `limits` (whose `num_kv_blocks` is set here when the
    /// KV cache takes a share of free GPU memory).
    pub(super) fn new(s: MemorySetup<'_>, limits: &mut EngineLimits) -> Result<EngineMemory, EngineError> {
        let graph = s.graph;
        let symbols = limits.max_symbols();
        let plan = plan_memory(graph, &symbols).map_err(EngineError::Setup)?;
        let uses = graph.weight_uses();
        if uses.len() != s.weights.len() {
            return Err(EngineError::Setup(format!(
                "{} weights bound for {} weight uses",
                s.weights.len(),
                uses.len()
            )));
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
                    if s.weights[idx].len() < need {
                        return Err(EngineError::Setup(format!(
                            "weight {name}: {} bytes bound, {need} needed for {}",
                            s.weights[idx].len(),
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
        let kv_meta = TensorMeta { dtype: s.kv_dtype, ..kv_meta };
        check_in_place(graph, &slots)?;

        let device = s.device;
        // One block per layer pool (K or V) across all layers, plus the scratch block.
        let block_bytes = {
            let mut one = limits.max_symbols();
            one.set(io::SYM_NUM_BLOCKS, 1);
            one.bytes(&kv_meta).map_err(EngineError::Setup)?
        };
        let weights = match device {
            None => s.weights,
            Some(d) => upload_all(d, s.weights)?,
        };
        let kv_sized_by_fraction = device.is_some() && s.free_gpu_memory_fraction.is_some();
        let kv_pools = (!kv_sized_by_fraction).then_some((kv_layers, block_bytes));
        let mut parts = s.other_parts;
        parts.extend(planned_parts(device.is_some(), &plan, s.workspace_bytes, limits, kv_pools));
        budget::check(&parts, device)?;
        let arena = Memory::zeroed(device, plan.arena_bytes).map_err(setup("activation arena"))?;
        let workspace = Memory::zeroed(device, s.workspace_bytes).map_err(setup("workspace"))?;

        if let (Some(d), Some(fraction)) = (device, s.free_gpu_memory_fraction) {
            let (free, total) = d.mem_info().map_err(setup("reading free GPU memory"))?;
            let budget = (free as f64 * fraction) as usize;
            let blocks =
                (budget / block_bytes.saturating_mul(kv_layers).max(1)).saturating_sub(1).min(super::limits::MAX_LIMIT);
            if blocks == 0 {
                return Err(EngineError::Setup(format!(
                    "free_gpu_memory_fraction {fraction} of {free} free bytes (of {total}) holds no KV block of {} bytes",
                    block_bytes * kv_layers
                )));
            }
            limits.num_kv_blocks = blocks;
        }
        let kv_pool_bytes = block_bytes
            .checked_mul(limits.num_kv_blocks + 1)
            .ok_or_else(|| EngineError::Setup("the KV cache pool size overflows".into()))?;
        let kv = (0..kv_layers)
            .map(|_| Memory::zeroed(device, kv_pool_bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup("KV cache"))?;
        tracing::info!(
            device = device.map(|d| d.name()).unwrap_or("cpu"),
            arena = plan.arena_bytes,
            unshared = plan.unshared_bytes,
            workspace = s.workspace_bytes,
            kv_blocks = limits.num_kv_blocks,
            kv_bytes = kv_pool_bytes * kv_layers,
            "engine memory"
        );
        let borrows = weights.iter().any(|w| matches!(w, WeightBytes::Borrowed { .. }));
        let _weight_source = borrows.then_some(s.weight_source);
        Ok(EngineMemory { plan, arena, workspace, weights, kv, kv_meta, slots, _weight_source })
    }

    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The address value `v` lives at (host or device); staged step inputs are in `io`.
    pub(super) fn addr(&self, v: Value, io: &StepIo) -> *mut u8 {
        match self.slots[v.0] {
            // The plan put every arena slot inside the arena (host or device address).
            Slot::Arena(off) => self.arena.addr().wrapping_add(off),
            Slot::Weight(i) => self.weights[i].ptr(),
            Slot::Kv(i) => self.kv[i].addr(),
            Slot::Step(r) => io.addr(r),
            Slot::Unbound => std::ptr::null_mut(),
        }
    }

    /// The arena address of op output `v` (None: `v` is not a planned op output).
    pub(super) fn arena_addr(&self, v: Value) -> Option<*mut u8> {
        match self.slots.get(v.0) {
            Some(Slot::Arena(off)) => Some(self.arena.addr().wrapping_add(*off)),
            _ => None,
        }
    }

    /// The kernels' shared workspace: address and bytes.
    pub(super) fn workspace(&self) -> (*mut u8, usize) {
        (self.workspace.addr(), self.workspace.len())
    }

    /// Bytes of KV cache per block across all layers (K and V).
    pub fn kv_bytes_per_block(&self, num_kv_blocks: usize) -> usize {
        let per_layer = self.kv.first().map(|b| b.len()).unwrap_or(0);
        per_layer * self.kv.len() / (num_kv_blocks + 1)
    }

    pub fn kv_cache_dtype(&self) -> DType {
        self.kv_meta.dtype
    }

    /// Copies KV cache block `src` over block `dst` in every layer (copy-on-write for forks).
    pub fn copy_kv_block(&mut self, src: usize, dst: usize, num_kv_blocks: usize) -> Result<(), EngineError> {
        let nb = num_kv_blocks;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::graph::{Node, ProviderInfo, ValueInfo};
    use rtllm_plugin_api::{Attrs, DType};

    /// A graph of a weight, a KV pool and one node reading `inputs` that writes input 0 in place.
    fn graph(inputs: &[usize]) -> (Graph, Vec<Slot>) {
        let meta = TensorMeta::of(DType::F32, &[4]);
        let value = |source| ValueInfo { meta: meta.clone(), source };
        let values = vec![
            value(ValueSource::Weight { name: "w".into(), dtype: DType::F32 }),
            value(ValueSource::Input("kv_cache.0.k".into())),
            value(ValueSource::Node { node: 0, index: 0 }),
        ];
        let provider = ProviderInfo {
            plugin: "p".into(),
            plugin_version: "1".into(),
            op_version: 1,
            file: "p.so".into(),
            in_place: vec![0],
        };
        let node = Node {
            op: "writer".into(),
            scope: "layer 0".into(),
            attrs: Attrs::new(),
            inputs: inputs.iter().map(|&i| Value(i)).collect(),
            outputs: vec![Value(2)],
            provider,
        };
        let graph = Graph { values, nodes: vec![node], inputs: Vec::new(), outputs: Vec::new() };
        (graph, vec![Slot::Weight(0), Slot::Kv(0), Slot::Arena(0)])
    }

    #[test]
    fn in_place_inputs_must_be_writable_and_passed_once() {
        let (g, slots) = graph(&[1]);
        check_in_place(&g, &slots).expect("a KV pool may be written in place");
        let (g, slots) = graph(&[0]);
        let e = check_in_place(&g, &slots).unwrap_err().to_string();
        assert!(e.contains("weight 'w'") && e.contains("layer 0 'writer'"), "{e}");
        let (g, slots) = graph(&[1, 1]);
        let e = check_in_place(&g, &slots).unwrap_err().to_string();
        assert!(e.contains("also passed as another input"), "{e}");
        let (mut g, slots) = graph(&[1]);
        g.nodes[0].provider.in_place = vec![3];
        let e = check_in_place(&g, &slots).unwrap_err().to_string();
        assert!(e.contains("declares input 3 in place"), "{e}");
    }
}
