//! Host-side geometry of the CUDA `paged_attention` launches (kernels/cuda/attention.cu): the
//! concrete batch dims from the metas, the supported head sizes, grid sizes, the split-K count
//! of the decode path and the workspace it needs. Everything here is derived from metas only
//! (never from tensor contents), so a launch can be captured in a CUDA graph and replayed.

use rtllm_plugin_api::shapes::attention::{AttnParams, BLOCK_TABLES, K_CACHE, OP, Q};
use rtllm_plugin_api::{PluginError, TensorMeta};

/// Query rows (token x query head of one KV group) per block.
pub const ROWS: usize = 32;
/// Keys per shared-memory K/V tile.
pub const KEYS: usize = 32;
/// Threads per attention block.
pub const THREADS: u32 = 128;
/// Largest supported head dim (head dims are multiples of 32 up to this).
pub const MAX_HEAD_DIM: usize = 256;
/// Decode blocks the split count aims for (two waves of an H100's 132 SMs).
pub const TARGET_BLOCKS: usize = 264;
/// Keys per split at least: fewer splits for short block tables.
pub const MIN_SPLIT_KEYS: usize = 256;
/// Most splits of one decode row.
pub const MAX_SPLITS: usize = 32;

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP} (cuda): {msg}"))
}

/// Checks the head dim the kernels support: a multiple of 32, at most 256.
pub fn check_head_dim(d: usize) -> Result<(), PluginError> {
    if d == 0 || d % 32 != 0 || d > MAX_HEAD_DIM {
        return Err(err(format!("head_dim {d} is not supported: it must be a multiple of 32 up to {MAX_HEAD_DIM}")));
    }
    Ok(())
}

/// Dynamic shared memory of the prefill and decode blocks for head dim `d`: Q [32][D],
/// K [32][D+1], V [32][D], P [32][32] floats and 32 key slots.
pub fn shared_bytes(d: usize) -> u32 {
    (4 * (ROWS * d + KEYS * (d + 1) + KEYS * d + ROWS * KEYS + KEYS)) as u32
}

/// Concrete dims of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Packed new tokens.
    pub t: usize,
    /// Sequences.
    pub s: usize,
    /// Block-table width.
    pub mb: usize,
    /// Cache blocks.
    pub nb: usize,
    /// Tokens per cache block.
    pub bs: usize,
    pub h: usize,
    pub kvh: usize,
    pub d: usize,
}

fn known(m: &TensorMeta, what: &str) -> Result<Vec<usize>, PluginError> {
    m.concrete_shape().map_err(|e| err(format!("{what}: {e}")))
}

impl Geometry {
    /// From concrete input metas (already checked by `shapes::attention::check_metas`).
    pub fn new(p: &AttnParams, inputs: &[TensorMeta]) -> Result<Geometry, PluginError> {
        let (q, cache, bt) = (
            known(&inputs[Q], "q")?,
            known(&inputs[K_CACHE], "k_cache")?,
            known(&inputs[BLOCK_TABLES], "block_tables")?,
        );
        let g = Geometry {
            t: q[0],
            s: bt[0],
            mb: bt[1],
            nb: cache[0],
            bs: cache[1],
            h: p.num_heads,
            kvh: p.num_kv_heads,
            d: p.head_dim,
        };
        check_head_dim(g.d)?;
        if g.bs == 0 {
            return Err(err("the cache's block size is 0".into()));
        }
        // The kernels index with 32-bit ints where these stay in range (offsets are 64-bit).
        let limit = i32::MAX as usize;
        let checks = [
            ("tokens x query heads", g.t.checked_mul(g.h)),
            ("sequences x block-table width", g.s.checked_mul(g.mb)),
            ("cache slots x kv heads", g.nb.checked_mul(g.bs).and_then(|n| n.checked_mul(g.kvh))),
            ("block-table capacity", g.mb.checked_mul(g.bs)),
            ("sequences x query heads x splits", g.s.checked_mul(g.h).and_then(|n| n.checked_mul(MAX_SPLITS))),
            ("prefill tiles", g.t.checked_mul(g.group()).map(|n| n / ROWS + g.s + 1)),
        ];
        for (what, v) in checks {
            if v.map_or(true, |v| v > limit) {
                return Err(err(format!("{what} exceed the kernels' 32-bit index range ({g:?})")));
            }
        }
        Ok(g)
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.h / self.kvh
    }

    /// Row tiles of one KV group's heads in a decode block.
    pub fn group_tiles(&self) -> usize {
        self.group().div_ceil(ROWS)
    }

    /// Split-K count of the decode path for `s` sequences: enough blocks to fill the GPU, at
    /// most one split per `MIN_SPLIT_KEYS` keys of the table's capacity, at most `MAX_SPLITS`.
    pub fn splits_for(&self, s: usize) -> usize {
        let blocks = (s * self.kvh * self.group_tiles()).max(1);
        let cap = (self.mb * self.bs).div_ceil(MIN_SPLIT_KEYS).clamp(1, MAX_SPLITS);
        TARGET_BLOCKS.div_ceil(blocks).clamp(1, cap)
    }

    /// This batch's split count.
    pub fn splits(&self) -> usize {
        self.splits_for(self.s)
    }

