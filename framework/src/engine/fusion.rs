//! Fusion, a pass over the plain graph an architecture writes (matmul, rope, silu_mul, add,
//! rmsnorm, and `fp8_matmul` for FP8 checkpoints): where a registered provider offers a fused op
//! for the device, the nodes it covers become one node of that op. In priority order:
//!
//! 1. `qkv_rope_matmul`: three bias-free linears of one `x`, two of them read only by a `rope`
//!    each (same positions, equal attributes), the third by no rope → q and k rotated, v;
//! 2. `swiglu_matmul`: two bias-free linears of one `x` read only by one `silu_mul`, as its
//!    gate and up inputs;
//! 3. `grouped_matmul`: the 2 to 4 bias-free linears left that share an `x` (Q/K/V when the
//!    rope could not be folded in, gate/up before a `silu_mul` that stays);
//! 4. `fused_add_rmsnorm`: an `add` whose sum an `rmsnorm` normalizes; the fused op returns the
//!    sum as its second output, so every other reader of the sum still has it.
//!
//! Rules 1 to 3 apply to plain matmuls (`x`, `w`) and, as `fp8_qkv_rope_matmul`,
//! `fp8_swiglu_matmul` and `fp8_grouped_matmul`, to bias-free `fp8_matmul`s with equal
//! attributes (activation scheme) and, when static, the same `input_scale` tensor (x is
//! quantized once): inputs x, the weights, their scales[, the input scales][, positions], the
//! fp8 attributes beside the rope ones (docs/quantization.md).
//!
use super::graph::{Graph, Node, ProviderInfo, ValueSource, WeightIndex};
use super::select::Selector;
use rtllm_models::Value;
use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use rtllm_plugin_api::{Attrs, TensorMeta};
use std::collections::BTreeMap;

#[cfg(test)]
mod tests;

/// The linear layers rules 1 to 3 fuse.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Linear {
    /// `matmul(x, w)`.
    Plain,
    /// `fp8_matmul(x, w, w_scale[, input_scale])`.
    Fp8,
}

impl Linear {
    /// The fused op of a rule for these linears.
    fn op(self, plain: &'static str) -> &'static str {
        match (self, plain) {
            (Linear::Plain, op) => op,
            (Linear::Fp8, "qkv_rope_matmul") => "fp8_qkv_rope_matmul",
            (Linear::Fp8, "swiglu_matmul") => "fp8_swiglu_matmul",
            (Linear::Fp8, _) => "fp8_grouped_matmul",
        }
    }
}

/// What became of a node of the plain graph.
enum Fate {
    Kept,
    /// Part of a fused node placed at another node's position.
    Folded,
    /// Replaced by this fused node (the last node of the pattern).
    Fused(Box<Node>),
}

/// A rewrite to try: the nodes it covers and the fused call replacing them.
struct Candidate {
    op: &'static str,
    members: Vec<usize>,
    inputs: Vec<Value>,
    attrs: Attrs,
    /// The members' values the fused op writes, in its output order.
    outputs: Vec<Value>,
}

struct Fuser<'a> {
    graph: Graph,
    weights: WeightIndex,
    selector: Selector<'a>,
    consumers: Vec<Vec<usize>>,
    fate: Vec<Fate>,
    /// Fused nodes made, per op.
    made: BTreeMap<&'static str, usize>,
}

/// Rewrites `graph` into the fused ops `selector`'s registry offers for its device (see the
/// module docs). Nodes covered by a fused op are gone from the result; values nothing reads
/// any more stay in `values` until the graph is compacted (`Graph::with_nodes`).
pub fn fuse(graph: Graph, selector: Selector<'_>) -> Result<Graph, String> {
    let mut f = Fuser {
        weights: WeightIndex::of(&graph),
        consumers: graph.consumers(),
        fate: graph.nodes.iter().map(|_| Fate::Kept).collect(),
        made: BTreeMap::new(),
        graph,
        selector,
    };
    for linear in [Linear::Plain, Linear::Fp8] {
        f.qkv_rope(linear);
        f.swiglu(linear);
        f.grouped(linear);
    }
    f.add_rmsnorm();
    if !f.made.is_empty() {
        tracing::debug!(fused = ?f.made, "fusion pass");
    }
    let mut nodes = Vec::with_capacity(f.graph.nodes.len());
    for (node, fate) in std::mem::take(&mut f.graph.nodes).into_iter().zip(f.fate) {
        match fate {
            Fate::Kept => nodes.push(node),
            Fate::Folded => {}
            Fate::Fused(fused) => nodes.push(*fused),
        }
    }
    f.graph.with_nodes(nodes)
}

