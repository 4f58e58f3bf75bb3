//! CUDA provider of `fp8_grouped_matmul` (docs/quantization.md, "Fused FP8 ops"): 2 to 4
//! bias-free FP8 linears sharing x, as the fusion pass groups q/k/v or gate/up:
//!
//! ```text
//! fp8_grouped_matmul(x, w_0..w_{n-1}, s_0..s_{n-1}[, i_0..i_{n-1}]) -> y_0..y_{n-1}
//! attrs: activation (and activation_scale_ub) as fp8_matmul's
//! ```
//!
//! y_j = fp8_matmul(x, w_j, s_j[, i_j]) exactly: each part keeps its own weight scale. x is
//! quantized once, so static parts share one input scale: the fusion pass groups static parts
//! only when they read the same `input_scale` tensor, and this provider, like the built-in
//! reference, quantizes x with i_0.
//! Decode runs one FP8 GEMV launch over every part (fp8_run.rs).

use crate::blaslt;
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut};
use crate::fp8_kernels::{Fp8Kernels, Scale, Segment};
use crate::fp8_run::{self, Fp8Call};
use rtllm_plugin_api::shapes::fp8::{infer_fp8_matmul, Fp8Activation};
use rtllm_plugin_api::shapes::shape_of_rank;
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

const OP: &str = "fp8_grouped_matmul";
const X_DTYPES: [DType; 2] = [DType::BF16, DType::F16];

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP}: {msg}"))
}

/// The number of parts and the activation scheme of a call, checking every part as an
/// `fp8_matmul` (no bias); returns the outputs too.
pub fn infer_grouped(
    inputs: &[TensorMeta],
    attrs: &Attrs,
) -> Result<(usize, Fp8Activation, Vec<TensorMeta>), PluginError> {
    let activation = Fp8Activation::from_attrs(attrs).map_err(|e| e.context(OP))?;
    let per_part = 2 + activation.scale_inputs();
    let parts = inputs.len().saturating_sub(1) / per_part;
    if inputs.is_empty() || (inputs.len() - 1) % per_part != 0 || !(2..=4).contains(&parts) {
        return Err(err(format!(
            "takes x and 2 to 4 parts of (w, w_scale{}), got {} inputs",
            if activation == Fp8Activation::Static { ", input_scale" } else { "" },
            inputs.len()
        )));
    }
    let mut outs = Vec::with_capacity(parts);
    for j in 0..parts {
        let mut part = vec![inputs[0].clone(), inputs[1 + j].clone(), inputs[1 + parts + j].clone()];
        if activation == Fp8Activation::Static {
            part.push(inputs[1 + 2 * parts + j].clone());
        }
        let (y, _) = infer_fp8_matmul(&part, attrs, &X_DTYPES).map_err(|e| e.context(format_args!("{OP} part {j}")))?;
        outs.push(y);
    }
    Ok((parts, activation, outs))
}

/// Provider of `fp8_grouped_matmul` on CUDA.
pub struct Fp8GroupedMatmul;

/// A CUDA `fp8_grouped_matmul` instance.
pub struct Fp8GroupedMatmulKernel {
    dtype: DType,
    parts: usize,
    activation: Fp8Activation,
    kernels: Fp8Kernels,
}

impl Op for Fp8GroupedMatmul {
    const NAME: &'static str = OP;
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "y_j = fp8_matmul(x, w_j, s_j[, i_j]) for 2 to 4 FP8 weights sharing x (q/k/v, \
                                   gate/up): x quantized once, one FP8 GEMV launch for decode";
    type Kernel = Fp8GroupedMatmulKernel;

    fn dtypes() -> Vec<DType> {
        // f32: the scales (and an f32 bias); x itself must be bf16 or f16 (`infer`).
        vec![DType::BF16, DType::F16, DType::F8_E4M3, DType::F32]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(infer_grouped(inputs, attrs)?.2)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8GroupedMatmulKernel, PluginError> {
        let (parts, activation, _) = infer_grouped(inputs, attrs)?;
        if inputs[0].dims[1].known() == Some(0) {
            return Err(err(format!("K must be positive, got x {}", inputs[0])));
        }
        let dtype = inputs[0].dtype;
        blaslt::handle()?;
        Ok(Fp8GroupedMatmulKernel { dtype, parts, activation, kernels: Fp8Kernels::new(OP, dtype)? })
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, rows of each part, per-channel scales, activation, x dtype): q/k/v and gate/up
        // shapes on the GEMV (decode) and cuBLASLt (prefill), odd rows on the fallback.
        let dynamic = Fp8Activation::Dynamic { upper_bound: None };
        let capped = Fp8Activation::Dynamic { upper_bound: Some(0.5) };
        let st = Fp8Activation::Static;
        let cases: [(usize, usize, &[usize], bool, Fp8Activation, DType); 6] = [
            (1, 1024, &[1024, 256, 256], true, dynamic, DType::BF16),
            (3, 512, &[2048, 2048], false, st, DType::F16),
            (8, 256, &[64, 32, 32], true, capped, DType::BF16),
            (64, 1024, &[512, 128, 128], true, dynamic, DType::BF16),
            (40, 512, &[1024, 1024], false, st, DType::BF16),
            (20, 96, &[13, 7, 7, 5], true, dynamic, DType::F16),
        ];
        cases
            .iter()
            .map(|&(t, k, rows, per_channel, act, x)| {
                let mut inputs = vec![TensorMeta::of(x, &[t, k])];
                inputs.extend(rows.iter().map(|&n| TensorMeta::of(DType::F8_E4M3, &[n, k])));
                inputs.extend(rows.iter().map(|&n| TensorMeta::of(DType::F32, &[if per_channel { n } else { 1 }])));
                if act == Fp8Activation::Static {
                    inputs.extend(rows.iter().map(|_| TensorMeta::of(DType::F32, &[1])));
                }
                OpExample { inputs: inputs.into(), attrs: act.attrs() }
            })
            .collect()
    }
}

