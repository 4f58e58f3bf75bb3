//! CUDA provider of `matmul`: y[T, N] = x[T, K] · w[N, K]ᵀ (+ bias[N]). Decode-sized T (1 or 2
//! rows, up to `gemv::MAX_ROWS` for small weights: `gemv::preferred`) runs the bandwidth-bound
//! GEMV of gemv.rs (bias fused); everything else goes through cuBLASLt (see blaslt.rs for the
//! layout math). x, w and y share one dtype: bf16 or f16 (f32
//! accumulation), or f32 computed in true f32 (CUBLAS_COMPUTE_32F, no TF32) for parity runs.
//! The bias (x's dtype or f32) is fused through the BIAS epilogue when cuBLASLt has an
//! algorithm for it, else added by bias_add_<T>_<B> of kernels/cuda/elementwise.cu. Shapes and
//! dtypes are checked by plugin-api's shared `shapes::matmul`, as the CPU provider does.

use crate::blaslt::{self, Operands, PlanKey, WORKSPACE_BYTES};
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, suffix, to_i32, THREADS};
use crate::elementwise::{stride_blocks, SRC};
use crate::gemv::{self, Gemv, Segment};
use crate::runtime::{self, Dims, Function, KernelArgs};
use rtllm_plugin_api::shapes::matmul::{infer_matmul, launch_dims, same_float, MatmulDtypes};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Dim, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

/// Bias dtypes for an activation dtype: the activation's own, or f32.
fn bias_dtypes(x: DType) -> &'static [DType] {
    match x {
        DType::F32 => &[DType::F32],
        DType::BF16 => &[DType::BF16, DType::F32],
        DType::F16 => &[DType::F16, DType::F32],
        _ => &[],
    }
}

const DTYPES: MatmulDtypes =
    MatmulDtypes { x: &[DType::F32, DType::BF16, DType::F16], w: same_float, bias: bias_dtypes };

/// Bias pointers less aligned than this are added by the bias kernel instead of the epilogue.
const MIN_FUSED_BIAS_ALIGN: u32 = 16;

/// Provider of `matmul` on CUDA.
pub struct Matmul;

/// A CUDA `matmul` instance.
pub struct MatmulKernel {
    dtype: DType,
    bias: Option<(DType, Function)>,
    gemv: Gemv,
}

impl Op for Matmul {
    const NAME: &'static str = "matmul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str =
        "y = x·wᵀ (+ bias) via cuBLASLt; x [T, K], w [N, K] and y of one dtype (bf16/f16, or \
                                   f32 without TF32); bias [N] of x's dtype or f32";
    type Kernel = MatmulKernel;

    fn dtypes() -> Vec<DType> {
        DTYPES.x.to_vec()
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![infer_matmul(inputs, &DTYPES)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<MatmulKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        if inputs[1].dims[1] == Dim::Known(0) {
            return Err(PluginError::new(format!("matmul: K must be positive, got w {}", inputs[1])));
        }
        let dtype = inputs[0].dtype;
        blaslt::handle()?;
        let bias = match inputs.get(2) {
            Some(b) => {
                let name = format!("bias_add_{}_{}", suffix(Self::NAME, dtype)?, suffix(Self::NAME, b.dtype)?);
                Some((b.dtype, runtime::function(&SRC, &name)?))
            }
            None => None,
        };
        Ok(MatmulKernel { dtype, bias, gemv: Gemv::new(Self::NAME, dtype)? })
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, N, dtype, bias dtype). Two tokens against K = 2048 split K four or eight ways:
        // each lane has fewer than a full unroll of chunks (the GEMV's tail path).
        let cases: [(usize, usize, usize, DType, Option<DType>); 17] = [
            (1, 64, 1, DType::F32, None),
            (1, 577, 130, DType::BF16, Some(DType::BF16)),
            (1, 96, 13, DType::F16, None),
            (3, 64, 13, DType::F32, Some(DType::F32)),
            (33, 577, 7, DType::BF16, Some(DType::F32)),
            (4, 96, 130, DType::F16, Some(DType::F16)),
            (1, 2048, 2048, DType::BF16, None),
            (33, 2048, 2048, DType::F16, Some(DType::F16)),
            (1, 2048, 4096, DType::F32, None),
            (33, 2048, 4096, DType::BF16, None),
            (64, 4096, 4096, DType::BF16, Some(DType::BF16)),
            (17, 2048, 1024, DType::F32, Some(DType::F32)),
            (8, 2048, 1024, DType::BF16, Some(DType::F32)),
            (5, 4100, 300, DType::F16, None),
            (2, 1030, 257, DType::F32, Some(DType::F32)),
            (2, 2048, 2048, DType::BF16, None),
            (2, 2048, 512, DType::F16, None),
        ];
        cases
            .iter()
            .map(|&(t, k, n, d, bias)| {
                let mut inputs = vec![TensorMeta::of(d, &[t, k]), TensorMeta::of(d, &[n, k])];
                if let Some(b) = bias {
                    inputs.push(TensorMeta::of(b, &[n]));
                }
                OpExample { inputs: inputs.into(), attrs: Attrs::new() }
            })
            .collect()
    }
}

