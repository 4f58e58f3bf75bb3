//! The plan dump (`rtllm build --explain`): one line per node of a planned graph (scope, op,
//! provider plugin, input and output metas, attributes) and a summary of nodes per op and
//! plugin. Reads only the graph, so it works for a device that is not present.

use super::graph::{Graph, Node};
use std::fmt::Write;

/// What one node runs: the fields two plans must agree on to run the same kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLine {
    pub scope: String,
    pub op: String,
    pub plugin: String,
    pub inputs: String,
    pub outputs: String,
    pub attrs: String,
}

/// `f32[T, 576], i32[T]`.
fn metas(graph: &Graph, values: &[rtllm_models::Value]) -> String {
    values.iter().map(|v| graph.meta(*v).to_string()).collect::<Vec<_>>().join(", ")
}

impl KernelLine {
    fn of(graph: &Graph, node: &Node) -> KernelLine {
        KernelLine {
            scope: node.scope.clone(),
            op: node.op.clone(),
            plugin: node.provider.plugin.clone(),
            inputs: metas(graph, &node.inputs),
            outputs: metas(graph, &node.outputs),
            attrs: node.attrs.to_string(),
        }
    }
}

/// Every node of `graph`, in execution order.
pub fn kernel_lines(graph: &Graph) -> Vec<KernelLine> {
    graph.nodes.iter().map(|n| KernelLine::of(graph, n)).collect()
}

/// The plan as text: a header line, one line per node, then nodes per (op, plugin).
pub fn explain(graph: &Graph, title: &str) -> String {
    let lines = kernel_lines(graph);
    let width = |f: fn(&KernelLine) -> &str| lines.iter().map(|l| f(l).len()).max().unwrap_or(0);
    let (ws, wo, wp) = (width(|l| &l.scope).max(5), width(|l| &l.op).max(2), width(|l| &l.plugin).max(6));
    let mut out = String::new();
    let _ = writeln!(out, "plan of {title}: {} nodes", lines.len());
    let _ = writeln!(out, "{:>4}  {:ws$}  {:wo$}  {:wp$}  inputs -> outputs  [attrs]", "#", "scope", "op", "plugin");
    for (i, l) in lines.iter().enumerate() {
        let attrs = if l.attrs.is_empty() { String::new() } else { format!("  [{}]", l.attrs) };
        let _ = writeln!(
            out,
            "{i:>4}  {:ws$}  {:wo$}  {:wp$}  {} -> {}{attrs}",
            l.scope, l.op, l.plugin, l.inputs, l.outputs
        );
    }
    let _ = writeln!(out, "summary: {} nodes, {} weights", lines.len(), graph.weight_uses().len());
    for (op, plugin, count) in graph.op_summary() {
        let _ = writeln!(out, "  {count:>5}  {op:wo$}  {plugin}");
    }
    out
}
