//! Host-side geometry of the CUDA `paged_attention` launches (kernels/cuda/attention_*.cu): the
//! concrete batch dims from the metas, the supported head sizes, the prefill grid, and the
//! decode plan (query heads per block, split-K cluster size, grid, shared memory). Everything
//! here is derived from metas only (never from tensor contents), so a launch can be captured in
//! a CUDA graph and replayed; the decode kernel sizes each row's splits from its actual length.

use rtllm_plugin_api::shapes::attention::{AttnParams, BLOCK_TABLES, K_CACHE, OP, Q};
use rtllm_plugin_api::{PluginError, TensorMeta};

/// Query rows (token x query head of one KV group) per prefill block.
pub const ROWS: usize = 32;
/// Keys per shared-memory K/V tile of a prefill block.
pub const KEYS: usize = 32;
/// Threads per attention block (prefill and decode: 4 warps).
pub const THREADS: u32 = 128;
/// Warps per decode block.
pub const DECODE_WARPS: usize = 4;
/// Largest supported head dim (head dims are multiples of [`HEAD_DIM_STEP`] up to this).
pub const MAX_HEAD_DIM: usize = 256;
/// Head dims are multiples of this: the decode kernel's lane chunk (8 elements, one 16-byte
/// load of a 16-bit cache), so every chunk of a 16-byte-aligned cache is aligned.
pub const HEAD_DIM_STEP: usize = 8;
/// Most query heads one decode block serves (the kernel's GT: 1, 2, 4 or 8).
pub const MAX_HEAD_TILE: usize = 8;
/// Largest split-K cluster (the portable thread-block cluster size).
pub const MAX_CLUSTER: usize = 8;
/// Keys per split at least, against the table's capacity: short tables split less.
pub const MIN_SPLIT_KEYS: usize = 64;
/// Decode blocks per multiprocessor the split count aims for at most. Measured on an H200:
/// more splits (8 per SM) cost more in cluster scheduling and merging than they gain in
/// parallelism, except for long contexts at batch ~64.
pub const BLOCKS_PER_SM: usize = 2;

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP} (cuda): {msg}"))
}

/// Checks the head dim the kernels support: a multiple of 8, at most 256.
pub fn check_head_dim(d: usize) -> Result<(), PluginError> {
    if d == 0 || !d.is_multiple_of(HEAD_DIM_STEP) || d > MAX_HEAD_DIM {
        return Err(err(format!(
            "head_dim {d} is not supported: it must be a multiple of {HEAD_DIM_STEP} up to {MAX_HEAD_DIM}"
        )));
    }
    Ok(())
}

/// Dynamic shared memory of a prefill block for head dim `d`: Q [32][D], K [32][D+1],
/// V [32][DP] (DP = D rounded up to 32: a lane per output dim), P [32][32] floats, 32 key slots
/// and 32 new-token indices.
pub fn shared_bytes(d: usize) -> u32 {
    let dp = d.div_ceil(32) * 32;
    (4 * (ROWS * d + KEYS * (d + 1) + KEYS * dp + ROWS * KEYS + 2 * KEYS)) as u32
}

/// Query heads per decode block for `group` query heads per KV head: the next power of two,
/// at most [`MAX_HEAD_TILE`].
pub fn head_tile(group: usize) -> usize {
    group.max(1).next_power_of_two().min(MAX_HEAD_TILE)
}

