//! The `rmsnorm` op: y[T, H] = x / sqrt(mean(x²) + eps) * w, over each row of x (f32), with
//! an f32/bf16/f16 weight [H] and attribute `eps` (default 1e-6). Rows run in parallel.

use crate::row::{eps, for_row_chunks, rms_row, rows_of, NormWeight, ACT_DTYPES, WEIGHT_DTYPES};
use half::{bf16, f16};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta, TensorView,
};

/// Provider of `rmsnorm` on the CPU.
pub struct RmsNorm;

/// Row shapes of the conformance examples: (T, H, weight dtype).
pub(crate) const EXAMPLE_SHAPES: [(usize, usize, DType); 9] = [
    (1, 1, DType::F32),
    (5, 7, DType::F32),
    (33, 64, DType::BF16),
    (1, 576, DType::F32),
    (5, 576, DType::F16),
    (33, 1000, DType::F32),
    (1, 1000, DType::BF16),
    (33, 7, DType::F16),
    (5, 64, DType::F32),
];

impl Op for RmsNorm {
    const NAME: &'static str = "rmsnorm";
    const SUMMARY: &'static str = "y = x / sqrt(mean(x²) + eps) * w over rows of x [T, H]; attr eps (default 1e-6)";
    type Kernel = RmsNormKernel;

    fn dtypes() -> Vec<DType> {
        WEIGHT_DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        rtllm_plugin_api::shapes::norm::infer_rmsnorm(Self::NAME, inputs, attrs, &ACT_DTYPES)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<RmsNormKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(RmsNormKernel { eps: eps(Self::NAME, attrs)? })
    }

    fn examples() -> Vec<OpExample> {
        EXAMPLE_SHAPES
            .iter()
            .enumerate()
            .map(|(i, &(t, h, wdt))| OpExample {
                inputs: vec![TensorMeta::of(DType::F32, &[t, h]), TensorMeta::of(wdt, &[h])].into(),
                attrs: if i % 2 == 0 { Attrs::new() } else { Attrs::new().with("eps", 1e-5) },
            })
            .collect()
    }
}

/// An `rmsnorm` instance.
pub struct RmsNormKernel {
    eps: f32,
}

impl RmsNormKernel {
    pub fn new(eps: f32) -> Self {
        RmsNormKernel { eps }
    }
}

fn run<W: NormWeight>(
    ctx: &LaunchContext,
    eps: f32,
    x: &[f32],
    w: &InputView<'_>,
    y: &mut [f32],
    (t, h): (usize, usize),
) -> Result<(), PluginError> {
    let w = w.slice::<W>().map_err(|e| e.context("rmsnorm: w"))?;
    for_row_chunks(ctx, t, h, [y], |rows, [y]| {
        let x = &x[rows.start * h..rows.end * h];
        for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
            rms_row(xr, w, eps, yr);
        }
    })
}

impl Kernel for RmsNormKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = RmsNorm::NAME;
        let (num_inputs, num_outputs) = (inputs.len(), outputs.len());
        let ([x, w], [y]) = (inputs, outputs) else {
            return Err(PluginError::new(format!(
                "{OP}: launch takes 2 inputs and 1 output, got {} and {}",
                num_inputs, num_outputs
            )));
        };
        let (t, h) = rows_of(OP, "x", x, None)?;
        rows_of(OP, "y", y, Some((t, h)))?;
        rtllm_plugin_api::shapes::norm::check_weight_arg(OP, w, h)?;
        let xs = x.slice::<f32>().map_err(|e| e.context("rmsnorm: x"))?;
        let ys = y.slice_mut::<f32>().map_err(|e| e.context("rmsnorm: y"))?;
        match w.meta().dtype {
            DType::F32 => run::<f32>(ctx, self.eps, xs, w, ys, (t, h)),
            DType::BF16 => run::<bf16>(ctx, self.eps, xs, w, ys, (t, h)),
            DType::F16 => run::<f16>(ctx, self.eps, xs, w, ys, (t, h)),
            other => Err(PluginError::new(format!("{OP}: w must be f32, bf16 or f16, got {other} (w {})", w.meta()))),
        }
    }
}
