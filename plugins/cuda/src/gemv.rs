//! The GEMV kernels of kernels/cuda/gemv.cu: y_s = x · W_sᵀ for at most [`MAX_ROWS`] activation
//! rows per tile and 1 to [`MAX_SEGMENTS`] weights sharing x, in one launch. `matmul` uses it for
//! small M; `grouped_matmul` for q/k/v and gate/up together; the FP8 ops (fp8_kernels.rs) for
//! E4M3 weights with their scales. This file owns the kernel handles, the choice of the work
//! split (rows per block, K slices) and the launch; callers check shapes and dtypes.

use crate::devargs::{grid_dim, suffix, to_i32, MAX_GRID_X, MAX_GRID_YZ};
use crate::runtime::{self, device_attribute, Dims, Function, KernelArgs, KernelSource};
use cudarc::driver::sys::CUdevice_attribute;
use rtllm_plugin_api::{DType, PluginError};
use std::ffi::c_void;

static SRC: KernelSource = crate::kernel_source!("gemv.cu");

/// The most activation rows (tokens) the GEMV takes; larger M goes to cuBLASLt.
pub const MAX_ROWS: usize = 8;
/// The most weights one launch covers.
pub const MAX_SEGMENTS: usize = 4;
/// Warps per block and weight rows per warp (`GEMV_WARPS`, `GEMV_ROWS` in gemv.cu).
const WARPS: usize = 8;
const ROWS_PER_WARP: usize = 2;
/// Instances by the largest M they handle (`gemv_m<MAXM>_<T>`).
const MAXM: [usize; 4] = [1, 2, 4, 8];

/// Whether the GEMV should serve `m` tokens against `rows` weight rows of length `k` (else
/// cuBLASLt): always for 1 or 2 tokens, and up to [`MAX_ROWS`] while m·rows·k stays below 2^25
/// multiply-adds. The GEMV's f32 FMAs grow with m while the weight bytes do not, so for larger
/// problems cuBLASLt's tensor cores win (H200, gemv_bench: gate+up at M=8 42 µs vs 20 µs; the
/// k/v projection at M=8 6 µs vs 10 µs).
pub fn preferred(m: usize, rows: usize, k: usize) -> bool {
    (1..=MAX_ROWS).contains(&m) && (m <= 2 || m.saturating_mul(rows).saturating_mul(k) < 1 << 25)
}

/// One weight of a launch and its output: W [n, K], y [M, n] (device pointers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub w: u64,
    pub y: u64,
    pub n: usize,
}

/// The bias of a single-segment launch: [n] of the activation dtype or f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bias {
    pub ptr: u64,
    pub dtype: DType,
}

/// What the GEMV does with its sums (`mode` of gemv.cu).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Epilogue {
    /// y_s = x · W_sᵀ (+ bias).
    Plain,
    /// Two segments of the same n, gate and up: one output y = silu(x·gateᵀ) ⊙ (x·upᵀ) [m, n] at
    /// the first segment's `y` (the second's is not written).
    Gated,
    /// q, k, v segments of whole heads: q and k rotated (the `rope` op) at `positions` [m].
    Rope(RopeEpilogue),
}

/// The rotary embedding of [`Epilogue::Rope`]: the rope kernel's arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeEpilogue {
    /// Device pointer to i32 positions [m].
    pub positions: u64,
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub interleaved: bool,
    /// (kind, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
    pub scaling: (i32, f32, f32, f32, f32),
    pub theta: f32,
}

/// The scales of an FP8-weight GEMV (device pointers): x's row scales [m] and each segment's
/// weight scale, f32 [1] or one per row (`per_row[s]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Fp8Scales {
    pub sx: u64,
    pub ws: [u64; MAX_SEGMENTS],
    pub per_row: [bool; MAX_SEGMENTS],
}

