//! The `fused_add_rmsnorm` op: from x [T, H], residual [T, H] and w [H], writes
//! `y = rmsnorm(x + residual) * w` and `residual_out = x + residual` in one pass over the
//! inputs (attribute `eps`, default 1e-6). Rows run in parallel.

use crate::row::{add_rms_row, eps, for_row_chunks, rows_of, NormWeight, ACT_DTYPES, WEIGHT_DTYPES};
use half::{bf16, f16};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta, TensorView,
};

/// Provider of `fused_add_rmsnorm` on the CPU.
pub struct FusedAddRmsNorm;

impl Op for FusedAddRmsNorm {
    const NAME: &'static str = "fused_add_rmsnorm";
    const SUMMARY: &'static str =
        "residual_out = x + residual; y = rmsnorm(residual_out) * w; inputs x, residual [T, H], w [H]; attr eps";
    type Kernel = FusedAddRmsNormKernel;

    fn dtypes() -> Vec<DType> {
        WEIGHT_DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        rtllm_plugin_api::shapes::norm::infer_fused_add_rmsnorm(Self::NAME, inputs, attrs, &ACT_DTYPES)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<FusedAddRmsNormKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(FusedAddRmsNormKernel { eps: eps(Self::NAME, attrs)? })
    }

    fn examples() -> Vec<OpExample> {
        crate::rmsnorm::EXAMPLE_SHAPES
            .iter()
            .enumerate()
            .map(|(i, &(t, h, wdt))| OpExample {
                inputs: vec![
                    TensorMeta::of(DType::F32, &[t, h]),
                    TensorMeta::of(DType::F32, &[t, h]),
                    TensorMeta::of(wdt, &[h]),
                ]
                .into(),
                attrs: if i % 2 == 1 { Attrs::new() } else { Attrs::new().with("eps", 1e-5) },
            })
            .collect()
    }
}

/// A `fused_add_rmsnorm` instance.
pub struct FusedAddRmsNormKernel {
    eps: f32,
}

impl FusedAddRmsNormKernel {
    pub fn new(eps: f32) -> Self {
        FusedAddRmsNormKernel { eps }
    }
}

struct Bufs<'a> {
    x: &'a [f32],
    residual: &'a [f32],
    y: &'a mut [f32],
    r_out: &'a mut [f32],
}

fn run<W: NormWeight>(
    ctx: &LaunchContext,
    eps: f32,
    w: &InputView<'_>,
    b: Bufs<'_>,
    (t, h): (usize, usize),
) -> Result<(), PluginError> {
    let w = w.slice::<W>().map_err(|e| e.context("fused_add_rmsnorm: w"))?;
    let (x, residual) = (b.x, b.residual);
    for_row_chunks(ctx, t, h, [b.y, b.r_out], |rows, [y, r_out]| {
        let span = rows.start * h..rows.end * h;
        let rows_in = x[span.clone()].chunks_exact(h).zip(residual[span].chunks_exact(h));
        let rows_out = y.chunks_exact_mut(h).zip(r_out.chunks_exact_mut(h));
        for ((xr, sr), (yr, rr)) in rows_in.zip(rows_out) {
            add_rms_row(xr, sr, w, eps, rr, yr);
        }
    })
}

impl Kernel for FusedAddRmsNormKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = FusedAddRmsNorm::NAME;
        let (num_inputs, num_outputs) = (inputs.len(), outputs.len());
        let ([x, residual, w], [y, r_out]) = (inputs, outputs) else {
            return Err(PluginError::new(format!(
                "{OP}: launch takes 3 inputs and 2 outputs, got {} and {}",
                num_inputs, num_outputs
            )));
        };
        let (t, h) = rows_of(OP, "x", x, None)?;
        rows_of(OP, "residual", residual, Some((t, h)))?;
        rows_of(OP, "y", y, Some((t, h)))?;
        rows_of(OP, "residual_out", r_out, Some((t, h)))?;
        rtllm_plugin_api::shapes::norm::check_weight_arg(OP, w, h)?;
        let ctx_err = |what: &'static str| move |e: PluginError| e.context(format_args!("{OP}: {what}"));
        let b = Bufs {
            x: x.slice::<f32>().map_err(ctx_err("x"))?,
            residual: residual.slice::<f32>().map_err(ctx_err("residual"))?,
            y: y.slice_mut::<f32>().map_err(ctx_err("y"))?,
            r_out: r_out.slice_mut::<f32>().map_err(ctx_err("residual_out"))?,
        };
        match w.meta().dtype {
            DType::F32 => run::<f32>(ctx, self.eps, w, b, (t, h)),
            DType::BF16 => run::<bf16>(ctx, self.eps, w, b, (t, h)),
            DType::F16 => run::<f16>(ctx, self.eps, w, b, (t, h)),
            other => Err(PluginError::new(format!("{OP}: w must be f32, bf16 or f16, got {other} (w {})", w.meta()))),
        }
    }
}
