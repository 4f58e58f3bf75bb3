//! CUDA provider of `grouped_matmul`: y_i[T, N_i] = x[T, K] · w_i[N_i, K]ᵀ for 2 to 4 weights
//! sharing x (q/k/v, gate/up), no bias, one dtype (f32, bf16 or f16) for all. For decode-sized
//! T (`gemv::preferred`: 1 or 2 rows, up to `gemv::MAX_ROWS` for small weights) it is ONE launch
//! of the GEMV over all weights, so x is read once and the small projections fill the GPU
//! together; otherwise one cuBLASLt matmul per weight on the stream. Shapes and dtypes are checked by plugin-api's `shapes::matmul`.

use crate::blaslt::{self, Operands, PlanKey, WORKSPACE_BYTES};
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, to_i32};
use crate::gemv::{self, Gemv, Segment};
use crate::runtime;
use rtllm_plugin_api::shapes::matmul::{grouped_launch_dims, infer_grouped_matmul};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Dim, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// Provider of `grouped_matmul` on CUDA.
pub struct GroupedMatmul;

/// A CUDA `grouped_matmul` instance.
pub struct GroupedMatmulKernel {
    dtype: DType,
    gemv: Gemv,
}

impl Op for GroupedMatmul {
    const NAME: &'static str = "grouped_matmul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "y_i = x·w_iᵀ for 2 to 4 weights sharing x [T, K] (no bias), one dtype \
                                   (bf16/f16/f32); one GEMV launch for decode-sized T, else cuBLASLt per weight";
    type Kernel = GroupedMatmulKernel;

    fn dtypes() -> Vec<DType> {
        DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        infer_grouped_matmul(inputs, &DTYPES)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<GroupedMatmulKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        if inputs[0].dims[1] == Dim::Known(0) {
            return Err(PluginError::new(format!("grouped_matmul: K must be positive, got x {}", inputs[0])));
        }
        let dtype = inputs[0].dtype;
        blaslt::handle()?;
        Ok(GroupedMatmulKernel { dtype, gemv: Gemv::new(Self::NAME, dtype)? })
    }

    fn examples() -> Vec<OpExample> {
        let cases: [(usize, usize, &[usize], DType); 11] = [
            (1, 2048, &[2048, 512, 512], DType::BF16),
            (1, 64, &[16, 16, 16, 16], DType::F16),
            (3, 96, &[64, 13], DType::F32),
            (8, 577, &[130, 7, 33], DType::F16),
            (8, 2048, &[1024, 512], DType::BF16),
            (4, 2048, &[4096, 4096], DType::F16),
            (5, 100, &[33, 7], DType::F32),
            (37, 256, &[96, 96], DType::BF16),
            (37, 130, &[64, 32, 16], DType::F32),
            (37, 512, &[256, 64, 64], DType::F16),
            (3, 1030, &[200, 100, 50, 25], DType::BF16),
        ];
        cases
            .iter()
            .map(|&(t, k, ns, d)| {
                let inputs: Vec<TensorMeta> = std::iter::once(TensorMeta::of(d, &[t, k]))
                    .chain(ns.iter().map(|&n| TensorMeta::of(d, &[n, k])))
                    .collect();
                OpExample { inputs: inputs.into(), attrs: Attrs::new() }
            })
            .collect()
    }
}

impl Kernel for GroupedMatmulKernel {
    fn workspace_bytes(&self, _inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        Ok(WORKSPACE_BYTES)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = GroupedMatmul::NAME;
        check_ctx(OP, ctx)?;
        let (t, k, ns, count) = grouped_launch_dims(inputs, outputs)?;
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let mut segs = [Segment { w: 0, y: 0, n: 0 }; gemv::MAX_SEGMENTS];
        for (i, seg) in segs.iter_mut().enumerate().take(count) {
            seg.w = device_ptr(OP, "w", &inputs[i + 1], self.dtype)?;
            seg.y = device_ptr_mut(OP, "y", &mut outputs[i], self.dtype)?;
            seg.n = ns[i];
            to_i32(OP, "T·N", t.saturating_mul(ns[i]))?;
        }
        let segs = &segs[..count];
        if t == 0 {
            return Ok(());
        }
        if gemv::preferred(t, ns.iter().sum(), k) {
            // SAFETY: checked device tensors x [t, k], w_i [n_i, k], y_i [t, n_i] of the dtype
            // given at create, on the host's stream.
            return unsafe {
                self.gemv.launch(
                    OP,
                    ctx.stream(),
                    &gemv::Problem { x, m: t, k, segs, bias: None, epilogue: gemv::Epilogue::Plain, fp8: None },
                )
            };
        }
        // SAFETY: checked device tensors x [t, k], w_i [n_i, k], y_i [t, n_i] of the kernel's
        // dtype, and the host's workspace and stream.
        unsafe { blaslt_segments_in(OP, self.dtype, ctx, x, t, k, segs) }
    }
}