/// One GEMV: x [m, k] against every segment's weight, an optional bias (single segment); the
/// FP8 scales exactly when the kernels are [`Gemv::fp8`]'s.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    pub x: u64,
    pub m: usize,
    pub k: usize,
    pub segs: &'a [Segment],
    pub bias: Option<Bias>,
    pub epilogue: Epilogue,
    pub fp8: Option<Fp8Scales>,
}

/// The work split of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Warps sharing one row group, each summing an interleaved slice of K (1, 2, 4 or 8).
    pub k_slices: usize,
    /// Blocks of the 1-D grid.
    pub blocks: usize,
    /// Whether the 16-byte path is taken (K a multiple of the vector width, aligned tensors).
    pub vec: bool,
}

/// Whether every pointer is 16-byte aligned.
fn aligned16(ptrs: impl IntoIterator<Item = u64>) -> bool {
    ptrs.into_iter().all(|p| p % 16 == 0)
}

/// The split for `m` tokens against `rows` weight rows in all of length `k` of `dtype` on `sms`
/// multiprocessors: the fewest K slices that give about 12 (m = 1), 16 (m = 2) or 24 (more
/// tokens: more arithmetic per weight byte) warps per SM, and only while each lane still gets
/// at least one 16-byte chunk (or element) per row. Measured on an H200 (gemv_bench's K-split
/// sweep): more slices than that only add reduction work and wave tails.
pub fn split(m: usize, rows: usize, k: usize, dtype: DType, vec: bool, sms: usize) -> Split {
    split_with(m, rows, k, dtype, vec, sms, tuned_warps_per_sm(k))
}

/// `RTLLM_GEMV_WARPS_PER_SM=<warps>[@<K>]` (for tuning): the warps per SM [`split`] aims for,
/// whatever m is (only for GEMVs of that K when given).
fn tuned_warps_per_sm(k: usize) -> Option<usize> {
    static TUNED: std::sync::OnceLock<Option<(usize, Option<usize>)>> = std::sync::OnceLock::new();
    let tuned = *TUNED.get_or_init(|| {
        let v = std::env::var("RTLLM_GEMV_WARPS_PER_SM").ok()?;
        let (w, only_k) = match v.trim().split_once('@') {
            Some((w, k)) => (w, Some(k.parse::<usize>().ok()?)),
            None => (v.trim(), None),
        };
        Some((w.parse::<usize>().ok().filter(|&w| w > 0)?, only_k))
    });
    tuned.filter(|&(_, only_k)| only_k.is_none_or(|only| only == k)).map(|(w, _)| w)
}

/// [`split`] aiming for `per_sm` warps per SM when given.
fn split_with(m: usize, rows: usize, k: usize, dtype: DType, vec: bool, sms: usize, per_sm: Option<usize>) -> Split {
    let elems = if vec { 16 / dtype.block_bytes().max(1) } else { 1 };
    let chunks = k / elems;
    let groups = rows.div_ceil(ROWS_PER_WARP);
    let per_sm = per_sm.unwrap_or(match m {
        0 | 1 => 12,
        2 => 16,
        _ => 24,
    });
    let target = sms.max(1) * per_sm;
    let mut k_slices = 1;
    while k_slices < WARPS && groups * k_slices < target && chunks >= 32 * k_slices * 2 {
        k_slices *= 2;
    }
    Split { k_slices, blocks: blocks(rows, k_slices), vec }
}

/// Blocks covering `rows` weight rows with `k_slices` warps per row group.
fn blocks(rows: usize, k_slices: usize) -> usize {
    rows.div_ceil(ROWS_PER_WARP).div_ceil(WARPS / k_slices.clamp(1, WARPS)).max(1)
}

/// GEMV kernels of one output dtype, looked up in the current context: float weights and x of
/// that dtype, or FP8 weights against bf16-valued quantized x.
pub struct Gemv {
    dtype: DType,
    /// The weights' dtype: `dtype`, or F8_E4M3.
    weights: DType,
    fns: [Function; 4],
    sms: usize,
}

