//! CUDA provider of `swiglu_matmul`: y[T, N] = silu(x · w_gateᵀ) ⊙ (x · w_upᵀ), the gated MLP's
//! first half in one op (one dtype, f32/bf16/f16, no bias). For decode-sized T it is ONE GEMV
//! launch in gated mode (kernels/cuda/gemv.cu: a warp owns gate row i and up row i, and the
//! epilogue writes silu(g)·u, so gate and up never reach memory); otherwise, in chunks of at most
//! [`CHUNK_ROWS`] tokens, two cuBLASLt matmuls into the workspace and the `silu_mul` kernel.
//! Gate and up are rounded to the dtype before silu on both paths, as the unfused
//! `grouped_matmul` + `silu_mul` graph rounds them.

use crate::blaslt::{self, WORKSPACE_BYTES};
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, to_i32};
use crate::elementwise::{self, launch_silu_mul};
use crate::gemv::{self, Gemv, Segment};
use crate::grouped_matmul::blaslt_segments;
use crate::runtime::Function;
use rtllm_plugin_api::shapes::matmul::{infer_swiglu_matmul, swiglu_launch_dims};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Dim, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// Tokens per cuBLASLt chunk: the workspace holds gate and up for this many rows.
pub const CHUNK_ROWS: usize = 1024;

/// Provider of `swiglu_matmul` on CUDA.
pub struct SwigluMatmul;

/// A CUDA `swiglu_matmul` instance.
pub struct SwigluMatmulKernel {
    dtype: DType,
    gemv: Gemv,
    silu_mul: Function,
}

impl Op for SwigluMatmul {
    const NAME: &'static str = "swiglu_matmul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "silu(x·w_gateᵀ) ⊙ (x·w_upᵀ) for x [T, K], w_gate and w_up [N, K] (no bias), one \
                                   dtype (bf16/f16/f32); one gated GEMV launch for decode-sized T";
    type Kernel = SwigluMatmulKernel;

    fn dtypes() -> Vec<DType> {
        DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![infer_swiglu_matmul(inputs, &DTYPES)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<SwigluMatmulKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        if inputs[0].dims[1] == Dim::Known(0) {
            return Err(PluginError::new(format!("swiglu_matmul: K must be positive, got x {}", inputs[0])));
        }
        let dtype = inputs[0].dtype;
        blaslt::handle()?;
        Ok(SwigluMatmulKernel {
            dtype,
            gemv: Gemv::new(Self::NAME, dtype)?,
            silu_mul: elementwise::function(Self::NAME, "silu_mul", dtype)?,
        })
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, N): decode GEMVs (one token, a few, odd K), and cuBLASLt shapes.
        let cases: [(usize, usize, usize, DType); 8] = [
            (1, 2048, 8192, DType::BF16),
            (2, 2048, 8192, DType::BF16),
            (1, 64, 16, DType::F16),
            (3, 96, 37, DType::F32),
            (8, 577, 130, DType::F16),
            (37, 256, 96, DType::BF16),
            (37, 130, 64, DType::F32),
            (64, 512, 1024, DType::F16),
        ];
        cases
            .iter()
            .map(|&(t, k, n, d)| OpExample {
                inputs: vec![TensorMeta::of(d, &[t, k]), TensorMeta::of(d, &[n, k]), TensorMeta::of(d, &[n, k])].into(),
                attrs: Attrs::new(),
            })
            .collect()
    }
}

/// Bytes of one chunk's gate (or up) block, 256-byte aligned.
fn chunk_bytes(rows: usize, n: usize, dtype: DType) -> usize {
    (rows * n * dtype.block_bytes()).next_multiple_of(256)
}