/// Dynamic shared memory of a decode block serving `gt` heads of dim `d` in clusters of
/// `cluster` splits: per warp acc [GT][D], m and l [GT] (floats); with clusters, rank 0's
/// receive area for the other splits' states, acc [cluster - 1][GT][D] and (m, l)
/// [cluster - 1][GT] (floats), then its 8-byte mbarrier.
pub fn decode_shared_bytes(gt: usize, d: usize, cluster: usize) -> u32 {
    let split_k = if cluster > 1 { 4 * (cluster - 1) * gt * (d + 2) + 8 } else { 0 };
    (4 * DECODE_WARPS * gt * (d + 2) + split_k) as u32
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

/// How one batch's decode rows are launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    /// Query heads per block.
    pub head_tile: usize,
    /// Blocks per (sequence, KV head): ceil(group / head_tile).
    pub head_tiles: usize,
    /// Splits of each row's keys: the thread-block cluster size (1 = no split, no cluster).
    pub cluster: usize,
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
            ("decode blocks", g.s.checked_mul(g.h).and_then(|n| n.checked_mul(MAX_CLUSTER))),
            ("prefill tiles", g.t.checked_mul(g.group()).map(|n| n / ROWS + g.s + 1)),
        ];
        for (what, v) in checks {
            if v.is_none_or(|v| v > limit) {
                return Err(err(format!("{what} exceed the kernels' 32-bit index range ({g:?})")));
            }
        }
        Ok(g)
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.h / self.kvh
    }

    /// Whether a sequence with >= 2 new tokens can exist in this batch (else no prefill launch).
    pub fn may_prefill(&self) -> bool {
        self.t >= 2
    }

    /// Prefill grid: (tile bound, KV heads). Sequences with >= 2 new tokens (at most T / 2 of
    /// them) take ceil(q_len * G / 32) tiles each: at most ceil(T * G / 32) + min(S, T / 2).
    pub fn prefill_grid(&self) -> (u32, u32, u32) {
        let tiles = (self.t * self.group()).div_ceil(ROWS) + self.s.min(self.t / 2);
        (tiles as u32, self.kvh as u32, 1)
    }

    /// The decode plan on a GPU of `sms` multiprocessors whose clusters hold at most
    /// `max_cluster` blocks: split rows (clusters of 2, 4 or 8) while the grid stays within
    /// [`BLOCKS_PER_SM`] blocks per multiprocessor (a few waves: small tails) and each split
    /// keeps >= MIN_SPLIT_KEYS of the table's capacity.
    pub fn decode_plan(&self, sms: usize, max_cluster: usize) -> DecodePlan {
        let head_tile = head_tile(self.group());
        let head_tiles = self.group().div_ceil(head_tile);
        let items = (self.s * self.kvh * head_tiles).max(1);
        let target = BLOCKS_PER_SM * sms.max(1);
        let by_len = (self.mb * self.bs).div_ceil(MIN_SPLIT_KEYS);
        let limit = max_cluster.clamp(1, MAX_CLUSTER);
        let mut cluster = 1;
        while cluster * 2 <= limit && items * cluster * 2 <= target && cluster * 2 <= by_len {
            cluster *= 2;
        }
        DecodePlan { head_tile, head_tiles, cluster }
    }

    /// Decode grid: (sequences x KV heads x head tiles x cluster, 1, 1).
    pub fn decode_grid(&self, plan: &DecodePlan) -> (u32, u32, u32) {
        ((self.s * self.kvh * plan.head_tiles * plan.cluster) as u32, 1, 1)
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
    fn head_dims_and_shared_memory() {
        for d in [8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 248, 256] {
            check_head_dim(d).unwrap();
        }
        for d in [0, 4, 12, 100, 264, 288] {
            let e = check_head_dim(d).unwrap_err();
            assert!(e.message().contains("multiple of 8 up to 256"), "{e}");
        }
        assert_eq!(shared_bytes(128), 4 * (4096 + 4128 + 4096 + 1024 + 64));
        // V rows pad to whole lanes: D = 48 -> V [32][64]; D = 16 -> V [32][32].
        assert_eq!(shared_bytes(48), 4 * (32 * 48 + 32 * 49 + 32 * 64 + 1024 + 64));
        assert_eq!(shared_bytes(16), 4 * (32 * 16 + 32 * 17 + 32 * 32 + 1024 + 64));
        assert!(shared_bytes(256) < 227 * 1024, "fits an H100's opt-in shared memory");
        assert!(shared_bytes(248) <= shared_bytes(256));
        // The decode kernel's layout: 4 warps x GT x (D + 2) floats, plus (cluster - 1) x GT x
        // (D + 2) floats and an 8-byte mbarrier for split-K clusters.
        assert_eq!(decode_shared_bytes(4, 64, 1), 4 * 4 * 4 * 66);
        assert_eq!(decode_shared_bytes(4, 64, 8), 4 * 4 * 4 * 66 + 4 * 7 * 4 * 66 + 8);
        assert!(decode_shared_bytes(MAX_HEAD_TILE, MAX_HEAD_DIM, 1) <= 48 * 1024);
        // The largest split-K layout needs the opt-in limit, well under an H100's 227 KiB.
        assert!(decode_shared_bytes(MAX_HEAD_TILE, MAX_HEAD_DIM, MAX_CLUSTER) < 227 * 1024);
    }

    #[test]
    fn head_tiles_cover_the_group() {
        assert_eq!([1, 2, 3, 4, 5, 8, 12, 64].map(head_tile), [1, 2, 4, 4, 8, 8, 8, 8]);
        let g = geom(1, 1, 64, 16, 64, 1, 64);
        let plan = g.decode_plan(132, 8);
        assert_eq!((plan.head_tile, plan.head_tiles), (8, 8));
        let g = geom(1, 1, 64, 16, 12, 1, 64);
        assert_eq!(g.decode_plan(132, 8).head_tiles, 2);
    }

    #[test]
    fn splits_follow_occupancy_and_capacity() {
        // Llama-1B batch 1 (8 KV heads x 1 tile): 8 items -> clusters of 8 (64 blocks).
        let g = geom(1, 1, 64, 32, 32, 8, 64);
        assert_eq!(g.decode_plan(132, 8).cluster, 8);
        assert_eq!(g.decode_grid(&g.decode_plan(132, 8)), (64, 1, 1));
        // No cluster support: never split.
        assert_eq!(g.decode_plan(132, 1).cluster, 1);
        // Batch 8: 64 items -> 4 splits (256 blocks <= 2 x 132).
        assert_eq!(geom(8, 8, 64, 32, 32, 8, 64).decode_plan(132, 8).cluster, 4);
        // Batch 64 and 256 fill the GPU without splitting.
        assert_eq!(geom(64, 64, 64, 32, 32, 8, 64).decode_plan(132, 8).cluster, 1);
        assert_eq!(geom(256, 256, 64, 32, 32, 8, 64).decode_plan(132, 8).cluster, 1);
        // Short tables cap the splits: capacity 4 * 16 = 64 keys -> 1 split; 128 keys -> 2.
        assert_eq!(geom(1, 1, 4, 16, 32, 8, 128).decode_plan(132, 8).cluster, 1);
        assert_eq!(geom(1, 1, 8, 16, 32, 8, 128).decode_plan(132, 8).cluster, 2);
    }

    #[test]
    fn grids() {
        let g = geom(70, 5, 12, 16, 8, 2, 64);
        // ceil(70 * 4 / 32) = 9 tiles + min(5, 35) sequences; 2 KV heads.
        assert_eq!(g.prefill_grid(), (14, 2, 1));
        assert!(g.may_prefill());
        // Pure decode of one sequence: no prefill launch.
        assert!(!geom(1, 1, 12, 16, 8, 2, 64).may_prefill());
        // Decode-shaped metas (T = S) still bound the tiles: 64 tokens, G = 4 -> 8 + 32.
        assert_eq!(geom(64, 64, 12, 16, 8, 2, 64).prefill_grid(), (40, 2, 1));
        let p = AttnParams { num_heads: 8, num_kv_heads: 2, head_dim: 84, scale: 1.0, sliding_window: 0 };
        let metas = vec![TensorMeta::of(DType::F32, &[1, 672]); 8];
        assert!(Geometry::new(&p, &metas).unwrap_err().message().contains("head_dim 84"));
    }
}