impl Fuser<'_> {
    fn node(&self, i: usize) -> &Node {
        &self.graph.nodes[i]
    }

    /// Node `i` is still in the graph as a plain `op` call with `inputs` inputs and one output.
    fn is(&self, i: usize, op: &str, inputs: usize) -> bool {
        let n = self.node(i);
        matches!(self.fate[i], Fate::Kept) && n.op == op && n.inputs.len() == inputs && n.outputs.len() == 1
    }

    /// Node `i` is a plain bias-free matmul (`x`, `w`, no attributes).
    fn is_matmul(&self, i: usize) -> bool {
        self.is(i, "matmul", 2) && self.node(i).attrs.is_empty()
    }

    /// The node writing `v`, if an op writes it.
    fn producer(&self, v: Value) -> Option<usize> {
        match self.graph.values[v.0].source {
            ValueSource::Node { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The one node reading `v`, when exactly one does and `v` is no graph output.
    fn sole_reader(&self, v: Value) -> Option<usize> {
        match self.consumers[v.0].as_slice() {
            [one] if !self.graph.is_output(v) => Some(*one),
            _ => None,
        }
    }

    /// Node `i` is a linear of kind `l` still in the graph: a bias-free matmul, or a bias-free
    /// `fp8_matmul` (x, w, w_scale[, input_scale] as its activation attribute asks).
    fn is_linear(&self, l: Linear, i: usize) -> bool {
        match l {
            Linear::Plain => self.is_matmul(i),
            Linear::Fp8 => self.is_fp8_matmul(i),
        }
    }

    /// Whether linears `a` and `b` (of kind `l`) can share one fused node: the same `x` and, for
    /// FP8, equal attributes and the same input scale tensor (or none).
    fn compatible(&self, l: Linear, a: usize, b: usize) -> bool {
        let (na, nb) = (self.node(a), self.node(b));
        na.inputs[0] == nb.inputs[0]
            && (l == Linear::Plain || (na.attrs == nb.attrs && na.inputs.get(3) == nb.inputs.get(3)))
    }

    /// The linears of kind `l` reading `x` as their activation that can share a node with the
    /// first of them, in node order.
    fn linears_of(&self, l: Linear, x: Value) -> Vec<usize> {
        let mut ms: Vec<usize> = self.consumers[x.0]
            .iter()
            .copied()
            .filter(|&i| self.is_linear(l, i) && self.node(i).inputs[0] == x)
            .collect();
        ms.sort_unstable();
        ms.dedup();
        let Some(&first) = ms.first() else { return ms };
        ms.retain(|&m| self.compatible(l, first, m));
        ms
    }

    /// The linears sharing an activation, once per activation (at its first linear).
    fn linear_groups(&self, l: Linear) -> Vec<(Value, Vec<usize>)> {
        let mut groups = Vec::new();
        for i in 0..self.graph.nodes.len() {
            if !self.is_linear(l, i) {
                continue;
            }
            let x = self.node(i).inputs[0];
            let ms = self.linears_of(l, x);
            if ms.first() == Some(&i) {
                groups.push((x, ms));
            }
        }
        groups
    }

    /// The fused op's inputs for linears `ms` of one x, and its attributes: x and the weights;
    /// for FP8 also the weight scales and (static) the input scales, with the first linear's
    /// attributes.
    fn linear_inputs(&self, l: Linear, x: Value, ms: &[usize]) -> (Vec<Value>, Attrs) {
        let part = |j: usize| ms.iter().map(move |&m| self.node(m).inputs[j]);
        let mut inputs: Vec<Value> = std::iter::once(x).chain(part(1)).collect();
        if l == Linear::Plain {
            return (inputs, Attrs::new());
        }
        inputs.extend(part(2));
        let first = self.node(ms[0]);
        if first.inputs.len() > 3 {
            inputs.extend(part(3));
        }
        (inputs, first.attrs.clone())
    }

    /// The `rope` that alone reads matmul `m`'s output.
    fn rope_of(&self, m: usize) -> Option<usize> {
        let out = self.out(m);
        let r = self.sole_reader(out)?;
        (self.is(r, "rope", 2) && self.node(r).inputs[0] == out).then_some(r)
    }

    /// Whether any `rope` reads matmul `m`'s output.
    fn feeds_rope(&self, m: usize) -> bool {
        self.consumers[self.out(m).0].iter().any(|&c| self.node(c).op == "rope")
    }

    /// Node `i` is a plain bias-free `fp8_matmul`: (x, w, w_scale[, input_scale]) as its
    /// activation attribute asks.
    fn is_fp8_matmul(&self, i: usize) -> bool {
        match Fp8Activation::from_attrs(&self.node(i).attrs) {
            Ok(act) => self.is(i, "fp8_matmul", 3 + act.scale_inputs()),
            Err(_) => false,
        }
    }

    /// The output of a node `is` accepted (it has exactly one).
    fn out(&self, i: usize) -> Value {
        self.node(i).outputs[0]
    }

    fn qkv_rope(&mut self, l: Linear) {
        for (x, ms) in self.linear_groups(l) {
            let roped: Vec<(usize, usize)> = ms.iter().filter_map(|&m| self.rope_of(m).map(|r| (m, r))).collect();
            let plain: Vec<usize> = ms.iter().copied().filter(|&m| !self.feeds_rope(m)).collect();
            let ([(mq, rq), (mk, rk), ..], [mv, ..]) = (roped.as_slice(), plain.as_slice()) else { continue };
            let (q, k) = (self.node(*rq), self.node(*rk));
            if q.attrs != k.attrs || q.inputs[1] != k.inputs[1] {
                continue;
            }
            let (mut inputs, mut attrs) = self.linear_inputs(l, x, &[*mq, *mk, *mv]);
            inputs.push(q.inputs[1]);
            for (name, value) in q.attrs.iter() {
                attrs.set(name, value.clone());
            }
            let candidate = Candidate {
                op: l.op("qkv_rope_matmul"),
                members: vec![*mq, *mk, *mv, *rq, *rk],
                inputs,
                attrs,
                outputs: vec![self.out(*rq), self.out(*rk), self.out(*mv)],
            };
            self.try_rewrite(candidate);
        }
    }

    fn swiglu(&mut self, l: Linear) {
        for s in 0..self.graph.nodes.len() {
            if !self.is(s, "silu_mul", 2) || !self.node(s).attrs.is_empty() {
                continue;
            }
            let (g, u) = (self.node(s).inputs[0], self.node(s).inputs[1]);
            let (Some(gm), Some(um)) = (self.producer(g), self.producer(u)) else { continue };
            let exact = gm != um
                && self.is_linear(l, gm)
                && self.is_linear(l, um)
                && self.compatible(l, gm, um)
                && self.sole_reader(g) == Some(s)
                && self.sole_reader(u) == Some(s);
            if !exact {
                continue;
            }
            let (inputs, attrs) = self.linear_inputs(l, self.node(gm).inputs[0], &[gm, um]);
            let candidate = Candidate {
                op: l.op("swiglu_matmul"),
                members: vec![gm, um, s],
                inputs,
                attrs,
                outputs: vec![self.out(s)],
            };
            self.try_rewrite(candidate);
        }
    }

    fn grouped(&mut self, l: Linear) {
        for (x, ms) in self.linear_groups(l) {
            if !(2..=4).contains(&ms.len()) {
                continue;
            }
            let (inputs, attrs) = self.linear_inputs(l, x, &ms);
            let candidate = Candidate {
                op: l.op("grouped_matmul"),
                inputs,
                attrs,
                outputs: ms.iter().map(|&m| self.out(m)).collect(),
                members: ms,
            };
            self.try_rewrite(candidate);
        }
    }

    fn add_rmsnorm(&mut self) {
        for r in 0..self.graph.nodes.len() {
            if !self.is(r, "rmsnorm", 2) {
                continue;
            }
            let sum = self.node(r).inputs[0];
            let Some(a) = self.producer(sum).filter(|&a| self.is(a, "add", 2) && self.node(a).attrs.is_empty()) else {
                continue;
            };
            let add = self.node(a);
            let candidate = Candidate {
                op: "fused_add_rmsnorm",
                members: vec![a, r],
                inputs: vec![add.inputs[0], add.inputs[1], self.node(r).inputs[1]],
                attrs: self.node(r).attrs.clone(),
                outputs: vec![self.out(r), sum],
            };
            self.try_rewrite(candidate);
        }
    }

    /// Replaces `c.members` by one `c.op` node if a provider takes it (see the module docs).
    fn try_rewrite(&mut self, c: Candidate) -> bool {
        if !self.selector.has_op(c.op) {
            return false;
        }
        let Some(&at) = c.members.iter().max() else { return false };
        let first = c.members.iter().copied().min().unwrap_or(at);
        let early = c.outputs.iter().any(|v| self.consumers[v.0].iter().any(|k| *k < at && !c.members.contains(k)));
        if early {
            tracing::debug!(
                "{}: not fused into {}: a value it writes is read before node {at}",
                self.node(first).scope,
                c.op
            );
            return false;
        }
        let selected = match self.selector.select_in(&mut self.graph, &mut self.weights, c.op, &c.inputs, &c.attrs) {
            Ok(s) => s,
            Err(rejected) => {
                tracing::debug!("{}: not fused into {}: {}", self.node(first).scope, c.op, rejected.message);
                return false;
            }
        };
        let want: Vec<&TensorMeta> = c.outputs.iter().map(|v| self.graph.meta(*v)).collect();
        if selected.outputs.len() != want.len() || selected.outputs.iter().zip(&want).any(|(a, b)| a != *b) {
            tracing::debug!("{}: not fused into {}: it infers other outputs", self.node(first).scope, c.op);
            return false;
        }
        let fused = Node {
            op: c.op.to_string(),
            scope: self.node(first).scope.clone(),
            attrs: c.attrs,
            inputs: selected.inputs,
            outputs: c.outputs,
            provider: ProviderInfo::of(selected.provider),
        };
        for &m in &c.members {
            self.fate[m] = Fate::Folded;
        }
        self.fate[at] = Fate::Fused(Box::new(fused));
        *self.made.entry(c.op).or_default() += 1;
        true
    }
}
