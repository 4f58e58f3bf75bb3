//! The CPU `fp8_matmul` op (contract in plugin-api `shapes::fp8`, docs/quantization.md):
//! y = (e4m3(x / s_x) · wᵀ) · s_x · w_scale (+ bias), x and y f32, w FP8 E4M3 [N, K] with a
//! per-tensor or per-channel scale, activations quantized with a static `input_scale` or a
//! dynamic per-token scale — the numerics of vLLM's and TensorRT-LLM's FP8 linears: E4M3
//! products (exact in f32) accumulated in f32, the scales applied once per output.
//! The activations are quantized into the workspace (as the f32 values of their codes), the
//! product runs on the f32 matmul driver with the E4M3 weights widened in its tiles or packed
//! panels (see `simd`'s `WeightElem`), and a last pass applies the scales and the bias.

use crate::driver::{self, Problem};
use crate::simd::Isa;
use rtllm_plugin_api::fp8::{dynamic_scale, e4m3_to_f32, quantize_scaled, F8E4M3};
use rtllm_plugin_api::shapes::fp8::{infer_fp8_matmul, Fp8Activation, Fp8MatmulInputs};
use rtllm_plugin_api::shapes::{expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta, TensorView,
};

/// Provider of `fp8_matmul` on the CPU.
pub struct Fp8Matmul;

const OP: &str = "fp8_matmul";

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP}: {msg}"))
}

fn check(inputs: &[TensorMeta], attrs: &Attrs) -> Result<(TensorMeta, Fp8MatmulInputs), PluginError> {
    let (y, at) = infer_fp8_matmul(inputs, attrs, &[DType::F32])?;
    if let Some(b) = at.bias {
        if inputs[b].dtype != DType::F32 {
            return Err(err(format!("bias must be f32 on the CPU, got bias {}", inputs[b])));
        }
    }
    Ok((y, at))
}

impl Op for Fp8Matmul {
    const NAME: &'static str = OP;
    const SUMMARY: &'static str = "y = (e4m3(x/s_x)·wᵀ)·s_x·w_scale (+ bias); x f32, w f8_e4m3 per-tensor or \
                                   per-channel scale, static or dynamic per-token activations; f32 accumulation";
    type Kernel = Fp8MatmulKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::F8_E4M3]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![check(inputs, attrs)?.0])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8MatmulKernel, PluginError> {
        let (_, at) = check(inputs, attrs)?;
        Ok(Fp8MatmulKernel { at, isa: Isa::detect() })
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, N, per-channel weight scale, activation, bias)
        let dynamic = Fp8Activation::Dynamic { upper_bound: None };
        let capped = Fp8Activation::Dynamic { upper_bound: Some(0.5) };
        let cases = [
            (1, 64, 13, false, Fp8Activation::Static, false),
            (5, 96, 130, true, Fp8Activation::Static, true),
            (1, 577, 7, true, dynamic, false),
            (17, 64, 33, false, dynamic, true),
            (64, 96, 13, true, capped, false),
            (3, 32, 1, false, capped, true),
        ];
        cases
            .iter()
            .map(|&(t, k, n, per_channel, act, bias)| {
                let mut inputs = vec![
                    TensorMeta::of(DType::F32, &[t, k]),
                    TensorMeta::of(DType::F8_E4M3, &[n, k]),
                    TensorMeta::of(DType::F32, &[if per_channel { n } else { 1 }]),
                ];
                if act == Fp8Activation::Static {
                    inputs.push(TensorMeta::of(DType::F32, &[1]));
                }
                if bias {
                    inputs.push(TensorMeta::of(DType::F32, &[n]));
                }
                OpExample { inputs: inputs.into(), attrs: act.attrs() }
            })
            .collect()
    }
}

/// An `fp8_matmul` instance: where its optional inputs are, how activations quantize, and
/// the instruction set its product runs on.
pub struct Fp8MatmulKernel {
    at: Fp8MatmulInputs,
    isa: Isa,
}

/// f32 elements of the packed-weight panels a launch of `t` tokens uses (none for a decode).
fn panel_len(t: usize, n: usize, k: usize) -> usize {
    if t >= driver::pack_min_rows(DType::F8_E4M3) {
        driver::workspace_bytes(n, k) / 4
    } else {
        0
    }
}