    /// f32 elements of split-K scratch for `s` sequences: acc [S][H][splits][D], m and l
    /// [S][H][splits].
    pub fn workspace_floats_for(&self, s: usize) -> usize {
        s * self.h * self.splits_for(s) * (self.d + 2)
    }

    /// Workspace bytes that cover this batch and every batch with fewer sequences (the host
    /// sizes the workspace once from maximal metas; the split count grows as S shrinks).
    pub fn workspace_bytes(&self) -> usize {
        (1..=self.s).map(|s| self.workspace_floats_for(s)).max().unwrap_or(0) * std::mem::size_of::<f32>()
    }

    /// Prefill grid: (tile bound, KV heads). Tiles of 32 rows per sequence with >= 2 new tokens
    /// number at most ceil(T * G / 32) + S.
    pub fn prefill_grid(&self) -> (u32, u32, u32) {
        ((self.t * self.group()).div_ceil(ROWS) as u32 + self.s as u32, self.kvh as u32, 1)
    }

    /// Decode grid: (sequences x KV heads x group tiles, splits).
    pub fn decode_grid(&self) -> (u32, u32, u32) {
        ((self.s * self.kvh * self.group_tiles()) as u32, self.splits() as u32, 1)
    }

    /// Combine grid: one block per (sequence, query head).
    pub fn combine_grid(&self) -> (u32, u32, u32) {
        ((self.s * self.h) as u32, 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::DType;

    fn geom(t: usize, s: usize, mb: usize, bs: usize, h: usize, kvh: usize, d: usize) -> Geometry {
        let p = AttnParams { num_heads: h, num_kv_heads: kvh, head_dim: d, scale: 1.0, sliding_window: 0 };
        let metas = vec![
            TensorMeta::of(DType::BF16, &[t, h * d]),
            TensorMeta::of(DType::BF16, &[t, kvh * d]),
            TensorMeta::of(DType::BF16, &[t, kvh * d]),
            TensorMeta::of(DType::BF16, &[64, bs, kvh, d]),
            TensorMeta::of(DType::BF16, &[64, bs, kvh, d]),
            TensorMeta::of(DType::I32, &[s, mb]),
            TensorMeta::of(DType::I32, &[s]),
            TensorMeta::of(DType::I32, &[s + 1]),
        ];
        Geometry::new(&p, &metas).unwrap()
    }

    #[test]
    fn head_dims() {
        for d in [32, 64, 96, 128, 160, 256] {
            check_head_dim(d).unwrap();
        }
        for d in [0, 16, 80, 100, 288] {
            let e = check_head_dim(d).unwrap_err();
            assert!(e.message().contains("multiple of 32 up to 256"), "{e}");
        }
        assert_eq!(shared_bytes(128), 4 * (4096 + 4128 + 4096 + 1024 + 32));
        assert!(shared_bytes(256) < 227 * 1024, "fits an H100's opt-in shared memory");
    }

    #[test]
    fn splits_follow_capacity_and_occupancy() {
        // One long sequence, 8 KV heads: 33 splits wanted, capped at 32.
        let g = geom(1, 1, 512, 64, 32, 8, 128);
        assert_eq!(g.splits(), 32);
        // Short tables cap the splits: capacity 4 * 16 = 64 keys -> 1 split.
        assert_eq!(geom(4, 4, 4, 16, 32, 8, 128).splits(), 1);
        // Many sequences fill the GPU without splitting.
        assert_eq!(geom(256, 256, 512, 16, 32, 8, 128).splits(), 1);
        // 16 sequences x 8 KV heads = 128 blocks -> 3 splits (capacity allows 32).
        assert_eq!(geom(16, 16, 512, 16, 32, 8, 128).splits(), 3);
        // A group wider than 32 heads takes two row tiles per KV head.
        assert_eq!(geom(1, 1, 64, 16, 64, 1, 64).group_tiles(), 2);
    }

    #[test]
    fn workspace_covers_every_smaller_batch() {
        let g = geom(300, 300, 512, 16, 32, 1, 128);
        let need = g.workspace_bytes();
        for s in 1..=300 {
            let floats = s * g.h * g.splits_for(s) * (g.d + 2);
            assert!(floats * 4 <= need, "s = {s}");
        }
        // Not monotone in S by itself: 200 sequences take 2 splits, 300 only one.
        assert!(g.workspace_floats_for(200) > g.workspace_floats_for(300));
        assert_eq!(geom(0, 0, 4, 16, 4, 4, 64).workspace_bytes(), 0);
    }

    #[test]
    fn grids() {
        let g = geom(70, 5, 12, 16, 8, 2, 64);
        // ceil(70 * 4 / 32) = 9 tiles + 5 sequences; 2 KV heads.
        assert_eq!(g.prefill_grid(), (14, 2, 1));
        assert_eq!(g.decode_grid(), (10, g.splits() as u32, 1));
        assert_eq!(g.combine_grid(), (40, 1, 1));
        let p = AttnParams { num_heads: 8, num_kv_heads: 2, head_dim: 80, scale: 1.0, sliding_window: 0 };
        let metas = vec![TensorMeta::of(DType::F32, &[1, 640]); 8];
        assert!(Geometry::new(&p, &metas).unwrap_err().message().contains("head_dim 80"));
    }
}
