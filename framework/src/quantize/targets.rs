//! Which weights become FP8: the weights of the model's linear layers, found in the model's own
//! plain graph (every weight read only as the weight input of `matmul` nodes), minus the
//! ignored modules (`lm_head`, as llm-compressor's FP8 recipes ignore it). A tied output head
//! reads the embedding table, which the `embedding` op also reads, so it is never a target.

use super::QuantizeError;
use crate::engine::{Graph, ValueSource};
use std::collections::{BTreeMap, BTreeSet};

/// Modules left in the source precision (compressed-tensors `ignore`).
pub const IGNORED_MODULES: &[&str] = &["lm_head"];

/// The linear weights of `graph` to quantize, as (weight name, module name) sorted by name.
pub fn linear_weights(graph: &Graph) -> Result<Vec<(String, String)>, QuantizeError> {
    // weight name → whether every read is a matmul's weight input.
    let mut reads: BTreeMap<&str, bool> = BTreeMap::new();
    for node in &graph.nodes {
        for (j, v) in node.inputs.iter().enumerate() {
            if let ValueSource::Weight { name, .. } = &graph.values[v.0].source {
                let as_linear = node.op == "matmul" && j == 1;
                *reads.entry(name.as_str()).or_insert(true) &= as_linear;
            }
        }
    }
    let ignored: BTreeSet<&str> = IGNORED_MODULES.iter().copied().collect();
    let mut out = Vec::new();
    for (name, linear) in reads {
        if !linear {
            continue;
        }
        let Some(module) = name.strip_suffix(".weight") else {
            tracing::warn!("`{name}` is a matmul weight without a `.weight` name; left unquantized");
            continue;
        };
        if !ignored.contains(module) {
            out.push((name.to_string(), module.to_string()));
        }
    }
    if out.is_empty() {
        return Err(QuantizeError::Unsupported("the model's graph has no linear layer to quantize".into()));
    }
    Ok(out)
}