impl Kernel for Fp8MatmulKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (Some(t), Some(n), Some(k)) = (x.dims[0].known(), w.dims[0].known(), w.dims[1].known()) else {
            return Err(err(format!("workspace needs concrete T, N and K, got x {x}, w {w}")));
        };
        // The quantized activations (as the f32 values of their codes), one scale per row and
        // the matmul driver's packed weights.
        Ok((t * k + t + panel_len(t, n, k)) * 4)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let want = 3 + self.at.activation.scale_inputs() + usize::from(self.at.bias.is_some());
        if inputs.len() != want || outputs.len() != 1 {
            return Err(err(format!(
                "launch takes {want} inputs and 1 output, got {} and {}",
                inputs.len(),
                outputs.len()
            )));
        }
        let xs = shape_of_rank(OP, "x", &inputs[0], 2)?;
        let ws = shape_of_rank(OP, "w", &inputs[1], 2)?;
        let (t, k, n) = (xs[0], xs[1], ws[0]);
        if ws[1] != k {
            return Err(err(format!("x {} and w {} disagree on K", inputs[0].meta(), inputs[1].meta())));
        }
        expect_shape(OP, "y", &outputs[0], &[t, n])?;
        let x = inputs[0].slice::<f32>().map_err(|e| e.context("fp8_matmul: x"))?;
        let w = inputs[1].slice::<F8E4M3>().map_err(|e| e.context("fp8_matmul: w"))?;
        let w_scale = inputs[2].slice::<f32>().map_err(|e| e.context("fp8_matmul: w_scale"))?;
        if w_scale.len() != 1 && w_scale.len() != n {
            return Err(err(format!("w_scale has {} values, expected 1 or {n}", w_scale.len())));
        }
        let input_scale = match self.at.input_scale {
            Some(i) => Some(inputs[i].slice::<f32>().map_err(|e| e.context("fp8_matmul: input_scale"))?[0]),
            None => None,
        };
        let bias = match self.at.bias {
            Some(i) => {
                expect_shape(OP, "bias", &inputs[i], &[n])?;
                Some(inputs[i].slice::<f32>().map_err(|e| e.context("fp8_matmul: bias"))?)
            }
            None => None,
        };
        let y = outputs[0].slice_mut::<f32>().map_err(|e| e.context("fp8_matmul: y"))?;
        let workspace = ctx.workspace::<f32>(t * k + t + panel_len(t, n, k))?;
        let (qx, rest) = workspace.split_at_mut(t * k);
        let (scales, panels) = rest.split_at_mut(t);

        // One scale per activation row, then each row quantized with it.
        let upper_bound = match self.at.activation {
            Fp8Activation::Dynamic { upper_bound } => upper_bound,
            Fp8Activation::Static => None,
        };
        for (r, s) in scales.iter_mut().enumerate() {
            *s = input_scale.unwrap_or_else(|| dynamic_scale(&x[r * k..(r + 1) * k], upper_bound));
        }
        let scales = &*scales;
        ctx.parallel_chunks_mut([qx], k, 16, |rows, [q]| {
            for (r, qrow) in rows.zip(q.chunks_exact_mut(k)) {
                for (o, &v) in qrow.iter_mut().zip(&x[r * k..(r + 1) * k]) {
                    *o = e4m3_to_f32(quantize_scaled(v, scales[r]));
                }
            }
        })?;

        // acc = qx · wᵀ (exact E4M3 products, f32 sums), then y = acc · s_x[r] · w_scale[j] (+ bias[j]).
        driver::run(ctx, self.isa, Problem { x: qx, w, bias: None, y: &mut *y, t, k, n }, Some(panels))?;
        ctx.parallel_chunks_mut([y], n, 16, |rows, [out]| {
            for (r, yrow) in rows.zip(out.chunks_exact_mut(n)) {
                for (j, o) in yrow.iter_mut().enumerate() {
                    let wsj = if w_scale.len() == 1 { w_scale[0] } else { w_scale[j] };
                    *o = *o * scales[r] * wsj + bias.map_or(0.0, |b| b[j]);
                }
            }
        })
    }
}
