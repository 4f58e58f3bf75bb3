//! CUDA provider of `fp8_matmul` (contract: plugin-api `shapes::fp8`, docs/quantization.md):
//! x [T, K] bf16/f16, w [N, K] E4M3 with a per-tensor or per-channel f32 scale, static or
//! dynamic per-token activations, optional bias (x's dtype or f32), y in x's dtype.
//!
//! The launch sequence (device quantizer, FP8 GEMV for decode, cuBLASLt FP8 GEMM with its
//! scale pointers or the outer-product rescale, the GEMV fallback) is fp8_run.rs's.

use crate::blaslt;
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut};
use crate::fp8_kernels::{Bias, Fp8Kernels, Scale, Segment};
use crate::fp8_run::{self, Fp8Call, Post};
#[cfg(test)]
use crate::{blaslt_fp8, gemv};
use rtllm_plugin_api::shapes::fp8::{infer_fp8_matmul, Fp8Activation, Fp8MatmulInputs};
use rtllm_plugin_api::shapes::shape_of_rank;
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

const OP: &str = "fp8_matmul";
const X_DTYPES: [DType; 2] = [DType::BF16, DType::F16];

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP}: {msg}"))
}

/// Provider of `fp8_matmul` on CUDA.
pub struct Fp8Matmul;

/// A CUDA `fp8_matmul` instance.
pub struct Fp8MatmulKernel {
    dtype: DType,
    at: Fp8MatmulInputs,
    kernels: Fp8Kernels,
}

impl Op for Fp8Matmul {
    const NAME: &'static str = OP;
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "y = (e4m3(x/s_x)·wᵀ)·s_x·w_scale (+ bias); x bf16/f16, w f8_e4m3 per-tensor or \
                                   per-channel scale, static or dynamic per-token activations; FP8 GEMV for decode, \
                                   cuBLASLt FP8 E4M3 GEMM otherwise";
    type Kernel = Fp8MatmulKernel;

    fn dtypes() -> Vec<DType> {
        // f32: the scales (and an f32 bias); x itself must be bf16 or f16 (`infer`).
        vec![DType::BF16, DType::F16, DType::F8_E4M3, DType::F32]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![infer_fp8_matmul(inputs, attrs, &X_DTYPES)?.0])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8MatmulKernel, PluginError> {
        let (_, at) = infer_fp8_matmul(inputs, attrs, &X_DTYPES)?;
        if inputs[1].dims[1].known() == Some(0) {
            return Err(err(format!("K must be positive, got w {}", inputs[1])));
        }
        let dtype = inputs[0].dtype;
        blaslt::handle()?;
        Ok(Fp8MatmulKernel { dtype, at, kernels: Fp8Kernels::new(OP, dtype)? })
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, N, per-channel weight scale, activation, bias dtype, x dtype): decode rows 1..8
        // on the GEMV (vector and scalar K), large T on cuBLASLt (per-tensor static through its
        // scale pointers, the rest through the rescale), odd K / N on the tiled GEMV fallback.
        let dynamic = Fp8Activation::Dynamic { upper_bound: None };
        let capped = Fp8Activation::Dynamic { upper_bound: Some(0.5) };
        let st = Fp8Activation::Static;
        let (b, h, f) = (DType::BF16, DType::F16, DType::F32);
        let cases: [(usize, usize, usize, bool, Fp8Activation, Option<DType>, DType); 16] = [
            (1, 64, 13, false, st, None, b),
            (1, 2048, 512, true, dynamic, Some(b), b),
            (2, 96, 130, true, st, Some(f), h),
            (3, 577, 7, true, dynamic, None, b),
            (4, 1024, 256, false, capped, Some(h), h),
            (5, 2048, 1024, true, st, None, b),
            (7, 4096, 64, true, dynamic, Some(f), b),
            (8, 2048, 2048, false, dynamic, None, h),
            (33, 2048, 1024, false, st, None, b),
            (33, 2048, 1024, false, st, Some(h), h),
            (64, 1024, 512, true, st, None, b),
            (128, 4096, 1024, true, dynamic, Some(f), b),
            (96, 1024, 2048, false, capped, None, h),
            (17, 577, 130, true, dynamic, Some(b), b),
            (40, 96, 13, false, st, None, h),
            (300, 256, 1000, true, dynamic, None, b),
        ];
        cases
            .iter()
            .map(|&(t, k, n, per_channel, act, bias, x)| {
                let mut inputs = vec![
                    TensorMeta::of(x, &[t, k]),
                    TensorMeta::of(DType::F8_E4M3, &[n, k]),
                    TensorMeta::of(DType::F32, &[if per_channel { n } else { 1 }]),
                ];
                if act == Fp8Activation::Static {
                    inputs.push(TensorMeta::of(DType::F32, &[1]));
                }
                if let Some(bd) = bias {
                    inputs.push(TensorMeta::of(bd, &[n]));
                }
                OpExample { inputs: inputs.into(), attrs: act.attrs() }
            })
            .collect()
    }
}

