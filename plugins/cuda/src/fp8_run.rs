//! The launch sequence shared by the FP8 linear ops (`fp8_matmul`, `fp8_grouped_matmul`,
//! `fp8_qkv_rope_matmul`, `fp8_swiglu_matmul`: 1 to 4 FP8 weights sharing x): x quantized once
//! on the device (fp8_quant), then
//! - decode-sized T (`gemv::preferred` over all weights' rows): one FP8 GEMV launch for every
//!   weight, both scales and the bias applied per output, and the fused op's epilogue (rope on
//!   q and k, or silu(gate) · up) applied before anything reaches memory;
//! - otherwise cuBLASLt's FP8 GEMM per weight (blaslt_fp8.rs): per-tensor static scales go to its
//!   A/B scale pointers and D is y; per-channel weight or per-token activation scales leave D the
//!   unscaled f32 sum in a workspace buffer and fp8_rescale applies the outer product
//!   s_x[t] · w_scale[n] and the bias, rounding once to y's dtype (as vLLM's cutlass_scaled_mm
//!   epilogue does: a bf16 D would round the raw sum first, up to 2^-9 more error); then the rope
//!   kernel on q and k in place, or, for gate/up, the GEMMs write chunks of [`CHUNK_ROWS`] rows
//!   into the workspace and the silu_mul kernel writes y;
//! - shapes cuBLASLt's FP8 GEMM does not take (K or N not a multiple of 16, misaligned
//!   tensors, no algorithm) run the GEMV in tiles of 8 rows, with the same epilogues: correct
//!   for any shape, slower.

use crate::blaslt::{self, WORKSPACE_BYTES};
use crate::blaslt_fp8::{self, Fp8Operands, Fp8PlanKey};
use crate::elementwise::launch_silu_mul;
use crate::fp8_kernels::{Bias, Fp8Kernels, Scale, Segment};
use crate::gemv::{self, Epilogue};
use crate::qkv_rope_matmul::rope_epilogue;
use crate::rope::launch_rope;
use crate::runtime::{self, Function};
use rtllm_plugin_api::shapes::elementwise::RopeAttrs;
use rtllm_plugin_api::{DType, LaunchContext, PluginError};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// Rows of gate/up one cuBLASLt round writes into the workspace before silu_mul (as
/// swiglu_matmul does).
pub const CHUNK_ROWS: usize = 1024;

/// Byte offsets into the device workspace of one launch (each region 256-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLayout {
    /// Quantized activations: T·K codes, or T·K bf16 values for the GEMV.
    pub xq: usize,
    /// Row scales, T floats.
    pub sx: usize,
    /// The unscaled f32 GEMM output (rows·N) of per-channel or per-token segments.
    pub d: usize,
    /// Gate and up chunks of a gated launch (rows·N each, of y's dtype), else empty.
    pub gate: usize,
    pub up: usize,
    /// cuBLASLt's workspace.
    pub blas: usize,
    pub total: usize,
}

fn round_up(v: usize) -> Option<usize> {
    v.checked_add(255).map(|v| v & !255)
}

/// The workspace regions for T, K, the largest N and y's dtype, with gate/up chunk buffers when
/// `gated`; `None` when the sizes overflow.
pub fn workspace_layout(t: usize, k: usize, n: usize, y: DType, gated: bool) -> Option<WorkspaceLayout> {
    let rows = if gated { t.min(CHUNK_ROWS) } else { t };
    let xq_bytes = round_up(t.checked_mul(k)?.checked_mul(2)?)?;
    let sx = xq_bytes;
    let d = sx.checked_add(round_up(t.checked_mul(4)?)?)?;
    let d_bytes = round_up(rows.checked_mul(n)?.checked_mul(4)?)?;
    let gate = d.checked_add(d_bytes)?;
    let chunk = if gated { round_up(rows.checked_mul(n)?.checked_mul(y.block_bytes())?)? } else { 0 };
    let up = gate.checked_add(chunk)?;
    let blas = up.checked_add(chunk)?;
    Some(WorkspaceLayout { xq: 0, sx, d, gate, up, blas, total: blas.checked_add(WORKSPACE_BYTES)? })
}