impl Gemv {
    /// Loads (compiling on first use) the kernels for `dtype` (f32, bf16 or f16; weights of the
    /// same dtype) into the current context.
    pub fn new(op: &str, dtype: DType) -> Result<Gemv, PluginError> {
        Gemv::load(op, dtype, dtype, "gemv")
    }

    /// The FP8-weight kernels writing y of `dtype` (bf16 or f16): x holds the bf16 values of the
    /// activations' E4M3 codes, every launch passes [`Fp8Scales`].
    pub fn fp8(op: &str, dtype: DType) -> Result<Gemv, PluginError> {
        if !matches!(dtype, DType::BF16 | DType::F16) {
            return Err(PluginError::new(format!("{op}: the FP8 GEMV writes bf16 or f16, not {dtype}")));
        }
        Gemv::load(op, dtype, DType::F8_E4M3, "gemv_f8")
    }

    fn load(op: &str, dtype: DType, weights: DType, stem: &str) -> Result<Gemv, PluginError> {
        let s = suffix(op, dtype)?;
        let mut fns = [Function(std::ptr::null_mut()); 4];
        for (f, m) in fns.iter_mut().zip(MAXM) {
            *f = runtime::function(&SRC, &format!("{stem}_m{m}_{s}"))?;
        }
        let sms = device_attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        Ok(Gemv { dtype, weights, fns, sms: sms.max(1) as usize })
    }

    /// Enqueues y_s[m, n_s] = x[m, k] · W_s[n_s, k]ᵀ (+ bias on a single segment) on `stream`
    /// with the K split [`split`] chooses, in tiles of at most [`MAX_ROWS`] rows (grid.y).
    /// Allocates nothing and never synchronizes; the grid follows from the shapes only.
    ///
    /// # Safety
    /// As [`Gemv::launch_with`].
    pub unsafe fn launch(&self, op: &str, stream: *mut c_void, p: &Problem<'_>) -> Result<(), PluginError> {
        unsafe { self.launch_with(op, stream, p, None) }
    }

