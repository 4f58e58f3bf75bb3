//! The graph a build produces and the passes rewrite: values (inputs, weights, op outputs) with
//! their inferred metas, and the op nodes in execution order with the provider resolved for
//! each. Kernels are not here: they are created from the finished graph (`kernels`), once the
//! passes are done with it.

use rtllm_models::Value;
use rtllm_plugin_api::{Attrs, DType, TensorMeta};
use std::collections::HashMap;

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
#[derive(Clone, Debug)]
pub struct Node {
    pub op: String,
    pub scope: String,
    pub attrs: Attrs,
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    pub provider: ProviderInfo,
}

/// A complete graph.
#[derive(Clone, Debug, Default)]
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

    pub fn push_value(&mut self, meta: TensorMeta, source: ValueSource) -> Value {
        self.values.push(ValueInfo { meta, source });
        Value(self.values.len() - 1)
    }

    /// Whether `v` is a named graph output.
    pub fn is_output(&self, v: Value) -> bool {
        self.outputs.iter().any(|(_, o)| *o == v)
    }

    /// For each value, the nodes that read it (a node reading it twice is listed twice).
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in &n.inputs {
                out[v.0].push(i);
            }
        }
        out
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

    /// The graph with `nodes` (in this order) as its nodes and only the values they need:
    /// every graph input, the weights some node reads and every node output, renumbered in
    /// their old order. Fails when a node reads a value no earlier node writes, or a graph
    /// output is lost.
    pub fn with_nodes(&self, nodes: Vec<Node>) -> Result<Graph, String> {
        let mut keep = vec![false; self.values.len()];
        for (_, v) in &self.inputs {
            keep[v.0] = true;
        }
        for n in &nodes {
            for v in n.inputs.iter().chain(&n.outputs) {
                keep[v.0] = true;
            }
        }
        let mut new_id = vec![usize::MAX; self.values.len()];
        let mut values = Vec::new();
        for (i, info) in self.values.iter().enumerate() {
            if keep[i] {
                new_id[i] = values.len();
                values.push(info.clone());
            }
        }
        let map = |v: &Value| Value(new_id[v.0]);
        let mut written = vec![false; values.len()];
        for (_, v) in &self.inputs {
            written[new_id[v.0]] = true;
        }
        for (i, v) in values.iter().enumerate() {
            written[i] |= matches!(v.source, ValueSource::Weight { .. });
        }
        let mut out_nodes = Vec::with_capacity(nodes.len());
        for (k, mut n) in nodes.into_iter().enumerate() {
            n.inputs = n.inputs.iter().map(map).collect();
            n.outputs = n.outputs.iter().map(map).collect();
            if let Some(v) = n.inputs.iter().find(|v| !written[v.0]) {
                return Err(format!("{} '{}' (node {k}) reads {v}, which no earlier node writes", n.scope, n.op));
            }
            for (j, v) in n.outputs.iter().enumerate() {
                values[v.0].source = ValueSource::Node { node: k, index: j };
                written[v.0] = true;
            }
            out_nodes.push(n);
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for (name, v) in &self.outputs {
            let id = new_id[v.0];
            if id == usize::MAX || !written[id] {
                return Err(format!("graph output '{name}' is no longer written"));
            }
            outputs.push((name.clone(), Value(id)));
        }
        let inputs = self.inputs.iter().map(|(n, v)| (n.clone(), map(v))).collect();
        Ok(Graph { values, nodes: out_nodes, inputs, outputs })
    }
}

/// The graph's weight values by (name, dtype), so one weight read in one dtype is one value.
#[derive(Default)]
pub struct WeightIndex {
    by_name: HashMap<(String, DType), Value>,
}

impl WeightIndex {
    /// The index of the weight values already in `graph`.
    pub fn of(graph: &Graph) -> WeightIndex {
        let mut index = WeightIndex::default();
        for (i, v) in graph.values.iter().enumerate() {
            if let ValueSource::Weight { name, dtype } = &v.source {
                index.by_name.insert((name.clone(), *dtype), Value(i));
            }
        }
        index
    }

    /// The value of weight `name` read as `dtype` (shape from `meta`), added on first use.
    pub fn value(&mut self, graph: &mut Graph, name: &str, dtype: DType, meta: &TensorMeta) -> Value {
        if let Some(v) = self.by_name.get(&(name.to_string(), dtype)) {
            return *v;
        }
        let meta = TensorMeta { dtype, ..meta.clone() };
        let v = graph.push_value(meta, ValueSource::Weight { name: name.to_string(), dtype });
        self.by_name.insert((name.to_string(), dtype), v);
        v
    }
}