impl Kernel for Fp8MatmulKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (Some(t), Some(k), Some(n)) = (x.dims[0].known(), w.dims[1].known(), w.dims[0].known()) else {
            return Err(err(format!("workspace needs concrete T, K and N, got x {x}, w {w}")));
        };
        fp8_run::workspace_bytes(OP, t, k, n, self.dtype, false)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        check_ctx(OP, ctx)?;
        let want = 3 + self.at.activation.scale_inputs() + usize::from(self.at.bias.is_some());
        if inputs.len() != want || outputs.len() != 1 {
            return Err(err(format!(
                "launch takes {want} inputs and 1 output, got {} and {}",
                inputs.len(),
                outputs.len()
            )));
        }
        let xs = shape_of_rank(OP, "x", &inputs[0], 2)?;
        let wsh = shape_of_rank(OP, "w", &inputs[1], 2)?;
        let (t, k, n) = (xs[0], xs[1], wsh[0]);
        if wsh[1] != k {
            return Err(err(format!("x {} and w {} disagree on K", inputs[0].meta(), inputs[1].meta())));
        }
        let ys = shape_of_rank(OP, "y", &outputs[0], 2)?;
        if ys != [t, n] {
            return Err(err(format!("y must be [{t}, {n}], got {}", outputs[0].meta())));
        }
        let scale_len = shape_of_rank(OP, "w_scale", &inputs[2], 1)?[0];
        if scale_len != 1 && scale_len != n {
            return Err(err(format!("w_scale has {scale_len} values, expected 1 or {n}")));
        }
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let w = device_ptr(OP, "w", &inputs[1], DType::F8_E4M3)?;
        let ws = Scale { ptr: device_ptr(OP, "w_scale", &inputs[2], DType::F32)?, per_index: scale_len == n && n > 1 };
        let input_scale = match self.at.input_scale {
            Some(i) => Some(device_ptr(OP, "input_scale", &inputs[i], DType::F32)?),
            None => None,
        };
        let bias = match self.at.bias {
            Some(i) => {
                let bd = inputs[i].meta().dtype;
                Some(Bias { ptr: device_ptr(OP, "bias", &inputs[i], bd)?, f32: bd == DType::F32 })
            }
            None => None,
        };
        let y = device_ptr_mut(OP, "y", &mut outputs[0], self.dtype)?;
        if t == 0 || n == 0 {
            return Ok(());
        }
        let ub = match self.at.activation {
            Fp8Activation::Dynamic { upper_bound } => upper_bound,
            Fp8Activation::Static => None,
        };
        let segs = [Segment { w, ws, y, n }];
        let call =
            Fp8Call { op: OP, dtype: self.dtype, x, t, k, input_scale, ub, segs: &segs, bias, post: Post::Plain };
        // SAFETY: x [t, k] of the kernel's dtype, w [n, k] E4M3, its scale, the input scale, the
        // bias and y [t, n] checked above.
        unsafe { fp8_run::run(&self.kernels, ctx, &call) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_valid_and_cover_every_path() {
        let ex = Fp8Matmul::examples();
        let mut paths = [0usize; 3];
        for e in &ex {
            let y = Fp8Matmul::infer(&e.inputs, &e.attrs).unwrap();
            assert_eq!(y[0].dtype, e.inputs[0].dtype);
            let (t, k, n) = (
                e.inputs[0].dims[0].known().unwrap(),
                e.inputs[1].dims[1].known().unwrap(),
                e.inputs[1].dims[0].known().unwrap(),
            );
            let path = if gemv::preferred(t, n, k) {
                0
            } else if blaslt_fp8::fits(k, n, &[]) {
                1
            } else {
                2
            };
            paths[path] += 1;
        }
        assert!(paths.iter().all(|&c| c >= 3), "GEMV, cuBLASLt and fallback cases: {paths:?}");
    }

    #[test]
    fn refuses_f32_and_foreign_weights() {
        let m = |d, s: &[usize]| TensorMeta::of(d, s);
        let st = Fp8Activation::Static.attrs();
        let e = Fp8Matmul::infer(
            &[m(DType::F32, &[2, 16]), m(DType::F8_E4M3, &[4, 16]), m(DType::F32, &[1]), m(DType::F32, &[1])],
            &st,
        );
        assert!(e.unwrap_err().message().contains("x must be"));
        let e = Fp8Matmul::infer(
            &[m(DType::BF16, &[2, 16]), m(DType::BF16, &[4, 16]), m(DType::F32, &[1]), m(DType::F32, &[1])],
            &st,
        );
        assert!(e.unwrap_err().message().contains("f8_e4m3"));
    }
}
