//! The activation memory plan: every op output gets an offset in one arena, sized for the
//! build's maximum shapes, with buffers reused once their last reader has run.

use super::graph::{Graph, ValueSource};
use rtllm_models::Value;
use rtllm_plugin_api::TensorMeta;
use std::collections::HashMap;

/// Alignment of every planned buffer (a cache line, enough for any SIMD load).
pub const ALIGN: usize = 64;

/// Concrete values for the graph's symbolic dims.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    map: HashMap<String, usize>,
}

impl Symbols {
    pub fn set(&mut self, name: &str, value: usize) {
        self.map.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.map.get(name).copied()
    }

    pub fn resolve(&self, meta: &TensorMeta) -> TensorMeta {
        meta.resolved(|s| self.get(s))
    }

    /// Bytes of a meta under these symbols, or an error naming the unresolved dim.
    pub fn bytes(&self, meta: &TensorMeta) -> Result<usize, String> {
        let r = self.resolve(meta);
        r.byte_size().ok_or_else(|| format!("cannot size {meta}: resolved to {r}"))
    }
}

/// Offsets of activations in the arena.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// value index → (offset, capacity in bytes) for node outputs.
    pub slots: HashMap<usize, (usize, usize)>,
    pub arena_bytes: usize,
    /// Sum of all activation sizes without reuse, for reporting.
    pub unshared_bytes: usize,
}

fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A first-fit allocator over a growing arena.
struct Arena {
    free: Vec<(usize, usize)>, // (offset, len), sorted by offset
    end: usize,
}

impl Arena {
    fn alloc(&mut self, len: usize) -> usize {
        if let Some(i) = self.free.iter().position(|&(_, l)| l >= len) {
            let (off, l) = self.free[i];
            if l == len {
                self.free.remove(i);
            } else {
                self.free[i] = (off + len, l - len);
            }
            return off;
        }
        // Extend from a free block touching the end, if any.
        if let Some(&(off, l)) = self.free.last() {
            if off + l == self.end {
                self.free.pop();
                self.end = off + len;
                return off;
            }
        }
        let off = self.end;
        self.end += len;
        off
    }

    fn release(&mut self, off: usize, len: usize) {
        let pos = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(pos, (off, len));
        // Coalesce neighbours.
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.free.len());
        for &(o, l) in &self.free {
            if let Some(last) = merged.last_mut() {
                if last.0 + last.1 == o {
                    last.1 += l;
                    continue;
                }
            }
            merged.push((o, l));
        }
        self.free = merged;
    }
}

/// Plans the activations of `graph` for the maximal `symbols`.
pub fn plan_memory(graph: &Graph, symbols: &Symbols) -> Result<MemoryPlan, String> {
    let mut last_use: HashMap<usize, usize> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in &node.inputs {
            last_use.insert(v.0, i);
        }
    }
    let outputs: Vec<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
    for v in &outputs {
        last_use.insert(v.0, usize::MAX);
    }
    let mut arena = Arena { free: Vec::new(), end: 0 };
    let mut slots = HashMap::new();
    let mut unshared = 0usize;
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in &node.outputs {
            let bytes = align_up(
                symbols.bytes(graph.meta(*v)).map_err(|e| format!("{} '{}': {e}", node.scope, node.op))?.max(1),
            );
            unshared += bytes;
            slots.insert(v.0, (arena.alloc(bytes), bytes));
        }
        // An output nobody reads dies right away.
        for v in &node.outputs {
            if !last_use.contains_key(&v.0) {
                let (off, len) = slots[&v.0];
                arena.release(off, len);
            }
        }
        for v in &node.inputs {
            let is_activation = matches!(graph.values[v.0].source, ValueSource::Node { .. });
            if is_activation && last_use.get(&v.0) == Some(&i) {
                if let Some(&(off, len)) = slots.get(&v.0) {
                    arena.release(off, len);
                    last_use.remove(&v.0);
                }
            }
        }
    }
    Ok(MemoryPlan { slots, arena_bytes: arena.end, unshared_bytes: unshared })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_reuses_and_coalesces() {
        let mut a = Arena { free: Vec::new(), end: 0 };
        let x = a.alloc(64);
        let y = a.alloc(128);
        a.release(x, 64);
        a.release(y, 128);
        assert_eq!(a.free, vec![(0, 192)]);
        assert_eq!(a.alloc(192), 0);
        assert_eq!(a.end, 192);
    }
}
