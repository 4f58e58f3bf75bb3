//! The `matmul` op: y[T, N] = x[T, K] · w[N, K]ᵀ (+ bias[N]), x and y f32, w f32/bf16/f16 in
//! PyTorch `Linear` layout. Inference, kernel creation (instruction set detected once), the
//! launch-time checks of the actual tensors, and conformance examples; the arithmetic lives
//! in `driver` and `tile`.

use crate::driver::{self, Problem};
use crate::simd::{Isa, WeightElem};
use half::{bf16, f16};
use rtllm_plugin_api::shapes::matmul::{infer_matmul, launch_dims, MatmulDtypes};
use rtllm_plugin_api::{
    Attrs, DType, Element, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

/// Provider of `matmul` on the CPU.
pub struct Matmul;

/// Weight dtypes the kernel reads.
const WEIGHT_DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// The dtypes of the CPU matmul: f32 activations and bias, f32/bf16/f16 weights.
const DTYPES: MatmulDtypes = MatmulDtypes { x: &[DType::F32], w: |_| &WEIGHT_DTYPES, bias: |_| &[DType::F32] };

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{}: {msg}", Matmul::NAME))
}

/// Checks input metas (dims may be symbolic) and returns the output meta.
fn check(inputs: &[TensorMeta]) -> Result<TensorMeta, PluginError> {
    infer_matmul(inputs, &DTYPES)
}

impl Op for Matmul {
    const NAME: &'static str = "matmul";
    const SUMMARY: &'static str = "y = x·wᵀ (+ bias); x f32 [T, K], w f32/bf16/f16 [N, K]; AVX2+FMA tiles on all cores";
    type Kernel = MatmulKernel;

    fn dtypes() -> Vec<DType> {
        WEIGHT_DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![check(inputs)?])
    }

    fn create(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<MatmulKernel, PluginError> {
        check(inputs)?;
        Ok(MatmulKernel { isa: Isa::detect() })
    }

    fn examples() -> Vec<OpExample> {
        let cases: [(usize, usize, usize, DType, bool); 12] = [
            (1, 64, 1, DType::F32, false),
            (1, 577, 130, DType::BF16, true),
            (1, 96, 13, DType::F16, false),
            (3, 64, 13, DType::F32, true),
            (3, 577, 1, DType::BF16, false),
            (4, 96, 130, DType::F16, true),
            (17, 577, 13, DType::F32, false),
            (17, 64, 130, DType::BF16, true),
            (17, 96, 1, DType::F16, true),
            (64, 96, 130, DType::F32, true),
            (64, 577, 13, DType::F16, false),
            (64, 64, 130, DType::BF16, false),
        ];
        cases
            .iter()
            .map(|&(t, k, n, wdt, bias)| {
                let mut inputs = vec![TensorMeta::of(DType::F32, &[t, k]), TensorMeta::of(wdt, &[n, k])];
                if bias {
                    inputs.push(TensorMeta::of(DType::F32, &[n]));
                }
                OpExample { inputs: inputs.into(), attrs: Attrs::new() }
            })
            .collect()
    }
}

/// A `matmul` instance: the instruction set chosen at creation.
pub struct MatmulKernel {
    isa: Isa,
}

impl MatmulKernel {
    /// An instance on an explicit instruction set (to compare back ends), or `None` when this
    /// CPU cannot run it.
    pub fn with_isa(isa: Isa) -> Option<Self> {
        isa.is_supported().then_some(MatmulKernel { isa })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }
}

impl Kernel for MatmulKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        check(inputs)?;
        let w = &inputs[1];
        // Only enough tokens pack weights; a known smaller T needs nothing.
        if inputs[0].dims[0].known().is_some_and(|t| t < driver::pack_min_rows(w.dtype)) {
            return Ok(0);
        }
        let (n, k) = match (w.dims[0].known(), w.dims[1].known()) {
            (Some(n), Some(k)) => (n, k),
            _ => return Err(err(format!("workspace needs a concrete weight shape, got w {w}"))),
        };
        Ok(driver::workspace_bytes(n, k))
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let (t, k, n) = launch_dims(inputs, outputs)?;
        let (x, w, y) = (&inputs[0], &inputs[1], &mut outputs[0]);
        let bias = match inputs.get(2) {
            Some(b) => Some(b.slice::<f32>().map_err(|e| e.context("matmul: bias"))?),
            None => None,
        };
        let x = x.slice::<f32>().map_err(|e| e.context("matmul: x"))?;
        let y = y.slice_mut::<f32>().map_err(|e| e.context("matmul: y"))?;
        let isa = self.isa;
        fn go<W: WeightElem + Element>(
            ctx: &LaunchContext,
            isa: Isa,
            w: &InputView<'_>,
            x: &[f32],
            bias: Option<&[f32]>,
            y: &mut [f32],
            (t, k, n): (usize, usize, usize),
        ) -> Result<(), PluginError> {
            let w = w.slice::<W>().map_err(|e| e.context("matmul: w"))?;
            // Pack into the workspace when the host gave one; otherwise read the weights in place.
            let panels = ctx.workspace::<f32>(ctx.workspace_bytes() / 4).ok();
            driver::run(ctx, isa, Problem { x, w, bias, y, t, k, n }, panels)
        }
        let dims = (t, k, n);
        match w.meta().dtype {
            DType::F32 => go::<f32>(ctx, isa, w, x, bias, y, dims),
            DType::BF16 => go::<bf16>(ctx, isa, w, x, bias, y, dims),
            DType::F16 => go::<f16>(ctx, isa, w, x, bias, y, dims),
            other => Err(err(format!("w must be f32, bf16 or f16, got {other} (w {})", w.meta()))),
        }
    }
}
