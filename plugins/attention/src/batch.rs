//! Launch-time geometry of one paged-attention batch: the concrete shapes checked against the
//! attributes, and the int inputs (query offsets, sequence lengths, block tables) validated
//! up front so the kernels can index the cache without reading out of bounds.

use crate::params::{AttnParams, OP};
use rtllm_plugin_api::{InputView, OutputView, PluginError, TensorView};
use std::ops::Range;

/// A validated batch.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Packed new tokens.
    pub t: usize,
    /// Sequences.
    pub s: usize,
    /// Cache blocks.
    pub nb: usize,
    /// Tokens per block.
    pub bs: usize,
    /// Block-table width.
    pub mb: usize,
    query_start: &'a [i32],
    seq_lens: &'a [i32],
    block_tables: &'a [i32],
}

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP}: {msg}"))
}

/// A launch's arguments by name: the caches writable (the op declares them in place).
pub struct Args<'s, 'v, 'o> {
    pub q: &'s InputView<'v>,
    pub k: &'s InputView<'v>,
    pub v: &'s InputView<'v>,
    pub k_cache: &'s mut InputView<'v>,
    pub v_cache: &'s mut InputView<'v>,
    pub block_tables: &'s InputView<'v>,
    pub seq_lens: &'s InputView<'v>,
    pub query_start: &'s InputView<'v>,
    /// `k_scale`, `v_scale` of an FP8 cache.
    pub scales: Option<[&'s InputView<'v>; 2]>,
    pub out: &'s mut OutputView<'o>,
}

impl<'s, 'v, 'o> Args<'s, 'v, 'o> {
    /// Names the launch's inputs and output, or says what is missing.
    pub fn split(inputs: &'s mut [InputView<'v>], outputs: &'s mut [OutputView<'o>]) -> Result<Self, PluginError> {
        match (inputs, outputs) {
            ([q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start], [out]) => {
                Ok(Args { q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start, scales: None, out })
            }
            ([q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start, ks, vs], [out]) => Ok(Args {
                q,
                k,
                v,
                k_cache,
                v_cache,
                block_tables,
                seq_lens,
                query_start,
                scales: Some([&*ks, &*vs]),
                out,
            }),
            (i, o) => Err(err(format!("launch takes 8 or 10 inputs and 1 output, got {} and {}", i.len(), o.len()))),
        }
    }
}

fn shape(arg: &impl TensorView, what: &str, rank: usize) -> Result<Vec<usize>, PluginError> {
    let s = arg.shape().map_err(|e| e.context(format_args!("{OP}: {what}")))?;
    if s.len() != rank {
        return Err(err(format!("{what} must have rank {rank}, got {}", arg.meta())));
    }
    Ok(s)
}

fn expect(what: &str, got: &[usize], want: &[usize]) -> Result<(), PluginError> {
    if got != want {
        return Err(err(format!("{what} has shape {got:?}, expected {want:?}")));
    }
    Ok(())
}

impl<'a> Batch<'a> {
    /// Checks every shape and int input of a launch.
    /// Checks every shape and int input of a launch: `[q, k, v, k_cache, v_cache]`, the int
    /// inputs `[block_tables, seq_lens, query_start]` (which the batch keeps) and the output.
    pub fn new(
        p: &AttnParams,
        [q, k, v, k_cache, v_cache]: [&InputView<'_>; 5],
        [block_tables, seq_lens, query_start]: [&'a InputView<'_>; 3],
        out: &OutputView<'_>,
    ) -> Result<Batch<'a>, PluginError> {
        let (hd, kvd) = (p.num_heads * p.head_dim, p.num_kv_heads * p.head_dim);
        let t = shape(q, "q", 2)?[0];
        expect("q", &shape(q, "q", 2)?, &[t, hd])?;
        expect("k", &shape(k, "k", 2)?, &[t, kvd])?;
        expect("v", &shape(v, "v", 2)?, &[t, kvd])?;
        expect("out", &shape(out, "out", 2)?, &[t, hd])?;
        let kc = shape(k_cache, "k_cache", 4)?;
        let (nb, bs) = (kc[0], kc[1]);
        expect("k_cache", &kc, &[nb, bs, p.num_kv_heads, p.head_dim])?;
        expect("v_cache", &shape(v_cache, "v_cache", 4)?, &kc)?;
        if k_cache.meta().dtype != v_cache.meta().dtype {
            return Err(err(format!("k_cache {} and v_cache {} differ in dtype", k_cache.meta(), v_cache.meta())));
        }
        if bs == 0 {
            return Err(err("the cache's block size is 0".into()));
        }
        let bt = shape(block_tables, "block_tables", 2)?;
        let (s, mb) = (bt[0], bt[1]);
        expect("seq_lens", &shape(seq_lens, "seq_lens", 1)?, &[s])?;
        expect("query_start", &shape(query_start, "query_start", 1)?, &[s + 1])?;
        let batch = Batch {
            t,
            s,
            nb,
            bs,
            mb,
            query_start: query_start.slice::<i32>()?,
            seq_lens: seq_lens.slice::<i32>()?,
            block_tables: block_tables.slice::<i32>()?,
        };
        batch.validate(p)?;
        Ok(batch)
    }

    fn validate(&self, p: &AttnParams) -> Result<(), PluginError> {
        let qs = self.query_start;
        if qs[0] != 0 || qs[self.s] as i64 != self.t as i64 {
            return Err(err(format!("query_start must run from 0 to T = {}, got {} .. {}", self.t, qs[0], qs[self.s])));
        }
        let capacity = self.mb * self.bs;
        for s in 0..self.s {
            let (a, b, len) = (qs[s], qs[s + 1], self.seq_lens[s]);
            if b < a {
                return Err(err(format!("query_start decreases at sequence {s}: {a} then {b}")));
            }
            let q_len = (b - a) as usize;
            if len < 0 || (len as usize) < q_len {
                return Err(err(format!("sequence {s}: seq_len {len} is less than its {q_len} new tokens")));
            }
            let len = len as usize;
            if len > capacity {
                return Err(err(format!(
                    "sequence {s}: seq_len {len} exceeds the block table's {} blocks of {} tokens",
                    self.mb, self.bs
                )));
            }
            if q_len == 0 {
                continue;
            }
            let first = p.first_key(len - q_len) / self.bs;
            for logical in first..=(len - 1) / self.bs {
                let id = self.block_tables[s * self.mb + logical];
                if id < 0 || id as usize >= self.nb {
                    return Err(err(format!(
                        "sequence {s}: block_tables[{s}][{logical}] = {id} is not a cache block (the cache has {})",
                        self.nb
                    )));
                }
            }
        }
        Ok(())
    }

    /// Packed token indices of sequence `s`'s new tokens.
    pub fn q_range(&self, s: usize) -> Range<usize> {
        self.query_start[s] as usize..self.query_start[s + 1] as usize
    }

    /// Position of sequence `s`'s first new token.
    pub fn start_pos(&self, s: usize) -> usize {
        let r = self.q_range(s);
        self.seq_lens[s] as usize - r.len()
    }

    /// The sequence that packed token `t` belongs to.
    pub fn seq_of(&self, t: usize) -> usize {
        self.query_start[1..].partition_point(|&e| e as usize <= t)
    }

    /// The cache block holding position `pos` of sequence `s` (validated in `new`).
    pub fn block(&self, s: usize, pos: usize) -> usize {
        self.block_tables[s * self.mb + pos / self.bs] as usize
    }
}
