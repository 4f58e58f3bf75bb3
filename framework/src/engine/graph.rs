//! The built graph: values (inputs, weights, op outputs) with their inferred metas, and the op
//! nodes in execution order with the kernel instance chosen for each.

use rtllm_models::Value;
use rtllm_plugin_api::{Attrs, DType, KernelBox, TensorMeta};

/// Where a value's data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueSource {
    /// A named graph input bound by the runtime on every forward pass.
    Input(String),
    /// A weight, in the dtype the chosen kernel reads (converted at load when it differs
    /// from the stored dtype).
    Weight { name: String, dtype: DType },
    /// Output `index` of node `node`.
    Node { node: usize, index: usize },
}

#[derive(Clone, Debug)]
pub struct ValueInfo {
    pub meta: TensorMeta,
    pub source: ValueSource,
}

/// Which plugin serves a node, and the inputs its kernel writes in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderInfo {
    pub plugin: String,
    pub plugin_version: String,
    pub op_version: u32,
    pub file: std::path::PathBuf,
    pub in_place: Vec<usize>,
}

impl ProviderInfo {
    pub fn of(provider: &crate::registry::Provider) -> ProviderInfo {
        ProviderInfo {
            plugin: provider.plugin.clone(),
            plugin_version: provider.plugin_version.clone(),
            op_version: provider.decl.version,
            file: provider.path.clone(),
            in_place: provider.in_place(),
        }
    }
}

/// One op call in the graph.
pub struct Node {
    pub op: String,
    pub scope: String,
    pub attrs: Attrs,
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    pub provider: ProviderInfo,
    pub kernel: KernelBox,
}

/// A complete graph.
#[derive(Default)]
pub struct Graph {
    pub values: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<(String, Value)>,
    pub outputs: Vec<(String, Value)>,
}

impl Graph {
    pub fn meta(&self, v: Value) -> &TensorMeta {
        &self.values[v.0].meta
    }

    pub fn input(&self, name: &str) -> Option<Value> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn output(&self, name: &str) -> Option<Value> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Distinct (weight name, dtype) pairs the graph reads.
    pub fn weight_uses(&self) -> Vec<(String, DType)> {
        let mut uses: Vec<(String, DType)> = self
            .values
            .iter()
            .filter_map(|v| match &v.source {
                ValueSource::Weight { name, dtype } => Some((name.clone(), *dtype)),
                _ => None,
            })
            .collect();
        uses.sort();
        uses.dedup();
        uses
    }

    /// How many nodes each op name has, and which plugin serves it (for summaries).
    pub fn op_summary(&self) -> Vec<(String, String, usize)> {
        let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for n in &self.nodes {
            *counts.entry((n.op.clone(), n.provider.plugin.clone())).or_default() += 1;
        }
        counts.into_iter().map(|((op, plugin), c)| (op, plugin, c)).collect()
    }
}
