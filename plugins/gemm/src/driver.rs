//! Splits one matmul (y[T, N] = x[T, K] · w[N, K]ᵀ + bias) into cache-sized blocks and runs
//! them as tasks on the host's thread pool.
//!
//! Tasks form a grid of row chunks × column chunks (column chunks in multiples of 8 weight
//! rows; few tokens means one row chunk, i.e. a GEMV split over N). Inside a task, columns are
//! walked in blocks of [`NB`] weight rows and K in blocks of at most [`KC_MAX`], so a weight
//! block stays in L2 while every row of the task's x streams past it.
//!
//! With enough tokens (see [`pack_min_rows`]) each weight block is packed, widened to f32, into
//! the task's slot of the workspace and the outer-product kernel of `packed` runs on it.
//! Fewer tokens (a decode), or a launch whose host gave no workspace, run the dot-product
//! tiles of `tile` straight on the weights, widening 16-bit weights on the fly: packing costs
//! one pass over the weights, which only pays off when enough rows of x reuse them.

use crate::packed::{pack, packed_fn, PackedBlock, PANEL};
use crate::simd::{Isa, WeightElem};
use crate::tile::{block_fn, Block, Tile};
use rtllm_plugin_api::{DType, DisjointMut, Element, LaunchContext, PluginError};

/// Weight rows (output columns) per cache block.
pub const NB: usize = 64;
/// Most K elements per cache block.
pub const KC_MAX: usize = 768;
/// Upper bound on tasks per launch; it also bounds the workspace (one panel slot per task).
pub const MAX_TASKS: usize = 64;
/// Output columns per column-chunk unit of the dot-product tiles (a multiple of every NR);
/// packed blocks use whole panels ([`PANEL`]).
const COL_UNIT: usize = 8;
/// Fewer flops than this per task do not pay for a trip through the pool.
const MIN_TASK_FLOPS: usize = 1 << 18;

/// The K blocks: `(count, length)`; every block but the last is `length` long (a multiple
/// of 8), the last takes the rest.
pub fn k_blocking(k: usize) -> (usize, usize) {
    if k == 0 {
        return (1, 0);
    }
    let count = k.div_ceil(KC_MAX);
    let len = k.div_ceil(count).next_multiple_of(8).min(k);
    (k.div_ceil(len), len)
}

/// The fewest tokens for which packing the weights pays off. Measured on a Sapphire Rapids
/// core: packing costs ~0.2 ns per weight; f32 weights break even at ~48 rows, 16-bit ones
/// (whose on-the-fly widening costs more) at ~16.
pub fn pack_min_rows(weight: DType) -> usize {
    if weight == DType::F32 {
        48
    } else {
        16
    }
}

/// Rows of x per packed micro-kernel call (row chunks of a prefill are multiples of it).
const PACKED_MR: usize = 6;

/// f32 elements of one task's packed-weight slot (one block of whole panels).
pub fn slot_len(n: usize, k: usize) -> usize {
    NB.min(n.next_multiple_of(PANEL)) * k_blocking(k).1
}

/// Workspace bytes a prefill uses for packed weights (any weight dtype).
pub fn workspace_bytes(n: usize, k: usize) -> usize {
    MAX_TASKS * slot_len(n, k) * std::mem::size_of::<f32>()
}

/// One matmul on host memory. `y` is written, never read before it is written.
pub struct Problem<'a, W> {
    pub x: &'a [f32],
    pub w: &'a [W],
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
    pub t: usize,
    pub k: usize,
    pub n: usize,
}

/// The task grid of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grid {
    row_chunks: usize,
    col_chunks: usize,
}

fn grid(t: usize, k: usize, n: usize, (mr, col_unit): (usize, usize), threads: usize) -> Grid {
    let flops = 2usize.saturating_mul(t).saturating_mul(k).saturating_mul(n);
    let by_work = (flops / MIN_TASK_FLOPS).max(1);
    let by_threads = if threads <= 1 { 1 } else { (threads * 4).min(MAX_TASKS) };
    let goal = by_work.min(by_threads);
    let col_chunks = n.div_ceil(col_unit).min(goal).max(1);
    let row_chunks = t.div_ceil(mr).min((goal / col_chunks).max(1)).max(1);
    Grid { row_chunks, col_chunks }
}

/// Part `i` of `parts` of `0..len`, split in whole `unit`s as evenly as possible.
fn split(len: usize, unit: usize, parts: usize, i: usize) -> (usize, usize) {
    let units = len.div_ceil(unit);
    let start = (i * units / parts * unit).min(len);
    let end = ((i + 1) * units / parts * unit).min(len);
    (start, end)
}

