//! The executable graph: the finished graph's nodes, the kernel created for each, and their
//! launch arguments (tensor views at the engine's fixed addresses, with metas resolved for one
//! step shape and kept while the shape repeats). `launch` runs every node in order.
//!
//! This is the one place that makes kernel arguments ([`tensor_arg`]) and the one that calls a
//! kernel ([`launch_kernel`]); the device sampler uses both too.

use super::error::EngineError;
use super::graph::Graph;
use super::plan::Symbols;
use rtllm_models::Value;
use rtllm_plugin_api::{DeviceKind, KernelBox, LaunchContext, PluginError, TensorArg, TensorMeta};

/// One kernel call's arguments.
#[derive(Default)]
pub(super) struct KernelArgs {
    pub inputs: Vec<TensorArg>,
    pub outputs: Vec<TensorArg>,
}

/// A tensor argument: `meta` (concrete) at `ptr` on `device`.
///
/// # Safety
/// `ptr` must address a buffer of at least `meta`'s bytes that stays valid (and is not moved)
/// for as long as the argument is launched with.
pub(super) unsafe fn tensor_arg(meta: TensorMeta, ptr: *mut u8, device: DeviceKind) -> TensorArg {
    // SAFETY: the caller's contract is TensorArg::new's.
    unsafe { TensorArg::new(meta, ptr, device) }
}

/// Launches `kernel` on `ctx` with `args`.
pub(super) fn launch_kernel(kernel: &KernelBox, ctx: &LaunchContext, args: &KernelArgs) -> Result<(), PluginError> {
    kernel.launch(ctx, &args.inputs, &args.outputs)
}

/// The graph's nodes with their kernels and launch arguments.
pub struct ExecutableGraph {
    graph: Graph,
    /// One per node, in node order.
    kernels: Vec<KernelBox>,
    /// Each node's launch arguments (empty until the first `prepare`).
    args: Vec<KernelArgs>,
    /// The step shape the metas in `args` were resolved for.
    args_shape: Option<[usize; 4]>,
}

impl ExecutableGraph {
    /// `kernels[i]` runs `graph.nodes[i]`.
    pub fn new(graph: Graph, kernels: Vec<KernelBox>) -> Result<ExecutableGraph, EngineError> {
        if kernels.len() != graph.nodes.len() {
            return Err(EngineError::Setup(format!(
                "{} kernels created for {} graph nodes",
                kernels.len(),
                graph.nodes.len()
            )));
        }
        Ok(ExecutableGraph { graph, kernels, args: Vec::new(), args_shape: None })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The largest workspace any kernel needs at the shapes of `symbols` (the maximal ones).
    pub fn workspace_bytes(&self, symbols: &Symbols) -> Result<usize, EngineError> {
        let mut bytes = 0usize;
        for (node, kernel) in self.graph.nodes.iter().zip(&self.kernels) {
            let metas: Vec<TensorMeta> = node.inputs.iter().map(|v| symbols.resolve(self.graph.meta(*v))).collect();
            let need = kernel
                .workspace_bytes(&metas)
                .map_err(|e| EngineError::Setup(format!("{} '{}': {e}", node.scope, node.op)))?;
            bytes = bytes.max(need);
        }
        Ok(bytes)
    }

    /// Brings every node's launch arguments up to date for a step of `shape` (tokens,
    /// sequences, block-table columns, logits rows). Every address is fixed for the engine's
    /// life, so only the metas change, and only when the shape does; `symbols` is asked for
    /// then.
    ///
    /// # Safety
    /// `addr(v)` must be the address of a buffer holding value `v` at its largest (planned)
    /// size, valid and unmoved while this graph launches with these arguments.
    pub unsafe fn prepare(
        &mut self,
        shape: [usize; 4],
        symbols: impl FnOnce() -> Symbols,
        device: DeviceKind,
        addr: impl Fn(Value) -> *mut u8,
    ) {
        if self.args_shape == Some(shape) && self.args.len() == self.graph.nodes.len() {
            return;
        }
        let symbols = symbols();
        let graph = &self.graph;
        // SAFETY: the caller's contract on `addr`.
        let arg = |v: &Value| unsafe { tensor_arg(symbols.resolve(graph.meta(*v)), addr(*v), device) };
        self.args = graph
            .nodes
            .iter()
            .map(|node| KernelArgs {
                inputs: node.inputs.iter().map(arg).collect(),
                outputs: node.outputs.iter().map(arg).collect(),
            })
            .collect();
        self.args_shape = Some(shape);
    }

    /// Launches node `i` (after `prepare`).
    pub fn launch_node(&self, i: usize, ctx: &LaunchContext) -> Result<(), EngineError> {
        let (Some(node), Some(kernel), Some(args)) = (self.graph.nodes.get(i), self.kernels.get(i), self.args.get(i))
        else {
            return Err(EngineError::Setup(format!("node {i} has no prepared launch")));
        };
        launch_kernel(kernel, ctx, args).map_err(|e| EngineError::Kernel {
            scope: node.scope.clone(),
            op: node.op.clone(),
            plugin: node.provider.plugin.clone(),
            message: e.to_string(),
        })
    }

    /// Launches every node in order (after `prepare`).
    pub fn launch(&self, ctx: &LaunchContext) -> Result<(), EngineError> {
        (0..self.graph.nodes.len()).try_for_each(|i| self.launch_node(i, ctx))
    }
}
