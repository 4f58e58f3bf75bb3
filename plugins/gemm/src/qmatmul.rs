//! The `matmul` provider for GGUF block-quantized weights: y[T, N] = x[T, K] · w[N, K]ᵀ
//! (+ bias[N]), x and y f32, w Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K in ggml's block layout (each
//! row whole blocks). Registered beside the float [`crate::Matmul`] at a lower priority, so
//! float weights keep going to it (an f32 weight given to this op is handed to it as well).
//! Inference, creation (instruction set detected once), launch checks and conformance
//! examples; the arithmetic lives in `qdriver`, `qdot`, `qact` and `qformat`.

use crate::matmul::{Matmul, MatmulKernel};
use crate::qdot::QIsa;
use crate::qdriver::{self, QPath, QProblem};
use crate::qformat::{Format, Q4K, Q4_0, Q4_1, Q6K, Q8_0};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta, TensorView,
};

/// Provider of `matmul` on the CPU for quantized weights.
pub struct QMatmul;

fn err(msg: String) -> PluginError {
    PluginError::new(format!("matmul (quantized): {msg}"))
}

/// Checks input metas; returns the output meta.
fn check(inputs: &[TensorMeta]) -> Result<TensorMeta, PluginError> {
    if inputs.len() < 2 {
        return Err(err(format!("takes inputs (x, w) or (x, w, bias), got {} inputs", inputs.len())));
    }
    let w = &inputs[1];
    if !w.dtype.is_quantized() {
        // Float weights: the float provider's rules.
        return Matmul::infer(inputs, &Attrs::new()).map(|mut v| v.remove(0));
    }
    if !DType::QUANTIZED.contains(&w.dtype) {
        return Err(err(format!("unsupported weight dtype {}", w.dtype)));
    }
    let mut float = inputs.to_vec();
    float[1].dtype = DType::F32;
    let out = Matmul::infer(&float, &Attrs::new())?.remove(0);
    if let Some(k) = w.dims.get(1).and_then(|d| d.known()) {
        if k % w.dtype.block_size() != 0 {
            return Err(err(format!(
                "w {w}: K={k} is not a whole number of {}-element {} blocks",
                w.dtype.block_size(),
                w.dtype
            )));
        }
    }
    Ok(out)
}

