//! The `layer_norm` op: y[T, H] = (x - mean) / sqrt(var + eps) * w (+ b) over each row of x
//! (f32), as `torch.nn.LayerNorm` (biased variance). Weight [H] and optional bias [H] share
//! one dtype (f32/bf16/f16); attribute `eps` (default 1e-5). Rows run in parallel.

use crate::row::{check_metas, eps_or, for_row_chunks, rows_of, NormWeight, WEIGHT_DTYPES};
use half::{bf16, f16};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta, TensorView,
};

/// Default of the `eps` attribute (PyTorch's).
pub const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;

/// Provider of `layer_norm` on the CPU.
pub struct LayerNorm;

/// Row shapes of the conformance examples: (T, H, weight dtype, with bias).
const EXAMPLE_SHAPES: [(usize, usize, DType, bool); 8] = [
    (1, 1, DType::F32, true),
    (5, 7, DType::F32, false),
    (33, 64, DType::BF16, true),
    (1, 576, DType::F32, true),
    (5, 576, DType::F16, false),
    (33, 1000, DType::F32, true),
    (1, 1000, DType::BF16, false),
    (300, 128, DType::F16, true),
];

impl Op for LayerNorm {
    const NAME: &'static str = "layer_norm";
    const SUMMARY: &'static str =
        "y = (x - mean) / sqrt(var + eps) * w (+ b) over rows of x [T, H]; attr eps (default 1e-5)";
    type Kernel = LayerNormKernel;

    fn dtypes() -> Vec<DType> {
        WEIGHT_DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        let (x, w, b) = match inputs {
            [x, w] => (x, w, None),
            [x, w, b] => (x, w, Some(b)),
            _ => {
                return Err(PluginError::new(format!(
                    "{}: takes inputs (x, w) or (x, w, b), got {} inputs",
                    Self::NAME,
                    inputs.len()
                )))
            }
        };
        check_metas(Self::NAME, "x", x, w)?;
        if let Some(b) = b {
            if b.rank() != 1 || b.dims[0] != w.dims[0] || b.dtype != w.dtype {
                return Err(PluginError::new(format!(
                    "{}: b must have the shape and dtype of w {w}, got b {b}",
                    Self::NAME
                )));
            }
        }
        eps_or(Self::NAME, attrs, DEFAULT_LAYER_NORM_EPS)?;
        Ok(vec![TensorMeta::new(DType::F32, x.dims.iter().cloned())])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<LayerNormKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(LayerNormKernel { eps: eps_or(Self::NAME, attrs, DEFAULT_LAYER_NORM_EPS)? })
    }

    fn examples() -> Vec<OpExample> {
        EXAMPLE_SHAPES
            .iter()
            .enumerate()
            .map(|(i, &(t, h, wdt, bias))| {
                let mut inputs = vec![TensorMeta::of(DType::F32, &[t, h]), TensorMeta::of(wdt, &[h])];
                if bias {
                    inputs.push(TensorMeta::of(wdt, &[h]));
                }
                let attrs = if i % 2 == 0 { Attrs::new() } else { Attrs::new().with("eps", 1e-6) };
                OpExample { inputs: inputs.into(), attrs }
            })
            .collect()
    }
}

/// A `layer_norm` instance.
pub struct LayerNormKernel {
    eps: f32,
}

impl LayerNormKernel {
    pub fn new(eps: f32) -> Self {
        LayerNormKernel { eps }
    }
}

/// Σ v with 8 independent partial sums (vectorisable without reassociation).
#[inline(always)]
fn sum8(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&r| f(r)).sum::<f32>()
}

/// One row of LayerNorm. Two passes over `x` (mean, then centred squares) keep the variance
/// accurate when the mean is large against the spread.
pub fn layer_norm_row<W: NormWeight>(x: &[f32], w: &[W], b: Option<&[W]>, eps: f32, y: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let n = x.len() as f32;
    let mean = sum8(x, |v| v) / n;
    let var = sum8(x, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    match b {
        Some(b) => {
            for (((o, &v), &g), &c) in y.iter_mut().zip(x).zip(w).zip(b) {
                *o = (v - mean) * inv * g.to_f32() + c.to_f32();
            }
        }
        None => {
            for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
                *o = (v - mean) * inv * g.to_f32();
            }
        }
    }
}

fn run<W: NormWeight>(
    ctx: &LaunchContext,
    eps: f32,
    x: &[f32],
    (w, b): (&InputView<'_>, Option<&InputView<'_>>),
    y: &mut [f32],
    (t, h): (usize, usize),
) -> Result<(), PluginError> {
    let w = w.slice::<W>().map_err(|e| e.context("layer_norm: w"))?;
    let b = b.map(|b| b.slice::<W>().map_err(|e| e.context("layer_norm: b"))).transpose()?;
    for_row_chunks(ctx, t, h, [y], |rows, [y]| {
        let x = &x[rows.start * h..rows.end * h];
        for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
            layer_norm_row(xr, w, b, eps, yr);
        }
    })
}

impl Kernel for LayerNormKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = LayerNorm::NAME;
        let (num_inputs, num_outputs) = (inputs.len(), outputs.len());
        let (x, w, b, y) = match (inputs, outputs) {
            ([x, w], [y]) => (&*x, &*w, None, y),
            ([x, w, b], [y]) => (&*x, &*w, Some(&*b), y),
            _ => {
                return Err(PluginError::new(format!(
                    "{OP}: launch takes 2 or 3 inputs and 1 output, got {} and {}",
                    num_inputs, num_outputs
                )))
            }
        };
        let (t, h) = rows_of(OP, "x", x, None)?;
        rows_of(OP, "y", y, Some((t, h)))?;
        for (what, arg) in [("w", Some(w)), ("b", b)] {
            if let Some(arg) = arg {
                if arg.shape()? != [h] || arg.meta().dtype != w.meta().dtype {
                    return Err(PluginError::new(format!(
                        "{OP}: {what} must be {}[{h}], got {what} {}",
                        w.meta().dtype,
                        arg.meta()
                    )));
                }
            }
        }
        let xs = x.slice::<f32>().map_err(|e| e.context("layer_norm: x"))?;
        let ys = y.slice_mut::<f32>().map_err(|e| e.context("layer_norm: y"))?;
        match w.meta().dtype {
            DType::F32 => run::<f32>(ctx, self.eps, xs, (w, b), ys, (t, h)),
            DType::BF16 => run::<bf16>(ctx, self.eps, xs, (w, b), ys, (t, h)),
            DType::F16 => run::<f16>(ctx, self.eps, xs, (w, b), ys, (t, h)),
            other => Err(PluginError::new(format!("{OP}: w must be f32, bf16 or f16, got {other} (w {})", w.meta()))),
        }
    }
}