/// What a launch does after the products (the fused ops).
#[derive(Clone, Copy)]
pub enum Post<'a> {
    /// Each weight's y written as is.
    Plain,
    /// q and k (weights 0 and 1) rotated at `positions` (i32 [T]) with the `rope` kernel's
    /// attributes (`kernel`: the rope kernel of y's dtype).
    Rope { attrs: &'a RopeAttrs, positions: u64, kernel: Function },
    /// Two weights of one N, gate and up: y = silu(gate) · up written to `out` [T, N] (the
    /// segments' y are not used; `kernel`: silu_mul of y's dtype).
    Gated { out: u64, kernel: Function },
}

/// One launch: x [t, k] of `dtype` against `segs` (one output each), the static input scale
/// (f32 [1]) or the dynamic cap, a bias (one segment only), the fused epilogue.
pub struct Fp8Call<'a> {
    pub op: &'static str,
    pub dtype: DType,
    pub x: u64,
    pub t: usize,
    pub k: usize,
    pub input_scale: Option<u64>,
    pub ub: Option<f32>,
    pub segs: &'a [Segment],
    pub bias: Option<Bias>,
    pub post: Post<'a>,
}

type Plan = Arc<Mutex<blaslt_fp8::Fp8Plan>>;

/// The device workspace bytes a call of these sizes needs (for `Kernel::workspace_bytes`).
pub fn workspace_bytes(
    op: &str,
    t: usize,
    k: usize,
    n_max: usize,
    y: DType,
    gated: bool,
) -> Result<usize, PluginError> {
    workspace_layout(t, k, n_max, y, gated)
        .map(|l| l.total)
        .ok_or_else(|| PluginError::new(format!("{op}: workspace for T={t}, K={k}, N={n_max} overflows")))
}

/// Enqueues `call` on the context's stream with its device workspace (sized by
/// [`workspace_layout`] for the largest segment).
///
/// # Safety
/// Every pointer of `call` must be a device tensor of the shape and dtype it names, outputs not
/// aliasing inputs.
pub unsafe fn run(kernels: &Fp8Kernels, ctx: &LaunchContext<'_>, call: &Fp8Call<'_>) -> Result<(), PluginError> {
    let Fp8Call { op, dtype, x, t, k, input_scale, ub, segs, bias, post } = *call;
    let err = |m: String| PluginError::new(format!("{op}: {m}"));
    let rows: usize = segs.iter().map(|s| s.n).sum();
    let n_max = segs.iter().map(|s| s.n).max().unwrap_or(0);
    if t == 0 || rows == 0 {
        return Ok(());
    }
    let gated = matches!(post, Post::Gated { .. });
    if gated && (segs.len() != 2 || segs[0].n != segs[1].n || bias.is_some()) {
        return Err(err("a gated launch takes gate and up of one N and no bias".into()));
    }
    let lay =
        workspace_layout(t, k, n_max, dtype, gated).ok_or_else(|| err(format!("workspace for T={t} overflows")))?;
    let base = ctx.device_workspace(lay.total)?;
    let (xq, sx) = (base + lay.xq as u64, base + lay.sx as u64);
    let stream = ctx.stream();
    let chunk = if gated { CHUNK_ROWS } else { t };
    let plans = if gemv::preferred(t, rows, k) { None } else { gemm_plans(call, base, &lay, chunk)? };
    let Some(plans) = plans else {
        let epilogue = match post {
            Post::Plain => Epilogue::Plain,
            Post::Rope { attrs, positions, .. } => Epilogue::Rope(rope_epilogue(attrs, positions)),
            Post::Gated { .. } => Epilogue::Gated,
        };
        let mut gated_segs = [segs[0], segs[segs.len() - 1]];
        let gsegs = match post {
            Post::Gated { out, .. } => {
                gated_segs[0].y = out;
                &gated_segs[..]
            }
            _ => segs,
        };
        // SAFETY: the caller's tensors; xq (t·k bf16) and sx (t floats) are disjoint regions of
        // this launch's workspace; a gated GEMV writes only the first segment's y (`out`).
        return unsafe {
            kernels.quantize(op, stream, x, xq, sx, input_scale, (t, k), ub, true)?;
            kernels.gemv(op, stream, (xq, sx), gsegs, bias, (t, k), epilogue)
        };
    };
    // SAFETY: as above; the quantizer writes t·k codes at xq, read by the GEMMs after it on the
    // same stream.
    unsafe { kernels.quantize(op, stream, x, xq, sx, input_scale, (t, k), ub, false)? };
    let e = dtype.block_bytes() as u64;
    for r0 in (0..t).step_by(chunk) {
        let c = (t - r0).min(chunk);
        let plan_set = &plans[plan_index(c, chunk, t)];
        let mut rsegs = segs.to_vec();
        if gated {
            rsegs[0].y = base + lay.gate as u64;
            rsegs[1].y = base + lay.up as u64;
        }
        if plan_set.len() != rsegs.len() {
            return Err(err(format!("no cuBLASLt plan for a round of {c} rows")));
        }
        for (s, plan) in rsegs.iter().zip(plan_set) {
            let y = if gated { s.y } else { s.y + (r0 as u64) * (s.n as u64) * e };
            let rows = Rows { xq: xq + (r0 * k) as u64, sx: sx + (r0 * 4) as u64, t: c };
            // SAFETY: rows [r0, r0 + c) of the quantized x and their scales; y is the caller's
            // output rows or a workspace chunk of c·n elements; the plan was made for c rows.
            unsafe { gemm_segment(kernels, call, stream, (base, &lay), rows, (s, y), plan)? };
        }
        // SAFETY: the segments' outputs just written in stream order; q and k are rotated in
        // place (the rope kernel reads each pair before writing it); silu_mul reads the two
        // workspace chunks and writes rows [r0, r0 + c) of out.
        unsafe {
            match post {
                Post::Plain => {}
                Post::Rope { attrs, positions, kernel } => {
                    for s in &rsegs[..2] {
                        launch_rope(op, kernel, attrs, s.y, positions, s.y, t, s.n, stream)?;
                    }
                }
                Post::Gated { out, kernel } => {
                    let n = segs[0].n;
                    let yc = out + (r0 as u64) * (n as u64) * e;
                    launch_silu_mul(op, kernel, dtype, rsegs[0].y, rsegs[1].y, yc, c, n, n, stream)?;
                }
            }
        }
    }
    Ok(())
}