impl Op for QMatmul {
    const NAME: &'static str = "matmul";
    const PRIORITY: i32 = -1;
    const SUMMARY: &'static str =
        "y = x·wᵀ (+ bias); x f32, w q8_0/q4_0/q4_1/q4_k/q6_k; int8 dot products (AVX-512 VNNI/AVX2) on all cores";
    type Kernel = QMatmulKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = vec![DType::F32];
        d.extend(DType::QUANTIZED);
        d
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![check(inputs)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<QMatmulKernel, PluginError> {
        check(inputs)?;
        let float = if inputs[1].dtype.is_quantized() { None } else { Some(Matmul::create(inputs, attrs)?) };
        Ok(QMatmulKernel { isa: QIsa::detect(), path: path_override()?, float })
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, N, dtype, bias): odd N, K a few blocks, T for decode and prefill.
        let cases: [(usize, usize, usize, DType, bool); 12] = [
            (1, 64, 13, DType::Q8_0, true),
            (5, 96, 130, DType::Q8_0, false),
            (1, 32, 1, DType::Q4_0, false),
            (17, 576, 13, DType::Q4_0, true),
            (1, 576, 130, DType::Q4_1, true),
            (64, 96, 13, DType::Q4_1, false),
            (3, 32, 7, DType::Q4_1, true),
            (1, 256, 13, DType::Q4_K, true),
            (17, 512, 33, DType::Q4_K, false),
            (1, 512, 7, DType::Q6_K, false),
            (6, 256, 130, DType::Q6_K, true),
            (64, 768, 17, DType::Q6_K, true),
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

/// The method forced by `RTLLM_GEMM_QPATH` (`rows`, `int` or `tiles`; for comparisons), if set.
fn path_override() -> Result<Option<QPath>, PluginError> {
    match std::env::var("RTLLM_GEMM_QPATH") {
        Ok(v) if !v.trim().is_empty() => QPath::parse(&v)
            .map(Some)
            .ok_or_else(|| err(format!("RTLLM_GEMM_QPATH={v:?}: expected rows, int or tiles"))),
        _ => Ok(None),
    }
}

/// A quantized `matmul` instance: instruction set chosen at creation, method per launch.
pub struct QMatmulKernel {
    isa: QIsa,
    /// A forced method (benchmarks, tests); `None` picks by token count.
    path: Option<QPath>,
    /// The float kernel when the weights are f32.
    float: Option<MatmulKernel>,
}

impl QMatmulKernel {
    /// An instance on an explicit instruction set and, optionally, a forced method; `None`
    /// when this CPU cannot run that instruction set.
    pub fn with(isa: QIsa, path: Option<QPath>) -> Option<Self> {
        isa.is_supported().then_some(QMatmulKernel { isa, path, float: None })
    }

    pub fn isa(&self) -> QIsa {
        self.isa
    }
}

fn dims2(arg: &impl TensorView, what: &str) -> Result<(usize, usize), PluginError> {
    match arg.shape()?.as_slice() {
        &[a, b] => Ok((a, b)),
        _ => Err(err(format!("{what} must have rank 2, got {what} {}", arg.meta()))),
    }
}

impl Kernel for QMatmulKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        check(inputs)?;
        if let Some(f) = &self.float {
            return f.workspace_bytes(inputs);
        }
        let (x, w) = (&inputs[0], &inputs[1]);
        let (Some(t), Some(k)) = (x.dims[0].known(), w.dims[1].known()) else {
            return Err(err(format!("workspace needs concrete T and K, got x {x}, w {w}")));
        };
        let need = |p: QPath| qdriver::workspace_bytes(t, k, p);
        Ok(match self.path {
            Some(p) => need(p),
            None => qdriver::workspace_bytes_upto(t, k),
        })
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        if let Some(f) = &self.float {
            return f.launch(ctx, inputs, outputs);
        }
        if !(2..=3).contains(&inputs.len()) || outputs.len() != 1 {
            return Err(err(format!(
                "launch takes 2 or 3 inputs and 1 output, got {} and {}",
                inputs.len(),
                outputs.len()
            )));
        }
        let (x, w, y) = (&inputs[0], &inputs[1], &mut outputs[0]);
        let (t, k) = dims2(x, "x")?;
        let (n, kw) = dims2(w, "w")?;
        let (ty, ny) = dims2(y, "y")?;
        if kw != k || ty != t || ny != n {
            return Err(err(format!("launch shapes disagree: x {}, w {}, y {}", x.meta(), w.meta(), y.meta())));
        }
        let bias = match inputs.get(2) {
            Some(b) => {
                if b.shape()? != [n] {
                    return Err(err(format!("bias must be [{n}], got bias {}", b.meta())));
                }
                Some(b.slice::<f32>().map_err(|e| e.context("matmul: bias"))?)
            }
            None => None,
        };
        let p = QProblem {
            x: x.slice::<f32>().map_err(|e| e.context("matmul: x"))?,
            w: w.bytes().map_err(|e| e.context("matmul: w"))?,
            bias,
            y: y.slice_mut::<f32>().map_err(|e| e.context("matmul: y"))?,
            t,
            k,
            n,
        };
        let path = self.path.unwrap_or_else(|| qdriver::path_for(t, w.meta().dtype, self.isa));
        run_dtype(ctx, self.isa, path, w.meta().dtype, p)
    }
}

/// Dispatches on the weight dtype.
pub fn run_dtype(
    ctx: &LaunchContext,
    isa: QIsa,
    path: QPath,
    dtype: DType,
    p: QProblem<'_>,
) -> Result<(), PluginError> {
    fn go<F: Format>(ctx: &LaunchContext, isa: QIsa, path: QPath, p: QProblem<'_>) -> Result<(), PluginError> {
        qdriver::run::<F>(ctx, isa, path, p)
    }
    match dtype {
        DType::Q8_0 => go::<Q8_0>(ctx, isa, path, p),
        DType::Q4_0 => go::<Q4_0>(ctx, isa, path, p),
        DType::Q4_1 => go::<Q4_1>(ctx, isa, path, p),
        DType::Q4_K => go::<Q4K>(ctx, isa, path, p),
        DType::Q6_K => go::<Q6K>(ctx, isa, path, p),
        other => Err(err(format!("w must be a GGUF block type, got {other}"))),
    }
}