impl Kernel for SwigluMatmulKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let shape = |i: usize| inputs.get(i).and_then(|m| m.shape());
        let (Some(x), Some(w)) = (shape(0), shape(1)) else {
            return Err(PluginError::new("swiglu_matmul: the workspace needs concrete x and w_gate shapes"));
        };
        let (t, n) = (x.first().copied().unwrap_or(0), w.first().copied().unwrap_or(0));
        // Sized for the largest chunk; the GEMV path of small T uses none of it.
        Ok(WORKSPACE_BYTES + 2 * chunk_bytes(t.min(CHUNK_ROWS), n, self.dtype))
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = SwigluMatmul::NAME;
        check_ctx(OP, ctx)?;
        let (t, k, n) = swiglu_launch_dims(inputs, outputs)?;
        to_i32(OP, "T·N", t.saturating_mul(n))?;
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let wg = device_ptr(OP, "w_gate", &inputs[1], self.dtype)?;
        let wu = device_ptr(OP, "w_up", &inputs[2], self.dtype)?;
        let y = device_ptr_mut(OP, "y", &mut outputs[0], self.dtype)?;
        if t == 0 || n == 0 {
            return Ok(());
        }
        if gemv::preferred(t, 2 * n, k) {
            let segs = [Segment { w: wg, y, n }, Segment { w: wu, y: 0, n }];
            let p = gemv::Problem { x, m: t, k, segs: &segs, bias: None, epilogue: gemv::Epilogue::Gated, fp8: None };
            // SAFETY: checked device tensors x [t, k], w_gate/w_up [n, k], y [t, n] of the
            // dtype given at create, on the host's stream.
            return unsafe { self.gemv.launch(OP, ctx.stream(), &p) };
        }
        let e = self.dtype.block_bytes();
        let rows = t.min(CHUNK_ROWS);
        let half = chunk_bytes(rows, n, self.dtype);
        let workspace = ctx.device_workspace(WORKSPACE_BYTES + 2 * half).map_err(|e| e.context(OP))?;
        // Workspace: [cuBLASLt | gate chunk | up chunk].
        let gate = workspace + WORKSPACE_BYTES as u64;
        let up = gate + half as u64;
        for r0 in (0..t).step_by(CHUNK_ROWS) {
            let c = (t - r0).min(CHUNK_ROWS);
            let xc = x + (r0 * k * e) as u64;
            let segs = [Segment { w: wg, y: gate, n }, Segment { w: wu, y: up, n }];
            // SAFETY: x rows [r0, r0 + c) and the chunk buffers in the workspace (checked above)
            // are device memory of the dtype; the cuBLASLt part is the workspace's first
            // WORKSPACE_BYTES; everything is ordered on the host's stream.
            unsafe {
                blaslt_segments(
                    OP,
                    self.dtype,
                    workspace as usize as *mut u8,
                    WORKSPACE_BYTES,
                    ctx.stream(),
                    xc,
                    c,
                    k,
                    &segs,
                )?;
                let yc = y + (r0 * n * e) as u64;
                launch_silu_mul(OP, self.silu_mul, self.dtype, gate, up, yc, c, n, n, ctx.stream())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_cover_both_paths_and_infer() {
        let ex = SwigluMatmul::examples();
        let t = |e: &OpExample| e.inputs[0].shape().unwrap()[0];
        let n = |e: &OpExample| e.inputs[1].shape().unwrap()[0];
        let k = |e: &OpExample| e.inputs[0].shape().unwrap()[1];
        assert!(ex.iter().any(|e| gemv::preferred(t(e), 2 * n(e), k(e))), "a GEMV example");
        assert!(ex.iter().any(|e| !gemv::preferred(t(e), 2 * n(e), k(e))), "a cuBLASLt example");
        for e in &ex {
            let out = SwigluMatmul::infer(&e.inputs, &e.attrs).unwrap();
            assert_eq!(out[0], TensorMeta::of(e.inputs[0].dtype, &[t(e), n(e)]));
        }
    }

    #[test]
    fn chunks_are_aligned() {
        assert_eq!(chunk_bytes(1, 1, DType::BF16), 256);
        assert_eq!(chunk_bytes(1024, 8192, DType::BF16), 1024 * 8192 * 2);
    }
}