    /// [`Gemv::launch`] with the number of K slices per row group forced (1, 2, 4 or 8) when
    /// `k_slices` is given (for tuning; results are the same up to f32 summation order).
    ///
    /// # Safety
    /// `x` must be a device tensor [m, k] of the kernels' dtype (bf16 for FP8 weights), each
    /// segment's `w` [n, k] of the weights' dtype and `y` [m, n] of the kernels' dtype (y
    /// written, not aliasing the inputs), the bias [n] of its dtype; the FP8 scales f32 [m] (sx)
    /// and [1] or [n] per segment.
    pub unsafe fn launch_with(
        &self,
        op: &str,
        stream: *mut c_void,
        p: &Problem<'_>,
        k_slices: Option<usize>,
    ) -> Result<(), PluginError> {
        let Problem { x, m, k, segs, bias, epilogue, fp8 } = *p;
        if m == 0 {
            return Err(PluginError::new(format!("{op}: the GEMV takes at least one row")));
        }
        if fp8.is_some() != (self.weights == DType::F8_E4M3) {
            return Err(PluginError::new(format!(
                "{op}: FP8 scales go with the FP8 GEMV ({} weights here)",
                self.weights
            )));
        }
        if segs.is_empty() || segs.len() > MAX_SEGMENTS {
            return Err(PluginError::new(format!(
                "{op}: the GEMV takes 1 to {MAX_SEGMENTS} weights, got {}",
                segs.len()
            )));
        }
        if bias.is_some() && segs.len() != 1 {
            return Err(PluginError::new(format!("{op}: a GEMV bias needs a single weight")));
        }
        check_epilogue(op, &epilogue, segs, bias.is_some())?;
        if let Some(ks) = k_slices.filter(|ks| ![1, 2, 4, 8].contains(ks)) {
            return Err(PluginError::new(format!("{op}: K slices must be 1, 2, 4 or 8, got {ks}")));
        }
        let bias_f32 = match bias {
            Some(b) if b.dtype == DType::F32 => true,
            Some(b) if b.dtype == self.dtype => false,
            Some(b) => {
                return Err(PluginError::new(format!("{op}: bias must be {} or f32, got {}", self.dtype, b.dtype)))
            }
            None => false,
        };
        let rows: usize = segs.iter().map(|s| s.n).sum();
        to_i32(op, "N (all weights)", rows)?;
        to_i32(op, "K", k)?;
        if rows == 0 {
            return Ok(());
        }
        let elems = 16 / self.weights.block_bytes().max(1);
        let vec = k % elems == 0 && aligned16(std::iter::once(x).chain(segs.iter().map(|s| s.w)));
        let tile = m.min(MAX_ROWS);
        let mut sp = split(tile, rows, k, self.weights, vec, self.sms);
        if let Some(ks) = k_slices {
            sp = Split { k_slices: ks, blocks: blocks(rows, ks), vec };
        }
        let which = MAXM.iter().position(|&c| tile <= c).unwrap_or(MAXM.len() - 1);
        let f = self.fns[which];
        let seg = |i: usize| segs.get(i).copied().unwrap_or(Segment { w: 0, y: 0, n: 0 });
        let mut args = KernelArgs::new().u64(x);
        for i in 0..MAX_SEGMENTS {
            args = args.u64(seg(i).w);
        }
        for i in 0..MAX_SEGMENTS {
            args = args.u64(seg(i).y);
        }
        args = args.u64(bias.map_or(0, |b| b.ptr)).i32(bias_f32 as i32).i32(m as i32).i32(k as i32);
        for i in 0..MAX_SEGMENTS {
            args = args.i32(seg(i).n as i32);
        }
        args = args.i32(sp.k_slices as i32).i32(sp.vec as i32);
        args = match epilogue {
            Epilogue::Plain => {
                args.i32(0).u64(0).i32(0).i32(0).i32(0).i32(0).f32(0.0).f32(1.0).f32(1.0).f32(1.0).f32(1.0)
            }
            Epilogue::Gated => {
                args.i32(1).u64(0).i32(0).i32(0).i32(0).i32(0).f32(0.0).f32(1.0).f32(1.0).f32(1.0).f32(1.0)
            }
            Epilogue::Rope(r) => {
                let (kind, factor, low, high, old) = r.scaling;
                args.i32(2)
                    .u64(r.positions)
                    .i32(r.head_dim as i32)
                    .i32(r.rotary_dim as i32)
                    .i32(r.interleaved as i32)
                    .i32(kind)
                    .f32(r.theta)
                    .f32(factor)
                    .f32(low)
                    .f32(high)
                    .f32(old)
            }
        };
        let sc = fp8.unwrap_or_default();
        args = args.u64(sc.sx);
        for i in 0..MAX_SEGMENTS {
            args = args.u64(sc.ws[i]);
        }
        args = args.i32((0..MAX_SEGMENTS).filter(|&i| sc.per_row[i]).fold(0, |a, i| a | (1 << i)));
        let mut dims = Dims::linear(grid_dim(op, "rows", sp.blocks, MAX_GRID_X)?, (WARPS * 32) as u32);
        dims.grid.1 = grid_dim(op, "row tiles", m.div_ceil(MAXM[which]), MAX_GRID_YZ)?;
        // SAFETY: the caller guarantees the tensors; the arguments follow gemv.cu's entry points
        // (x, w0..w3, y0..y3, bias, bias_f32, m, k, n0..n3, ks, vec, mode, positions, head_dim,
        // rotary_dim, interleaved, scaling, theta, factor, low, high, old, sx, ws0..ws3,
        // per_row), unused segments have n = 0 so their null pointers are never read; the float
        // kernels get null scales, the FP8 ones the caller's.
        unsafe { runtime::launch(f, dims, stream, &args) }
    }
}

