//! CUDA provider of `dummy_fill` (kernels/cuda/fill.cu): no inputs; makes one f32/bf16/f16
//! (or f8_e4m3: the values' E4M3 codes) tensor of the `shape` attr whose elements follow the host's dummy-weight rule
//! (framework/src/weights/fill.rs): `kind = "uniform"` with `base` (u64 bit-cast to i64) and
//! `scale`, or `kind = "ones"`. The engine uses it to generate dummy weights on the GPU.

use crate::devargs::{check_ctx, device_ptr_mut, suffix, THREADS};
use crate::elementwise::ACT;
use crate::runtime::{self, Dims, Function, KernelArgs, KernelSource};
use rtllm_plugin_api::shapes::expect_args;
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

static SRC: KernelSource = crate::kernel_source!("fill.cu");

/// Grid-stride blocks: enough to fill the GPU, no more than the tensor needs.
const MAX_BLOCKS: usize = 132 * 8;

/// Provider of `dummy_fill` on CUDA.
pub struct DummyFill;

/// What one `dummy_fill` instance writes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FillParams {
    base: u64,
    scale: f32,
    ones: bool,
}

/// A CUDA `dummy_fill` instance.
pub struct DummyFillKernel {
    f: Function,
    dtype: DType,
    params: FillParams,
}

fn bad(message: String) -> PluginError {
    PluginError::new(format!("dummy_fill: {message}"))
}

/// The output meta from the `dtype` and `shape` attrs.
fn output_meta(inputs: &[TensorMeta], attrs: &Attrs) -> Result<TensorMeta, PluginError> {
    if !inputs.is_empty() {
        return Err(bad(format!("takes no inputs, got {}", inputs.len())));
    }
    let name = attrs.str("dtype")?;
    let dtype = DType::parse(name)
        .filter(|d| ACT.contains(d) || *d == DType::F8_E4M3)
        .ok_or_else(|| bad(format!("dtype must be f32, bf16, f16 or f8_e4m3, not '{name}'")))?;
    let dims = attrs.ints("shape")?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("shape {dims:?} has a negative dimension"))))
        .collect::<Result<Vec<usize>, _>>()?;
    Ok(TensorMeta::of(dtype, &shape))
}

fn params(attrs: &Attrs) -> Result<FillParams, PluginError> {
    match attrs.str_or("kind", "uniform")? {
        "ones" => Ok(FillParams { base: 0, scale: 1.0, ones: true }),
        "uniform" => {
            let scale = attrs.float("scale")?;
            if !scale.is_finite() {
                return Err(bad(format!("scale must be finite, got {scale}")));
            }
            Ok(FillParams { base: attrs.int("base")? as u64, scale: scale as f32, ones: false })
        }
        other => Err(bad(format!("kind must be 'uniform' or 'ones', not '{other}'"))),
    }
}

impl Op for DummyFill {
    const NAME: &'static str = "dummy_fill";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str =
        "no inputs -> f32/bf16/f16 [shape] of dummy weights (splitmix64 of base and index, or ones)";
    type Kernel = DummyFillKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = ACT.to_vec();
        d.push(DType::F8_E4M3);
        d
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![output_meta(inputs, attrs)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<DummyFillKernel, PluginError> {
        let dtype = output_meta(inputs, attrs)?.dtype;
        let params = params(attrs)?;
        let s = if dtype == DType::F8_E4M3 { "f8_e4m3" } else { suffix(Self::NAME, dtype)? };
        let f = runtime::function(&SRC, &format!("dummy_fill_{s}"))?;
        Ok(DummyFillKernel { f, dtype, params })
    }

    fn examples() -> Vec<OpExample> {
        let uniform = |dtype: DType, shape: &[i64], base: i64, scale: f64| OpExample {
            inputs: Vec::new().into(),
            attrs: Attrs::new()
                .with("dtype", dtype.to_string())
                .with("shape", shape.to_vec())
                .with("kind", "uniform")
                .with("base", base)
                .with("scale", scale),
        };
        vec![
            uniform(DType::F32, &[4096, 2048], 0x1234_5678_9abc_def0, 0.022),
            uniform(DType::BF16, &[513, 17], -7, 1.0),
            uniform(DType::F16, &[3, 1000], i64::MIN + 3, 0.5),
            OpExample {
                inputs: Vec::new().into(),
                attrs: Attrs::new().with("dtype", "bf16").with("shape", vec![2048i64]).with("kind", "ones"),
            },
        ]
    }
}

impl Kernel for DummyFillKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = DummyFill::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[0], outputs, 1)?;
        let n: usize = outputs[0].meta().concrete_shape()?.iter().product();
        if n == 0 {
            return Ok(());
        }
        let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
        let p = self.params;
        let args = KernelArgs::new()
            .u64(device_ptr_mut(OP, "out", &mut outputs[0], self.dtype)?)
            .u64(n as u64)
            .u64(p.base)
            .f32(p.scale)
            .i32(i32::from(p.ones));
        // SAFETY: the arguments match dummy_fill_<T>(out, n, base, scale, ones); out holds n elements.
        unsafe { runtime::launch(self.f, Dims::linear(blocks, THREADS), ctx.stream(), &args) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_from_attrs_and_refuses_bad_ones() {
        let attrs = DummyFill::examples()[1].attrs.clone();
        let out = DummyFill::infer(&[], &attrs).unwrap();
        assert_eq!(out, vec![TensorMeta::of(DType::BF16, &[513, 17])]);
        assert!(DummyFill::infer(&[TensorMeta::of(DType::F32, &[1])], &attrs).is_err());
        let q = Attrs::new().with("dtype", "q8_0").with("shape", vec![32i64]);
        assert!(DummyFill::infer(&[], &q).unwrap_err().to_string().contains("f16 or f8_e4m3"));
        let f8 = Attrs::new().with("dtype", "f8_e4m3").with("shape", vec![4i64, 8]);
        assert_eq!(DummyFill::infer(&[], &f8).unwrap(), vec![TensorMeta::of(DType::F8_E4M3, &[4, 8])]);
        let neg = Attrs::new().with("dtype", "f32").with("shape", vec![-1i64]);
        assert!(DummyFill::infer(&[], &neg).is_err());
        assert!(params(&Attrs::new().with("kind", "gauss")).is_err());
        assert_eq!(params(&attrs).unwrap(), FillParams { base: (-7i64) as u64, scale: 1.0, ones: false });
    }
}