/// Which of [`gemm_plans`]' two sets a round of `c` rows (of `t`, in rounds of `chunk`) uses:
/// 0 for full rounds of `chunk.min(t)` rows, 1 for a shorter last one. (A gated launch of fewer
/// than `chunk` rows is one full round: taking set 1 there, which is empty, ran no GEMM.)
fn plan_index(c: usize, chunk: usize, t: usize) -> usize {
    usize::from(c != chunk.min(t))
}

/// Rows of the quantized activations one GEMM reads.
#[derive(Clone, Copy)]
struct Rows {
    xq: u64,
    sx: u64,
    t: usize,
}

/// Whether a segment's GEMM applies both scales itself (per-tensor weight, static input).
fn scaled_of(call: &Fp8Call<'_>, s: &Segment) -> bool {
    call.input_scale.is_some() && !s.ws.per_index
}

/// Where a segment's GEMM writes: y itself when it applies the scales, else the workspace's f32
/// buffer.
fn d_of(base: u64, lay: &WorkspaceLayout, y: u64, scaled: bool) -> u64 {
    if scaled {
        y
    } else {
        base + lay.d as u64
    }
}

/// cuBLASLt plans for every segment at `chunk` rows and, when T is not a multiple of it, at the
/// remainder (`[full, remainder]`); `None` when one is missing or a segment does not fit (the
/// GEMV fallback takes the whole call then).
fn gemm_plans(
    call: &Fp8Call<'_>,
    base: u64,
    lay: &WorkspaceLayout,
    chunk: usize,
) -> Result<Option<[Vec<Plan>; 2]>, PluginError> {
    let context = runtime::current_context()? as usize;
    let rest = call.t % chunk;
    let mut out: [Vec<Plan>; 2] = [Vec::new(), Vec::new()];
    for (i, rows) in [chunk.min(call.t), rest].into_iter().enumerate() {
        if i == 1 && (rest == 0 || call.t < chunk) {
            break;
        }
        for s in call.segs {
            let scaled = scaled_of(call, s);
            if !blaslt_fp8::fits(call.k, s.n, &[s.w, s.y, d_of(base, lay, s.y, scaled)]) {
                return Ok(None);
            }
            let out_dtype = if scaled { call.dtype } else { DType::F32 };
            let key = Fp8PlanKey { context, t: rows, k: call.k, n: s.n, out: out_dtype, scaled };
            match blaslt_fp8::plan(key)? {
                Some(p) => out[i].push(p),
                None => return Ok(None),
            }
        }
    }
    Ok(Some(out))
}