impl Kernel for Fp8GroupedMatmulKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let (t, k) = (inputs[0].dims[0].known(), inputs[0].dims[1].known());
        let n = inputs[1..=self.parts].iter().map(|w| w.dims[0].known()).collect::<Option<Vec<_>>>();
        let (Some(t), Some(k), Some(n)) = (t, k, n) else {
            return Err(err(format!("workspace needs concrete T, K and N, got x {}", inputs[0])));
        };
        fp8_run::workspace_layout(t, k, n.into_iter().max().unwrap_or(0), self.dtype)
            .map(|l| l.total)
            .ok_or_else(|| err(format!("workspace for x {} overflows", inputs[0])))
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        check_ctx(OP, ctx)?;
        let p = self.parts;
        let want = 1 + p * (2 + self.activation.scale_inputs());
        if inputs.len() != want || outputs.len() != p {
            return Err(err(format!(
                "launch takes {want} inputs and {p} outputs, got {} and {}",
                inputs.len(),
                outputs.len()
            )));
        }
        let xs = shape_of_rank(OP, "x", &inputs[0], 2)?;
        let (t, k) = (xs[0], xs[1]);
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let mut segs = Vec::with_capacity(p);
        for j in 0..p {
            let ws = shape_of_rank(OP, "w", &inputs[1 + j], 2)?;
            let n = ws[0];
            let scale_len = shape_of_rank(OP, "w_scale", &inputs[1 + p + j], 1)?[0];
            if ws[1] != k || (scale_len != 1 && scale_len != n) || shape_of_rank(OP, "y", &outputs[j], 2)? != [t, n] {
                return Err(err(format!(
                    "part {j}: x {}, w {}, w_scale {}, y {} disagree",
                    inputs[0].meta(),
                    inputs[1 + j].meta(),
                    inputs[1 + p + j].meta(),
                    outputs[j].meta()
                )));
            }
            segs.push(Segment {
                w: device_ptr(OP, "w", &inputs[1 + j], DType::F8_E4M3)?,
                ws: Scale {
                    ptr: device_ptr(OP, "w_scale", &inputs[1 + p + j], DType::F32)?,
                    per_index: scale_len == n && n > 1,
                },
                y: device_ptr_mut(OP, "y", &mut outputs[j], self.dtype)?,
                n,
            });
        }
        let (input_scale, ub) = match self.activation {
            Fp8Activation::Static => (Some(device_ptr(OP, "input_scale", &inputs[1 + 2 * p], DType::F32)?), None),
            Fp8Activation::Dynamic { upper_bound } => (None, upper_bound),
        };
        let call = Fp8Call { op: OP, dtype: self.dtype, x, t, k, input_scale, ub, segs: &segs, bias: None };
        // SAFETY: every tensor checked above (x [t, k], each w [n, k] E4M3 with its scale, each y
        // [t, n]); the static input scale is f32 [1].
        unsafe { fp8_run::run(&self.kernels, ctx, &call) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_refusals() {
        for ex in Fp8GroupedMatmul::examples() {
            let (parts, _, outs) = infer_grouped(&ex.inputs, &ex.attrs).unwrap();
            assert_eq!(outs.len(), parts);
            assert!(outs.iter().all(|y| y.dtype == ex.inputs[0].dtype));
        }
        let m = |d, s: &[usize]| TensorMeta::of(d, s);
        let dy = Fp8Activation::Dynamic { upper_bound: None }.attrs();
        let x = m(DType::BF16, &[2, 32]);
        let w = m(DType::F8_E4M3, &[8, 32]);
        let one = [x.clone(), w.clone(), m(DType::F32, &[8])];
        assert!(infer_grouped(&one, &dy).unwrap_err().message().contains("2 to 4 parts"));
        let bad = [x.clone(), w.clone(), m(DType::F8_E4M3, &[8, 16]), m(DType::F32, &[8]), m(DType::F32, &[8])];
        assert!(infer_grouped(&bad, &dy).unwrap_err().message().contains("part 1"));
        let odd = [x, w.clone(), w, m(DType::F32, &[8])];
        assert!(infer_grouped(&odd, &dy).is_err());
    }
}
