//! A deliberately simple second provider of `gelu_tanh`: the textbook formula in f64 with
//! `tanh`, one element after another on the calling thread.
//!
//! Why it exists: `rtllm plugins check` judges a provider against the built-in reference of
//! its op, and a new op has none. For such ops the check compares each provider with the
//! best *other* CPU provider of the same op, so shipping this obviously-correct version next
//! to the fast one gives the check something to compare against (each is checked against the
//! other). Its priority is far below the fast kernel's, so models never select it unless a
//! user pins it.

use crate::gelu::{infer_same_shape, launch_args};
use rtllm_plugin_api::{
    Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

// docs:start:reference
/// The reference provider of `gelu_tanh`.
pub struct GeluTanhReference;

impl Op for GeluTanhReference {
    const NAME: &'static str = "gelu_tanh";
    /// Below the fast provider: chosen only when pinned, or as what `plugins check` compares to.
    const PRIORITY: i32 = -100;
    const SUMMARY: &'static str = "gelu_tanh reference: f64 tanh formula, single-threaded (for plugins check)";
    type Kernel = GeluTanhReferenceKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        infer_same_shape(Self::NAME, inputs)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<GeluTanhReferenceKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(GeluTanhReferenceKernel)
    }

    fn examples() -> Vec<OpExample> {
        [&[1usize][..], &[7, 33], &[3, 5, 129]]
            .iter()
            .map(|dims| OpExample { inputs: vec![TensorMeta::of(DType::F32, dims)].into(), attrs: Attrs::new() })
            .collect()
    }
}

/// GELU (tanh approximation) of one value, straight from the definition.
pub fn gelu_tanh_f64(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// A reference `gelu_tanh` instance.
pub struct GeluTanhReferenceKernel;

impl Kernel for GeluTanhReferenceKernel {
    fn launch(
        &self,
        _ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let (x, y) = launch_args(GeluTanhReference::NAME, inputs, outputs)?;
        for (o, &v) in y.iter_mut().zip(x) {
            *o = gelu_tanh_f64(v as f64) as f32;
        }
        Ok(())
    }
}
// docs:end:reference
