//! The attention phase: work items of (a tile of packed query tokens, one KV head). Each item
//! runs an online-softmax (flash-style) loop over the cache blocks its queries see, for all
//! query heads of that KV head, accumulating straight into the output rows. Per-worker scratch
//! is one block of scores, the running max/sum per query row, and (for f16/bf16/FP8 caches)
//! one block of K and V converted to f32 (FP8 codes times their scale).

use crate::batch::Batch;
use crate::cache::{CacheElem, KvScales};
use crate::params::AttnParams;
use rtllm_plugin_api::DisjointMut;
use std::ops::Range;

/// Query rows (tokens x heads of one KV group) an item handles at most.
const ROWS_MAX: usize = 64;

/// Tokens per tile at most, so a tile stays within `ROWS_MAX` rows.
pub fn max_tile(p: &AttnParams) -> usize {
    (ROWS_MAX / p.group()).max(1)
}

/// f32 elements of one worker's scratch.
pub fn scratch_len(p: &AttnParams, bs: usize, converts: bool) -> usize {
    let rows = max_tile(p) * p.group();
    bs + 2 * rows + if converts { 2 * bs * p.head_dim } else { 0 }
}

/// One worker's scratch, carved from the launch workspace.
pub struct Scratch<'a> {
    scores: &'a mut [f32],
    m: &'a mut [f32],
    l: &'a mut [f32],
    kbuf: &'a mut [f32],
    vbuf: &'a mut [f32],
}

impl<'a> Scratch<'a> {
    /// Splits `buf` (of `scratch_len(p, bs, converts)` elements).
    pub fn new(buf: &'a mut [f32], p: &AttnParams, bs: usize, converts: bool) -> Scratch<'a> {
        let rows = max_tile(p) * p.group();
        let (scores, rest) = buf.split_at_mut(bs);
        let (m, rest) = rest.split_at_mut(rows);
        let (l, rest) = rest.split_at_mut(rows);
        let kv = if converts { bs * p.head_dim } else { 0 };
        let (kbuf, rest) = rest.split_at_mut(kv);
        Scratch { scores, m, l, kbuf, vbuf: &mut rest[..kv] }
    }
}

/// Dot product with eight independent partial sums, so the loop vectorises.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()) / 8 * 8;
    let mut acc = [0f32; 8];
    for (x, y) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in a[n..].iter().zip(&b[n..]) {
        sum += x * y;
    }
    sum
}

/// Running softmax state of one query row.
struct RowState<'s> {
    m: &'s mut f32,
    l: &'s mut f32,
    acc: &'s mut [f32],
}

/// Folds keys `js` of one block (rows `kr[j * ks..]`, `vr[j * vs..]`) into one query row.
#[allow(clippy::too_many_arguments)]
fn fold_block(
    q: &[f32],
    scale: f32,
    kr: &[f32],
    ks: usize,
    vr: &[f32],
    vs: usize,
    js: Range<usize>,
    scores: &mut [f32],
    st: RowState<'_>,
) {
    let d = q.len();
    let scores = &mut scores[..js.len()];
    let mut block_max = f32::NEG_INFINITY;
    for (o, j) in scores.iter_mut().zip(js.clone()) {
        let s = dot(q, &kr[j * ks..j * ks + d]) * scale;
        *o = s;
        block_max = block_max.max(s);
    }
    let m_new = st.m.max(block_max);
    if m_new == f32::NEG_INFINITY {
        return;
    }
    let alpha = (*st.m - m_new).exp();
    if alpha != 1.0 {
        *st.l *= alpha;
        for a in st.acc.iter_mut() {
            *a *= alpha;
        }
    }
    for (&s, j) in scores.iter().zip(js) {
        let w = (s - m_new).exp();
        *st.l += w;
        for (a, v) in st.acc.iter_mut().zip(&vr[j * vs..j * vs + d]) {
            *a += w * v;
        }
    }
    *st.m = m_new;
}

