//! Kernel creation, the last step of a build (after the passes) and of loading an engine
//! directory: each node's recorded provider is found again in the registry (same plugin,
//! plugin version and op version) and `create`s the node's kernel from its input metas and
//! attributes. Creating may compile device code, so it happens once per node of the final
//! graph, never for a node a pass then rewrites.

use super::graph::{Graph, Node, ProviderInfo};
use crate::registry::{create_with, OpRequest, Provider, Registry};
use rtllm_models::BuildError;
use rtllm_plugin_api::{DeviceKind, KernelBox, TensorMeta};

/// `plugin 0.1.0 (op version 1, /path/lib.so)`.
pub(crate) fn describe(p: &ProviderInfo) -> String {
    format!("{} {} (op version {}, {})", p.plugin, p.plugin_version, p.op_version, p.file.display())
}

/// The provider `recorded` names for `op` on `device` with inputs of `metas`: the same plugin,
/// plugin version and op version, or None.
pub(crate) fn recorded_provider<'r>(
    registry: &'r Registry,
    device: DeviceKind,
    op: &str,
    metas: &[TensorMeta],
    recorded: &ProviderInfo,
) -> Option<&'r Provider> {
    let request = OpRequest::new(op, device, metas.iter().map(|m| m.dtype)).pinned(recorded.plugin.clone());
    registry
        .resolve(&request)
        .ok()
        .filter(|p| p.plugin_version == recorded.plugin_version && p.decl.version == recorded.op_version)
}

fn node_error(node: &Node, metas: &[TensorMeta], message: String) -> BuildError {
    BuildError::Op {
        scope: node.scope.clone(),
        op: node.op.clone(),
        inputs: metas.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "),
        message,
    }
}

/// One kernel per node of `graph`, in node order.
pub fn create_kernels(graph: &Graph, registry: &Registry, device: DeviceKind) -> Result<Vec<KernelBox>, BuildError> {
    let mut kernels = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let metas: Vec<TensorMeta> = node.inputs.iter().map(|v| graph.meta(*v).clone()).collect();
        let provider = recorded_provider(registry, device, &node.op, &metas, &node.provider).ok_or_else(|| {
            node_error(node, &metas, format!("its provider {} is no longer loaded", describe(&node.provider)))
        })?;
        let kernel = create_with(provider, &metas, &node.attrs).map_err(|e| node_error(node, &metas, e.to_string()))?;
        kernels.push(kernel);
    }
    Ok(kernels)
}