/// [`blaslt_segments`] with the launch's whole workspace and stream.
///
/// # Safety
/// As [`blaslt_segments`] for `x` and the segments.
pub(crate) unsafe fn blaslt_segments_in(
    op: &str,
    dtype: DType,
    ctx: &LaunchContext<'_>,
    x: u64,
    t: usize,
    k: usize,
    segs: &[Segment],
) -> Result<(), PluginError> {
    let workspace = ctx.device_workspace(ctx.workspace_bytes())? as usize as *mut u8;
    // SAFETY: the caller's contract; the workspace is this launch's, `workspace_bytes` long.
    unsafe { blaslt_segments(op, dtype, workspace, ctx.workspace_bytes(), ctx.stream(), x, t, k, segs) }
}

/// y_s = x · W_sᵀ with one cuBLASLt matmul per segment, in order on `stream`, sharing the
/// cuBLASLt workspace.
///
/// # Safety
/// `x` a device tensor [t, k] of `dtype`, each segment's `w` [n, k] and `y` [t, n] of it, the
/// workspace `workspace_bytes` of device memory nothing else uses meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn blaslt_segments(
    op: &str,
    dtype: DType,
    workspace: *mut u8,
    workspace_bytes: usize,
    stream: *mut std::ffi::c_void,
    x: u64,
    t: usize,
    k: usize,
    segs: &[Segment],
) -> Result<(), PluginError> {
    let handle = blaslt::handle()?;
    let context = runtime::current_context()? as usize;
    for s in segs.iter().filter(|s| s.n > 0) {
        let align = [s.w, x, s.y, 0].map(blaslt::alignment);
        let key = PlanKey { context, t, k, n: s.n, dtype, fused_bias: None, align };
        let plan = blaslt::plan(key)?;
        let plan = plan.lock().map_err(|_| PluginError::new(format!("{op}: plan poisoned")))?;
        let ops = Operands { w: s.w, x, y: s.y, bias: None, workspace, workspace_bytes, stream };
        // SAFETY: as the caller guarantees; the matmuls are ordered on one stream, so they share
        // the workspace.
        unsafe { plan.run(handle, &ops)? };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_the_weights_and_examples_cover_both_paths() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let ys = GroupedMatmul::infer(
            &[m(DType::F16, &[2, 8]), m(DType::F16, &[5, 8]), m(DType::F16, &[3, 8])],
            &Attrs::new(),
        );
        assert_eq!(ys.unwrap(), vec![m(DType::F16, &[2, 5]), m(DType::F16, &[2, 3])]);
        let ex = GroupedMatmul::examples();
        for t in [1, 3, 8, 37] {
            assert!(ex.iter().any(|e| e.inputs[0].dims[0] == Dim::Known(t as u64)), "an example with T={t}");
        }
        for e in &ex {
            let outs = GroupedMatmul::infer(&e.inputs, &e.attrs).unwrap();
            assert_eq!(outs.len(), e.inputs.len() - 1);
        }
    }

    #[test]
    fn zero_k_and_bad_counts_are_refused() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let e = GroupedMatmul::create(
            &[m(DType::F16, &[3, 0]), m(DType::F16, &[5, 0]), m(DType::F16, &[5, 0])],
            &Attrs::new(),
        );
        assert!(e.err().unwrap().message().contains("K must be positive"));
        let e = GroupedMatmul::create(&[m(DType::F16, &[3, 4]), m(DType::F16, &[5, 4])], &Attrs::new());
        assert!(e.err().unwrap().message().contains("2 to 4 weights"));
    }
}