/// Everything the attention phase reads, shared by all workers.
pub struct AttnJob<'a, E> {
    pub p: AttnParams,
    pub batch: &'a Batch<'a>,
    pub q: &'a [f32],
    pub k_cache: &'a [E],
    pub v_cache: &'a [E],
    pub scales: KvScales,
    /// The output `[T, H * D]`; each item writes its own tokens' columns of one KV group.
    pub out: DisjointMut<'a, f32>,
    /// Tokens per tile.
    pub tile: usize,
}

impl<E: CacheElem> AttnJob<'_, E> {
    /// Number of work items.
    pub fn items(&self) -> usize {
        self.batch.t.div_ceil(self.tile) * self.p.num_kv_heads
    }

    /// Runs item `item`: its tile's tokens, split at sequence boundaries, for one KV head.
    pub fn run_item(&self, item: usize, sc: &mut Scratch<'_>) {
        let (tile, kh) = (item / self.p.num_kv_heads, item % self.p.num_kv_heads);
        let (t0, t1) = (tile * self.tile, ((tile + 1) * self.tile).min(self.batch.t));
        let (mut t, mut s) = (t0, self.batch.seq_of(t0));
        while t < t1 {
            while self.batch.q_range(s).end <= t {
                s += 1;
            }
            let end = t1.min(self.batch.q_range(s).end);
            self.run_tokens(s, t..end, kh, sc);
            t = end;
        }
    }

    /// The output row of token `t`, query head `h`.
    #[allow(clippy::mut_from_ref)]
    fn out_row(&self, t: usize, h: usize) -> &mut [f32] {
        let d = self.p.head_dim;
        // SAFETY: `t < T` and `h < H`, so the row lies in the `[T, H * D]` output; each (t, h)
        // belongs to exactly one item, and an item holds at most one row slice at a time.
        unsafe { self.out.slice_mut((t * self.p.num_heads + h) * d..(t * self.p.num_heads + h + 1) * d) }
    }

    /// Tokens `toks` (all of sequence `s`) against the cache, query heads of KV head `kh`.
    fn run_tokens(&self, s: usize, toks: Range<usize>, kh: usize, sc: &mut Scratch<'_>) {
        let (p, b) = (&self.p, self.batch);
        let (g, d, n_tok) = (p.group(), p.head_dim, toks.len());
        let rows = n_tok * g;
        let first_pos = b.start_pos(s) + (toks.start - b.q_range(s).start);
        for t in toks.clone() {
            for gi in 0..g {
                self.out_row(t, kh * g + gi).fill(0.0);
            }
        }
        sc.m[..rows].fill(f32::NEG_INFINITY);
        sc.l[..rows].fill(0.0);
        let (lo, hi) = (p.first_key(first_pos), first_pos + n_tok - 1);
        let row_stride = p.num_kv_heads * d;
        for blk in lo / b.bs..=hi / b.bs {
            let p0 = blk * b.bs;
            let n = b.bs.min(hi + 1 - p0);
            let base = b.block(s, p0) * b.bs * row_stride + kh * d;
            let (kr, ks) = E::rows(self.k_cache, base, n, row_stride, d, self.scales.k, sc.kbuf);
            let (vr, vs) = E::rows(self.v_cache, base, n, row_stride, d, self.scales.v, sc.vbuf);
            for (i, t) in toks.clone().enumerate() {
                let pos = first_pos + i;
                let (klo, khi) = (p.first_key(pos).max(p0), pos.min(p0 + n - 1));
                if klo > khi {
                    continue;
                }
                for gi in 0..g {
                    let (h, r) = (kh * g + gi, i * g + gi);
                    let q = &self.q[(t * p.num_heads + h) * d..][..d];
                    let st = RowState { m: &mut sc.m[r], l: &mut sc.l[r], acc: self.out_row(t, h) };
                    fold_block(q, p.scale, kr, ks, vr, vs, klo - p0..khi - p0 + 1, sc.scores, st);
                }
            }
        }
        for (i, t) in toks.enumerate() {
            for gi in 0..g {
                let l = sc.l[i * g + gi];
                if l > 0.0 {
                    for a in self.out_row(t, kh * g + gi) {
                        *a /= l;
                    }
                }
            }
        }
    }
}
