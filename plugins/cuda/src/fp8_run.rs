//! The launch sequence shared by `fp8_matmul` and `fp8_grouped_matmul` (1 to 4 FP8 weights
//! sharing x): x quantized once on the device (fp8_quant), then
//! - decode-sized T (`gemv::preferred` over all weights' rows): one FP8 GEMV launch for every
//!   weight, both scales and the bias applied per output;
//! - otherwise cuBLASLt's FP8 GEMM per weight (blaslt_fp8.rs): per-tensor static scales go to its
//!   A/B scale pointers and D is y; per-channel weight or per-token activation scales leave D the
//!   unscaled bf16 sum (y itself for bf16 y, a workspace buffer for f16, whose range the raw
//!   sum could exceed) and fp8_rescale applies the outer product s_x[t] · w_scale[n] and the
//!   bias;
//! - shapes cuBLASLt's FP8 GEMM does not take (K or N not a multiple of 16, misaligned
//!   tensors, no algorithm) run the GEMV in tiles of 8 rows: correct for any shape, slower.

use crate::blaslt::{self, WORKSPACE_BYTES};
use crate::blaslt_fp8::{self, Fp8Operands, Fp8PlanKey};
use crate::fp8_kernels::{Bias, Fp8Kernels, Scale, Segment};
use crate::gemv;
use crate::runtime;
use rtllm_plugin_api::{DType, LaunchContext, PluginError};

/// Byte offsets into the device workspace of one launch (each region 256-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceLayout {
    /// Quantized activations: T·K codes, or T·K bf16 values for the GEMV.
    pub xq: usize,
    /// Row scales, T floats.
    pub sx: usize,
    /// The unscaled bf16 GEMM output for f16 y (T·N), else empty.
    pub d: usize,
    /// cuBLASLt's workspace.
    pub blas: usize,
    pub total: usize,
}

fn round_up(v: usize) -> Option<usize> {
    v.checked_add(255).map(|v| v & !255)
}

/// The workspace regions for T, K, N and y's dtype; `None` when the sizes overflow.
pub fn workspace_layout(t: usize, k: usize, n: usize, y: DType) -> Option<WorkspaceLayout> {
    let xq_bytes = round_up(t.checked_mul(k)?.checked_mul(2)?)?;
    let sx = xq_bytes;
    let d = sx.checked_add(round_up(t.checked_mul(4)?)?)?;
    let d_bytes = if y == DType::F16 { round_up(t.checked_mul(n)?.checked_mul(2)?)? } else { 0 };
    let blas = d.checked_add(d_bytes)?;
    Some(WorkspaceLayout { xq: 0, sx, d, blas, total: blas.checked_add(WORKSPACE_BYTES)? })
}

/// One launch: x [t, k] of `dtype` against `segs` (one output each), the static input scale
/// (f32 [1]) or the dynamic cap, a bias (one segment only).
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
}

/// Enqueues `call` on the context's stream with its device workspace (sized by
/// [`workspace_layout`] for the largest segment).
///
/// # Safety
/// Every pointer of `call` must be a device tensor of the shape and dtype it names, outputs not
/// aliasing inputs.
pub unsafe fn run(kernels: &Fp8Kernels, ctx: &LaunchContext<'_>, call: &Fp8Call<'_>) -> Result<(), PluginError> {
    let Fp8Call { op, dtype, x, t, k, input_scale, ub, segs, bias } = *call;
    let err = |m: String| PluginError::new(format!("{op}: {m}"));
    let rows: usize = segs.iter().map(|s| s.n).sum();
    let n_max = segs.iter().map(|s| s.n).max().unwrap_or(0);
    if t == 0 || rows == 0 {
        return Ok(());
    }
    let lay = workspace_layout(t, k, n_max, dtype).ok_or_else(|| err(format!("workspace for T={t} overflows")))?;
    let base = ctx.device_workspace(lay.total)?;
    let (xq, sx) = (base + lay.xq as u64, base + lay.sx as u64);
    let stream = ctx.stream();
    let d_of = |s: &Segment, scaled: bool| if scaled || dtype == DType::BF16 { s.y } else { base + lay.d as u64 };
    let scaled_of = |s: &Segment| input_scale.is_some() && !s.ws.per_index;
    let mut plans = Vec::with_capacity(segs.len());
    if !gemv::preferred(t, rows, k) {
        let context = runtime::current_context()? as usize;
        for s in segs {
            let scaled = scaled_of(s);
            if !blaslt_fp8::fits(k, s.n, &[s.w, s.y, d_of(s, scaled)]) {
                break;
            }
            let out = if scaled { dtype } else { DType::BF16 };
            match blaslt_fp8::plan(Fp8PlanKey { context, t, k, n: s.n, out, scaled })? {
                Some(p) => plans.push(p),
                None => break,
            }
        }
    }
    if plans.len() != segs.len() {
        // SAFETY: the caller's tensors; xq (t·k bf16) and sx (t floats) are disjoint regions of
        // this launch's workspace.
        return unsafe {
            kernels.quantize(op, stream, x, xq, sx, input_scale, (t, k), ub, true)?;
            kernels.gemv(op, stream, (xq, sx), segs, bias, (t, k))
        };
    }
    // SAFETY: as above; the quantizer writes t·k codes at xq, read by the GEMMs after it on the
    // same stream.
    unsafe { kernels.quantize(op, stream, x, xq, sx, input_scale, (t, k), ub, false)? };
    for (s, plan) in segs.iter().zip(plans) {
        let scaled = scaled_of(s);
        let d = d_of(s, scaled);
        let ops = Fp8Operands {
            w: s.w,
            xq,
            d,
            w_scale: s.ws.ptr,
            x_scale: input_scale.unwrap_or(0),
            workspace: base + lay.blas as u64,
            workspace_bytes: WORKSPACE_BYTES,
            stream,
        };
        // SAFETY: d is y or the workspace's bf16 [t, n] region (reused by the next segment only
        // after this one's rescale, in stream order).
        unsafe {
            let plan = plan.lock().map_err(|_| err("plan poisoned".into()))?;
            plan.run(blaslt::handle()?, &ops)?;
        }
        if scaled && bias.is_none() {
            continue;
        }
        let (sx_s, ws_s) =
            if scaled { (None, None) } else { (Some(Scale { ptr: sx, per_index: input_scale.is_none() }), Some(s.ws)) };
        // SAFETY: d holds the GEMM's [t, n] output (bf16 unless scaled; or y itself, rescaled in
        // place element by element), sx [t], ws [1] or [n], bias [n]; ordered after the GEMM.
        unsafe { kernels.rescale(op, stream, (d, !scaled), s.y, sx_s, ws_s, bias, (t, s.n))? };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_regions_are_disjoint_and_aligned() {
        let l = workspace_layout(33, 577, 130, DType::F16).unwrap();
        assert_eq!(l.sx, round_up(33 * 577 * 2).unwrap());
        assert!(l.d >= l.sx + 33 * 4 && l.blas >= l.d + 33 * 130 * 2);
        assert_eq!(l.total, l.blas + WORKSPACE_BYTES);
        for off in [l.sx, l.d, l.blas] {
            assert_eq!(off % 256, 0);
        }
        let b = workspace_layout(33, 577, 130, DType::BF16).unwrap();
        assert_eq!(b.blas, b.d, "bf16 y needs no separate GEMM output");
        assert!(workspace_layout(usize::MAX / 2, 4, 4, DType::BF16).is_none());
    }
}