/// One segment's cuBLASLt GEMM over `rows`, then its rescale (and bias) unless the GEMM applied
/// the scales itself.
///
/// # Safety
/// As [`run`]; `y` holds rows.t · s.n elements of y's dtype.
unsafe fn gemm_segment(
    kernels: &Fp8Kernels,
    call: &Fp8Call<'_>,
    stream: *mut c_void,
    (base, lay): (u64, &WorkspaceLayout),
    rows: Rows,
    (s, y): (&Segment, u64),
    plan: &Plan,
) -> Result<(), PluginError> {
    let op = call.op;
    let scaled = scaled_of(call, s);
    let d = d_of(base, lay, y, scaled);
    let ops = Fp8Operands {
        w: s.w,
        xq: rows.xq,
        d,
        w_scale: s.ws.ptr,
        x_scale: call.input_scale.unwrap_or(0),
        workspace: base + lay.blas as u64,
        workspace_bytes: WORKSPACE_BYTES,
        stream,
    };
    // SAFETY: d is y or the workspace's f32 [t, n] region (reused by the next segment only after
    // this one's rescale, in stream order).
    unsafe {
        let plan = plan.lock().map_err(|_| PluginError::new(format!("{op}: plan poisoned")))?;
        plan.run(blaslt::handle()?, &ops)?;
    }
    if scaled && call.bias.is_none() {
        return Ok(());
    }
    let (sx_s, ws_s) = if scaled {
        (None, None)
    } else {
        (Some(Scale { ptr: rows.sx, per_index: call.input_scale.is_none() }), Some(s.ws))
    };
    // SAFETY: d holds the GEMM's [t, n] output (f32 unless scaled; or y itself, rescaled in
    // place element by element), sx [t], ws [1] or [n], bias [n]; ordered after the GEMM.
    unsafe { kernels.rescale(op, stream, (d, !scaled), y, sx_s, ws_s, call.bias, (rows.t, s.n)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_regions_are_disjoint_and_aligned() {
        let l = workspace_layout(33, 577, 130, DType::F16, false).unwrap();
        assert_eq!(l.sx, round_up(33 * 577 * 2).unwrap());
        assert!(l.d >= l.sx + 33 * 4 && l.blas >= l.d + 33 * 130 * 4, "an f32 GEMM output");
        assert_eq!((l.gate, l.up), (l.blas, l.blas), "no gate/up chunks unless gated");
        assert_eq!(l.total, l.blas + WORKSPACE_BYTES);
        for off in [l.sx, l.d, l.blas] {
            assert_eq!(off % 256, 0);
        }
        let b = workspace_layout(33, 577, 130, DType::BF16, false).unwrap();
        assert_eq!(b.blas - b.d, round_up(33 * 130 * 4).unwrap(), "bf16 y: the same f32 GEMM output");
        assert!(workspace_layout(usize::MAX / 2, 4, 4, DType::BF16, false).is_none());
    }

    #[test]
    fn every_round_takes_a_plan_set_that_was_built() {
        // (t, chunk): gated launches round in CHUNK_ROWS, others take t rows at once.
        for (t, chunk) in
            [(64, CHUNK_ROWS), (1, CHUNK_ROWS), (1024, CHUNK_ROWS), (2048, CHUNK_ROWS), (1100, CHUNK_ROWS), (37, 37)]
        {
            let has_rest = t % chunk != 0 && t >= chunk;
            for r0 in (0..t).step_by(chunk) {
                let c = (t - r0).min(chunk);
                let i = plan_index(c, chunk, t);
                assert!(i == 0 || has_rest, "t {t}: a round of {c} rows takes set {i}, which gemm_plans did not build");
                assert_eq!(i == 1, c != chunk.min(t));
            }
        }
    }

    #[test]
    fn gated_launches_hold_one_chunk_of_gate_and_up() {
        let l = workspace_layout(5000, 4096, 14336, DType::BF16, true).unwrap();
        let chunk = CHUNK_ROWS * 14336 * 2;
        assert_eq!(l.gate - l.d, CHUNK_ROWS * 14336 * 4, "one chunk's f32 GEMM output");
        assert_eq!(l.up - l.gate, chunk);
        assert_eq!(l.blas - l.up, chunk);
        let small = workspace_layout(3, 64, 32, DType::F16, true).unwrap();
        assert_eq!(small.up - small.gate, round_up(3 * 32 * 2).unwrap());
        assert!(small.gate >= small.d + 3 * 32 * 4);
    }
}
