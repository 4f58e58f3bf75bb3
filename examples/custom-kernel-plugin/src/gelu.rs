//! The fast `gelu_tanh` provider: shape/dtype inference (an f32 tensor of any rank gives an
//! f32 tensor of the same shape), conformance examples, and a kernel that runs the
//! vectorisable formula of `fast_math` over disjoint chunks of the output on the host's
//! thread pool (`parallel_chunks_mut`: no unsafe code).

use crate::fast_math;
use rtllm_plugin_api::author::{expect_dtype, expect_inputs};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta, TensorView,
};

// docs:start:infer
/// Inference shared by both providers: one f32 input of any rank; the output has its dims
/// (symbolic ones such as the token count `T` pass through unchanged).
pub fn infer_same_shape(op: &str, inputs: &[TensorMeta]) -> Result<Vec<TensorMeta>, PluginError> {
    expect_inputs(op, inputs, &[1])?;
    expect_dtype(op, "x", &inputs[0], &[DType::F32])?;
    Ok(vec![TensorMeta::new(DType::F32, inputs[0].dims.iter().cloned())])
}

/// The two tensors of a launch, checked: `x` (read-only) and `y` (writable) of the same
/// concrete shape.
pub fn launch_args<'a>(
    op: &str,
    inputs: &'a [InputView<'_>],
    outputs: &'a mut [OutputView<'_>],
) -> Result<(&'a [f32], &'a mut [f32]), PluginError> {
    let counts = (inputs.len(), outputs.len());
    let ([x], [y]) = (inputs, outputs) else {
        return Err(PluginError::new(format!(
            "{op}: launch takes 1 input and 1 output, got {} and {}",
            counts.0, counts.1
        )));
    };
    if x.shape()? != y.shape()? {
        return Err(PluginError::new(format!("{op}: y {} does not match x {}", y.meta(), x.meta())));
    }
    Ok((x.slice::<f32>()?, y.slice_mut::<f32>()?))
}
// docs:end:infer

// docs:start:op-impl
/// Provider of `gelu_tanh` on the CPU: vectorised and parallel.
pub struct GeluTanh;

impl Op for GeluTanh {
    const NAME: &'static str = "gelu_tanh";
    const SUMMARY: &'static str = "y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), f32, any shape";
    type Kernel = GeluTanhKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        infer_same_shape(Self::NAME, inputs)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<GeluTanhKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(GeluTanhKernel)
    }

    /// Shapes `rtllm plugins check` runs the kernel on (with random inputs).
    fn examples() -> Vec<OpExample> {
        [&[1usize][..], &[7, 33], &[3, 5, 129], &[64, 1536], &[100_003]]
            .iter()
            .map(|dims| OpExample { inputs: vec![TensorMeta::of(DType::F32, dims)].into(), attrs: Attrs::new() })
            .collect()
    }
}
// docs:end:op-impl

/// Fewer elements than this per task are not worth a trip through the pool.
const MIN_CHUNK: usize = 16 * 1024;

/// A `gelu_tanh` instance (stateless: the op has no attributes).
pub struct GeluTanhKernel;

// docs:start:kernel
impl Kernel for GeluTanhKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let (x, y) = launch_args(GeluTanh::NAME, inputs, outputs)?;
        // Disjoint chunks of `y` (rows of one element) on the host's pool: each task gets
        // its own `&mut` chunk and the matching range of `x`.
        ctx.parallel_chunks_mut([y], 1, MIN_CHUNK, |range, [y]| {
            for (o, &v) in y.iter_mut().zip(&x[range]) {
                *o = fast_math::gelu_tanh(v);
            }
        })
    }
}
// docs:end:kernel
