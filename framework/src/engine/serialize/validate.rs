//! Structural checks of a `plan.json` read from disk, before anything is built from it: the
//! limits (the rules `load::limits_for` enforces at build time) and the dataflow graph (each
//! node's outputs are its own, its inputs come from graph inputs, weights or earlier nodes).
//! A hand-edited or corrupt plan is refused here with a message instead of panicking later.

use super::format::{LimitsRecord, PlanRecord, SourceRecord};

/// Checks `plan`'s limits and graph structure; the message names the first problem found.
pub(super) fn check_plan(plan: &PlanRecord) -> Result<(), String> {
    check_limits(&plan.limits)?;
    check_graph(plan)
}

fn check_limits(l: &LimitsRecord) -> Result<(), String> {
    crate::engine::EngineLimits::from(l).check().map_err(|e| format!("limits.{e}"))
}

fn check_graph(plan: &PlanRecord) -> Result<(), String> {
    let source = |v: usize, what: &dyn Fn() -> String| {
        plan.values
            .get(v)
            .map(|r| &r.source)
            .ok_or_else(|| format!("{}: value {v} is out of range ({} values)", what(), plan.values.len()))
    };
    for (name, v) in &plan.inputs {
        match source(*v, &|| format!("graph input {name:?}"))? {
            SourceRecord::Input { .. } => {}
            other => return Err(format!("graph input {name:?} is value {v}, whose source is {other:?}")),
        }
    }
    for (name, v) in &plan.outputs {
        source(*v, &|| format!("graph output {name:?}"))?;
    }
    for (k, node) in plan.nodes.iter().enumerate() {
        let at = || format!("node {k} ({} at {:?})", node.op, node.scope);
        for (j, &v) in node.outputs.iter().enumerate() {
            match source(v, &at)? {
                SourceRecord::Node { node: n, index } if *n == k && *index == j => {}
                other => {
                    return Err(format!(
                        "{}: output {j} is value {v}, whose source is {other:?}, not Node {{ node: {k}, index: {j} }}",
                        at()
                    ))
                }
            }
        }
        for &v in &node.inputs {
            match source(v, &at)? {
                SourceRecord::Input { .. } | SourceRecord::Weight { .. } => {}
                SourceRecord::Node { node: n, index } => {
                    let produced = *n < k && plan.nodes[*n].outputs.get(*index) == Some(&v);
                    if !produced {
                        return Err(format!(
                            "{}: input value {v} claims to be output {index} of node {n}, which is not an earlier node producing it",
                            at()
                        ));
                    }
                }
            }
        }
    }
    // Every node-produced value must have its producer.
    for (v, r) in plan.values.iter().enumerate() {
        if let SourceRecord::Node { node: n, index } = &r.source {
            if plan.nodes.get(*n).and_then(|node| node.outputs.get(*index)) != Some(&v) {
                return Err(format!("value {v} claims to be output {index} of node {n}, which does not produce it"));
            }
        }
    }
    Ok(())
}
