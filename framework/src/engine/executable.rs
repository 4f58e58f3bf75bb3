//! The executable graph: the finished graph's nodes, the kernel created for each, and their
//! launch arguments (tensor views at the engine's fixed addresses, with metas resolved for one
//! step shape and kept while the shape repeats). `launch` runs every node in order.
//!
//! This is the one place that makes kernel arguments ([`input_view`], [`output_view`]: read-only
//! inputs, writable outputs, and writable inputs only where the provider declares them in
//! place) and the one that calls a kernel ([`launch_kernel`]); the device sampler uses both too.

use super::error::EngineError;
use super::graph::Graph;
use super::plan::Symbols;
use rtllm_models::Value;
use rtllm_plugin_api::{DeviceKind, InputView, KernelBox, LaunchEnv, OutputView, PluginError, TensorMeta};

/// One kernel call's arguments: views of the engine's own buffers, hence `'static` (they live as
/// long as the engine, which neither moves nor frees the memory they address).
#[derive(Default)]
pub(super) struct KernelArgs {
    pub inputs: Vec<InputView<'static>>,
    pub outputs: Vec<OutputView<'static>>,
}

/// An input view: `meta` (concrete) at `ptr` on `device`, writable when `in_place`.
///
/// # Safety
/// `ptr` must address a buffer of at least `meta`'s bytes that stays valid (and is not moved)
/// for as long as the argument is launched with; nothing writes it during a launch unless
/// `in_place`, and then no other view of the launch reaches it.
pub(super) unsafe fn input_view(
    meta: TensorMeta,
    ptr: *mut u8,
    device: DeviceKind,
    in_place: bool,
) -> InputView<'static> {
    // SAFETY: the caller's contract is the constructors'.
    unsafe {
        if in_place {
            InputView::new_in_place(meta, ptr, device)
        } else {
            InputView::new(meta, ptr, device)
        }
    }
}

/// An output view: `meta` (concrete) at `ptr` on `device`.
///
/// # Safety
/// As [`input_view`] with `in_place`: the launch writes it and no other view reaches it.
pub(super) unsafe fn output_view(meta: TensorMeta, ptr: *mut u8, device: DeviceKind) -> OutputView<'static> {
    // SAFETY: the caller's contract is OutputView::new's.
    unsafe { OutputView::new(meta, ptr, device) }
}

/// Launches `kernel` in `env` with `args`.
pub(super) fn launch_kernel(
    kernel: &KernelBox,
    env: &mut LaunchEnv<'_>,
    args: &mut KernelArgs,
) -> Result<(), PluginError> {
    kernel.launch(env, &mut args.inputs, &mut args.outputs)
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
    /// size, valid and unmoved while this graph launches with these arguments; a node's
    /// outputs must not overlap each other or its inputs, and an input its provider writes in
    /// place must be writable memory no other input of the node shares (`check_in_place`).
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
        let meta = |v: &Value| symbols.resolve(graph.meta(*v));
        // SAFETY (both closures): the caller's contract on `addr`.
        let input = |(i, v): (usize, &Value), in_place: &[usize]| unsafe {
            input_view(meta(v), addr(*v), device, in_place.contains(&i))
        };
        let output = |v: &Value| unsafe { output_view(meta(v), addr(*v), device) };
        self.args = graph
            .nodes
            .iter()
            .map(|node| KernelArgs {
                inputs: node.inputs.iter().enumerate().map(|a| input(a, &node.provider.in_place)).collect(),
                outputs: node.outputs.iter().map(output).collect(),
            })
            .collect();
        self.args_shape = Some(shape);
    }

    /// Input `j` of node `i` as prepared for the current step (after `prepare`).
    pub fn input(&self, i: usize, j: usize) -> Option<&InputView<'static>> {
        self.args.get(i)?.inputs.get(j)
    }

    /// Launches node `i` (after `prepare`).
    pub fn launch_node(&mut self, i: usize, env: &mut LaunchEnv<'_>) -> Result<(), EngineError> {
        let (Some(node), Some(kernel), Some(args)) =
            (self.graph.nodes.get(i), self.kernels.get(i), self.args.get_mut(i))
        else {
            return Err(EngineError::Setup(format!("node {i} has no prepared launch")));
        };
        launch_kernel(kernel, env, args).map_err(|e| EngineError::Kernel {
            scope: node.scope.clone(),
            op: node.op.clone(),
            plugin: node.provider.plugin.clone(),
            message: e.to_string(),
        })
    }

    /// Launches every node in order (after `prepare`).
    pub fn launch(&mut self, env: &mut LaunchEnv<'_>) -> Result<(), EngineError> {
        (0..self.graph.nodes.len()).try_for_each(|i| self.launch_node(i, env))
    }
}