/// Runs `p` on `isa`, spreading tasks over `ctx`'s pool. A prefill packs weights into
/// `panels` (the caller's part of the launch workspace, [`workspace_bytes`] of it) when given
/// and large enough; otherwise the dot-product tiles read the weights in place.
pub fn run<W: WeightElem + Element>(
    ctx: &LaunchContext,
    isa: Isa,
    p: Problem<'_, W>,
    panels: Option<&mut [f32]>,
) -> Result<(), PluginError> {
    let Problem { x, w, bias, y, t, k, n } = p;
    if x.len() != t * k || w.len() != n * k || y.len() != t * n || bias.is_some_and(|b| b.len() != n) {
        return Err(PluginError::new(format!("matmul: buffer lengths do not match T={t}, K={k}, N={n}")));
    }
    if t == 0 || n == 0 {
        return Ok(());
    }
    let tile = Tile::for_rows(t);
    let prefill = t >= pack_min_rows(W::DTYPE);
    let row_unit = if prefill { PACKED_MR } else { tile.mr() };
    let col_unit = if prefill { PANEL } else { COL_UNIT };
    let g = grid(t, k, n, (row_unit, col_unit), ctx.num_threads());
    let tasks = g.row_chunks * g.col_chunks;
    let slot = slot_len(n, k);
    let panels = match panels {
        Some(p) if prefill && p.len() >= tasks * slot => Some(DisjointMut::new(&mut p[..tasks * slot])),
        _ => None,
    };
    let direct = block_fn::<W>(isa, tile);
    let packed = packed_fn(isa);
    let (k_count, k_len) = k_blocking(k);
    let y_ptr = DisjointMut::new(y);

    ctx.parallel_for(tasks, |task| {
        let (r0, r1) = split(t, row_unit, g.row_chunks, task / g.col_chunks);
        let (c0, c1) = split(n, col_unit, g.col_chunks, task % g.col_chunks);
        if r0 >= r1 || c0 >= c1 {
            return;
        }
        let y = &y_ptr;
        for nb0 in (c0..c1).step_by(NB) {
            let cols = NB.min(c1 - nb0);
            for kb in 0..k_count {
                let k0 = kb * k_len;
                let depth = k_len.min(k - k0);
                let x_blk = x[r0 * k + k0..].as_ptr();
                // SAFETY: `y` has t*n elements (checked above) and this task alone writes rows
                // r0..r1 × columns nb0..nb0+cols.
                let y_blk = unsafe { y.as_mut_ptr().add(r0 * n + nb0) };
                let bias_blk = match bias {
                    Some(b) if kb == 0 => b[nb0..].as_ptr(),
                    _ => std::ptr::null(),
                };
                let w_rows = &w[nb0 * k..(nb0 + cols) * k];
                match &panels {
                    Some(ws) => {
                        let len = cols.div_ceil(PANEL) * PANEL * depth;
                        // SAFETY: slot `task` (< tasks) of the workspace, which holds tasks*slot
                        // f32s, belongs to this task alone; len <= slot (see `slot_len`).
                        let panels = unsafe { ws.slice_mut(task * slot..task * slot + len) };
                        pack(isa, w_rows, k, k0, depth, cols, panels);
                        let b = PackedBlock {
                            x: x_blk,
                            ldx: k,
                            panels: panels.as_ptr(),
                            y: y_blk,
                            ldy: n,
                            bias: bias_blk,
                            accumulate: kb > 0,
                            rows: r1 - r0,
                            cols,
                            depth,
                        };
                        // SAFETY: the block lies inside x, the panels, y and bias (lengths checked);
                        // `isa` was detected on this CPU.
                        unsafe { packed(&b) }
                    }
                    None => {
                        let b = Block {
                            x: x_blk,
                            ldx: k,
                            w: w_rows[k0..].as_ptr(),
                            ldw: k,
                            y: y_blk,
                            ldy: n,
                            bias: bias_blk,
                            accumulate: kb > 0,
                            rows: r1 - r0,
                            cols,
                            depth,
                        };
                        // SAFETY: as above.
                        unsafe { direct(&b) }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_blocks_cover_k() {
        for k in [0usize, 1, 7, 8, 64, 577, 768, 769, 1536, 4096, 11008] {
            let (count, len) = k_blocking(k);
            assert!(len <= KC_MAX.max(8), "k={k} len={len}");
            assert!(count * len >= k && (count - 1) * len < k.max(1), "k={k}: {count} x {len}");
            if count > 1 {
                assert_eq!(len % 8, 0);
            }
        }
    }

    #[test]
    fn splits_partition_the_range() {
        for (len, unit, parts) in [(13usize, 8usize, 2usize), (576, 8, 8), (17, 3, 5), (1, 1, 1), (130, 8, 17)] {
            let mut next = 0;
            for i in 0..parts {
                let (s, e) = split(len, unit, parts, i);
                assert_eq!(s, next);
                assert!(e >= s);
                next = e;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn grid_respects_work_and_threads() {
        assert_eq!(grid(1, 64, 13, (1, 8), 8), Grid { row_chunks: 1, col_chunks: 1 });
        let g = grid(128, 576, 576, (6, 16), 2);
        assert_eq!(g.row_chunks * g.col_chunks, 8);
        let g = grid(4096, 4096, 4096, (6, 16), 64);
        assert!(g.row_chunks * g.col_chunks <= MAX_TASKS);
        assert_eq!(grid(128, 576, 576, (6, 16), 1), Grid { row_chunks: 1, col_chunks: 1 });
    }
}
