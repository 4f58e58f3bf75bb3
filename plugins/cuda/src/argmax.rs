//! CUDA provider of `argmax` (argmax_<T> of kernels/cuda/elementwise.cu): logits [S, V]
//! f32/bf16/f16 → [S] i32, the first index of each row's maximum where NaN never wins (0 for an
//! all-NaN row), as the CPU provider. One block per row.

use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, grid_dim, to_i32, MAX_GRID_X};
use crate::elementwise::{function, ACT};
use crate::runtime::{self, Dims, Function, KernelArgs};
use rtllm_plugin_api::shapes::{elementwise as shapes, expect_args, expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

/// Threads per row: a multiple of 32 up to 1024, no more than the row needs.
pub fn threads_for_vocab(v: usize) -> u32 {
    (v.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Provider of `argmax` on CUDA.
pub struct Argmax;

/// A CUDA `argmax` instance.
pub struct ArgmaxKernel {
    f: Function,
    dtype: DType,
}

impl Op for Argmax {
    const NAME: &'static str = "argmax";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str =
        "logits [S, V] f32/bf16/f16 -> [S] i32, the first index of each row's max (NaN never wins)";
    type Kernel = ArgmaxKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = ACT.to_vec();
        d.push(DType::I32);
        d
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::infer_argmax(inputs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<ArgmaxKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        let dtype = inputs[0].dtype;
        Ok(ArgmaxKernel { f: function(Self::NAME, "argmax", dtype)?, dtype })
    }

    fn examples() -> Vec<OpExample> {
        let cases = [
            (1usize, 49152usize, DType::F32),
            (3, 7, DType::BF16),
            (17, 1001, DType::F16),
            (4, 1, DType::F32),
            (1, 32000, DType::BF16),
            (33, 4096, DType::F16),
        ];
        cases
            .iter()
            .map(|&(s, v, d)| OpExample { inputs: vec![TensorMeta::of(d, &[s, v])].into(), attrs: Attrs::new() })
            .collect()
    }
}

impl Kernel for ArgmaxKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = Argmax::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[1], outputs, 1)?;
        let shape = shape_of_rank(OP, "logits", &inputs[0], 2)?;
        expect_shape(OP, "out", &outputs[0], &shape[..1])?;
        let (s, v) = (shape[0], shape[1]);
        let args = KernelArgs::new()
            .u64(device_ptr(OP, "logits", &inputs[0], self.dtype)?)
            .u64(device_ptr_mut(OP, "out", &mut outputs[0], DType::I32)?)
            .i32(to_i32(OP, "rows", s)?)
            .i32(to_i32(OP, "vocabulary", v)?);
        if s == 0 {
            return Ok(());
        }
        let dims = Dims::linear(grid_dim(OP, "rows", s, MAX_GRID_X)?, threads_for_vocab(v));
        // SAFETY: the arguments match argmax_<T>(logits, out, count, v): s rows of v logits in,
        // s i32 out.
        unsafe { runtime::launch(self.f, dims, ctx.stream(), &args) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(threads_for_vocab(0), 32);
        assert_eq!(threads_for_vocab(7), 32);
        assert_eq!(threads_for_vocab(33), 64);
        assert_eq!(threads_for_vocab(128_256), 1024);
    }

    #[test]
    fn examples_infer() {
        for e in Argmax::examples() {
            let out = Argmax::infer(&e.inputs, &e.attrs).unwrap();
            assert_eq!(out[0], TensorMeta::new(DType::I32, [e.inputs[0].dims[0].clone()]));
        }
    }
}