impl Kernel for MatmulKernel {
    fn workspace_bytes(&self, _inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        Ok(WORKSPACE_BYTES)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = Matmul::NAME;
        check_ctx(OP, ctx)?;
        let (t, k, n) = launch_dims(inputs, outputs)?;
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let w = device_ptr(OP, "w", &inputs[1], self.dtype)?;
        let y = device_ptr_mut(OP, "y", &mut outputs[0], self.dtype)?;
        let bias = match (inputs.get(2), &self.bias) {
            (Some(b), Some((bdt, f))) => Some((device_ptr(OP, "bias", b, *bdt)?, *bdt, *f)),
            (None, None) => None,
            _ => {
                return Err(PluginError::new(format!("{OP}: launch bias does not match the kernel's inputs at create")))
            }
        };
        to_i32(OP, "T·N", t.saturating_mul(n))?;
        if t == 0 || n == 0 {
            return Ok(());
        }
        if gemv::preferred(t, n, k) {
            let seg = [Segment { w, y, n }];
            let bias = bias.map(|(ptr, dtype, _)| gemv::Bias { ptr, dtype });
            // SAFETY: checked device tensors x [t, k], w [n, k], y [t, n], bias [n] of the dtypes
            // given at create, on the host's stream.
            return unsafe {
                self.gemv.launch(
                    OP,
                    ctx.stream(),
                    &gemv::Problem { x, m: t, k, segs: &seg, bias, epilogue: gemv::Epilogue::Plain, fp8: None },
                )
            };
        }
        let align = [w, x, y, bias.map_or(0, |b| b.0)].map(blaslt::alignment);
        let fused_bias = bias.filter(|_| align[3] >= MIN_FUSED_BIAS_ALIGN).map(|b| b.1);
        let key =
            PlanKey { context: runtime::current_context()? as usize, t, k, n, dtype: self.dtype, fused_bias, align };
        let plan = blaslt::plan(key)?;
        let handle = blaslt::handle()?;
        let ops = Operands {
            w,
            x,
            y,
            bias: bias.map(|b| b.0),
            workspace: ctx.device_workspace(ctx.workspace_bytes())? as usize as *mut u8,
            workspace_bytes: ctx.workspace_bytes(),
            stream: ctx.stream(),
        };
        let fused = {
            let plan = plan.lock().map_err(|_| PluginError::new("matmul: plan poisoned"))?;
            // SAFETY: checked device tensors of the plan's shapes/dtypes and the host's workspace.
            unsafe { plan.run(handle, &ops)? };
            plan.fused_bias
        };
        match bias {
            Some((b, _, f)) if !fused => {
                let args = KernelArgs::new().u64(y).u64(b).i32(to_i32(OP, "T", t)?).i32(to_i32(OP, "N", n)?);
                let dims = Dims::linear(stride_blocks(t * n, self.dtype), THREADS);
                // SAFETY: bias_add_<T>_<B>(y, bias, rows, n) over the t·n outputs just written,
                // on the same stream (ordered after the matmul).
                unsafe { runtime::launch(f, dims, ctx.stream(), &args) }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_follow_x() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let y = Matmul::infer(&[m(DType::BF16, &[3, 8]), m(DType::BF16, &[5, 8]), m(DType::F32, &[5])], &Attrs::new());
        assert_eq!(y.unwrap(), vec![m(DType::BF16, &[3, 5])]);
        let e = Matmul::infer(&[m(DType::F32, &[3, 8]), m(DType::BF16, &[5, 8])], &Attrs::new()).unwrap_err();
        assert!(e.message().contains("w must be f32"), "{e}");
        let e = Matmul::infer(&[m(DType::F32, &[3, 8]), m(DType::F32, &[5, 8]), m(DType::BF16, &[5])], &Attrs::new());
        assert!(e.unwrap_err().message().contains("bias must be f32"));
        for ex in Matmul::examples() {
            let (t, k) = (ex.inputs[0].dims[0].known().unwrap(), ex.inputs[0].dims[1].known().unwrap());
            let n = ex.inputs[1].dims[0].known().unwrap();
            assert!(t * k <= 4096 * 4096 && n * k <= 4096 * 4096);
            assert_eq!(Matmul::infer(&ex.inputs, &ex.attrs).unwrap()[0].dtype, ex.inputs[0].dtype);
        }
    }

    #[test]
    fn zero_k_is_refused() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let e = Matmul::create(&[m(DType::F16, &[3, 0]), m(DType::F16, &[5, 0])], &Attrs::new()).err().unwrap();
        assert!(e.message().contains("K must be positive"), "{e}");
    }
}