/// Checks an epilogue against the segments it applies to.
fn check_epilogue(op: &str, epilogue: &Epilogue, segs: &[Segment], bias: bool) -> Result<(), PluginError> {
    let ns = || segs.iter().map(|s| s.n).collect::<Vec<_>>();
    match epilogue {
        Epilogue::Plain => Ok(()),
        Epilogue::Gated if segs.len() == 2 && segs[0].n == segs[1].n && !bias => Ok(()),
        Epilogue::Gated => Err(PluginError::new(format!(
            "{op}: a gated GEMV takes two weights of the same number of rows (gate, up) and no bias, got {:?}",
            ns()
        ))),
        Epilogue::Rope(r) => {
            let d = r.head_dim;
            let heads_ok = d > 0 && segs.len() == 3 && segs.iter().all(|s| s.n % d == 0);
            if !heads_ok || bias || d % 2 != 0 || r.rotary_dim % 2 != 0 || r.rotary_dim > d || r.rotary_dim == 0 {
                return Err(PluginError::new(format!(
                    "{op}: a GEMV with rope takes q, k, v weights of whole heads of an even head_dim, no bias, and \
                     an even rotary_dim in 2..=head_dim; got rows {:?}, head_dim {d}, rotary_dim {}",
                    ns(),
                    r.rotary_dim
                )));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_machine_without_starving_lanes() {
        // lm head: plenty of rows, whole rows per warp.
        let s = split(1, 128_256, 2048, DType::BF16, true, 132);
        assert_eq!((s.k_slices, s.blocks), (1, 128_256 / 2 / 8));
        // q/k/v fused (3072 rows): two slices for one token, four for three.
        let s = split(1, 3072, 2048, DType::BF16, true, 132);
        assert_eq!((s.k_slices, s.blocks), (2, 384));
        assert_eq!(split(3, 3072, 2048, DType::BF16, true, 132).k_slices, 4);
        // q/o: two slices for one token, four for two.
        assert_eq!(split(1, 2048, 2048, DType::BF16, true, 132).k_slices, 2);
        assert_eq!(split(2, 2048, 2048, DType::BF16, true, 132).k_slices, 4);
        // k/v alone: eight.
        assert_eq!(split(1, 512, 2048, DType::BF16, true, 132).k_slices, 8);
        // gate + up: one.
        assert_eq!(split(1, 16_384, 2048, DType::BF16, true, 132).k_slices, 1);
        // Rows are never split below one chunk (or element) per lane.
        let s = split(1, 64, 100, DType::F32, false, 132);
        assert_eq!((s.k_slices, s.blocks), (2, 8));
        assert_eq!(split(1, 7, 64 * 8, DType::F16, true, 132).k_slices, 2);
        assert_eq!(split(1, 7, 63 * 8, DType::F16, true, 132).k_slices, 1);
        // A tuned target: 24 warps per SM split the down projection (K 8192) four ways.
        assert_eq!(split_with(1, 2048, 8192, DType::BF16, true, 132, Some(24)).k_slices, 4);
        // Odd row counts round up to whole blocks.
        let s = split(1, 13, 96, DType::F16, false, 132);
        assert_eq!(s.blocks, 7usize.div_ceil(WARPS / s.k_slices));
    }

    #[test]
    fn gemv_or_cublaslt() {
        for (m, rows, k) in [(1, 128_256, 2048), (2, 16_384, 2048), (8, 512, 2048), (4, 2048, 2048), (4, 3072, 2048)] {
            assert!(preferred(m, rows, k), "GEMV for m={m} rows={rows} k={k}");
        }
        for (m, rows, k) in [(0, 64, 64), (9, 8, 8), (3, 16_384, 2048), (8, 2048, 2048), (4, 2048, 8192)] {
            assert!(!preferred(m, rows, k), "cuBLASLt for m={m} rows={rows} k={k}");
        }
    }

    #[test]
    fn alignment_check() {
        assert!(aligned16([0x1000, 0x7f00_0000_0010]));
        assert!(!aligned16([0x1000, 0x1008]));
    }
}
