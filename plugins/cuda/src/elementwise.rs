//! CUDA providers of `add` and `silu_mul` (kernels/cuda/elementwise.cu), f32/bf16/f16 in and
//! out, f32 arithmetic, 16-byte vector accesses where aligned. Shapes and dtypes are checked by
//! plugin-api's shared `shapes::elementwise`, as the CPU providers do.

use crate::devargs::{
    check_ctx, column_chunks, device_ptr, device_ptr_mut, grid_dim, pack_elems, suffix, to_i32, MAX_GRID_X,
    MAX_GRID_YZ, THREADS,
};
use crate::runtime::{self, Dims, Function, KernelArgs, KernelSource};
use rtllm_plugin_api::shapes::{elementwise as shapes, expect_args, expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

pub(crate) static SRC: KernelSource = crate::kernel_source!("elementwise.cu");

/// Activation dtypes of the CUDA elementwise ops.
pub(crate) const ACT: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// At most this many blocks for a grid-stride kernel (a few waves of 132 SMs).
const MAX_STRIDE_BLOCKS: usize = 132 * 16;

/// `<name>_<dtype suffix>` of elementwise.cu.
pub(crate) fn function(op: &str, name: &str, dtype: DType) -> Result<Function, PluginError> {
    runtime::function(&SRC, &format!("{name}_{}", suffix(op, dtype)?))
}

/// Blocks of a grid-stride kernel over `n` elements of `dtype` (16-byte groups per thread).
pub(crate) fn stride_blocks(n: usize, dtype: DType) -> u32 {
    n.div_ceil(pack_elems(dtype)).div_ceil(THREADS as usize).clamp(1, MAX_STRIDE_BLOCKS) as u32
}

/// Provider of `add` on CUDA.
pub struct Add;

/// A CUDA `add` instance.
pub struct AddKernel {
    f: Function,
    dtype: DType,
}

impl Op for Add {
    const NAME: &'static str = "add";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "out = a + b for two tensors of one shape and dtype (f32/bf16/f16)";
    type Kernel = AddKernel;

    fn dtypes() -> Vec<DType> {
        ACT.to_vec()
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::infer_add(inputs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<AddKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(AddKernel { f: function(Self::NAME, "add", inputs[0].dtype)?, dtype: inputs[0].dtype })
    }

    fn examples() -> Vec<OpExample> {
        let shapes: [&[usize]; 6] = [&[1, 7], &[1, 2048], &[33, 2048], &[7, 33], &[3, 5, 129], &[4096]];
        shapes
            .iter()
            .enumerate()
            .map(|(i, dims)| {
                let d = ACT[i % 3];
                OpExample { inputs: vec![TensorMeta::of(d, dims), TensorMeta::of(d, dims)].into(), attrs: Attrs::new() }
            })
            .collect()
    }
}

impl Kernel for AddKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = Add::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[2], outputs, 1)?;
        let shape = inputs[0].shape()?;
        expect_shape(OP, "b", &inputs[1], &shape)?;
        expect_shape(OP, "out", &outputs[0], &shape)?;
        let n = inputs[0].numel();
        let args = KernelArgs::new()
            .u64(device_ptr(OP, "a", &inputs[0], self.dtype)?)
            .u64(device_ptr(OP, "b", &inputs[1], self.dtype)?)
            .u64(device_ptr_mut(OP, "out", &mut outputs[0], self.dtype)?)
            .i64(n as i64);
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the arguments match add_<T>(a, b, out, n) over n elements of each tensor.
        unsafe { runtime::launch(self.f, Dims::linear(stride_blocks(n, self.dtype), THREADS), ctx.stream(), &args) }
    }
}

/// Provider of `silu_mul` on CUDA.
pub struct SiluMul;

/// A CUDA `silu_mul` instance.
pub struct SiluMulKernel {
    f: Function,
    dtype: DType,
}

impl Op for SiluMul {
    const NAME: &'static str = "silu_mul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str =
        "silu(gate) * up: gate [T, I] and up [T, I], or one fused [T, 2I] (gate first) -> [T, I]; f32/bf16/f16";
    type Kernel = SiluMulKernel;

    fn dtypes() -> Vec<DType> {
        ACT.to_vec()
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::infer_silu_mul(inputs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<SiluMulKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(SiluMulKernel { f: function(Self::NAME, "silu_mul", inputs[0].dtype)?, dtype: inputs[0].dtype })
    }

    fn examples() -> Vec<OpExample> {
        let two = |d, t: usize, i: usize| vec![TensorMeta::of(d, &[t, i]), TensorMeta::of(d, &[t, i])];
        let one = |d, t: usize, i: usize| vec![TensorMeta::of(d, &[t, 2 * i])];
        [
            two(DType::F32, 1, 7),
            two(DType::BF16, 33, 7),
            two(DType::F16, 1, 2048),
            two(DType::BF16, 33, 2048),
            two(DType::F32, 5, 37),
            one(DType::F32, 1, 1536),
            one(DType::BF16, 33, 2048),
            one(DType::F16, 9, 13),
            one(DType::F16, 4, 8192),
        ]
        .into_iter()
        .map(|inputs| OpExample { inputs: inputs.into(), attrs: Attrs::new() })
        .collect()
    }
}

impl Kernel for SiluMulKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = SiluMul::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[1, 2], outputs, 1)?;
        let shape = shape_of_rank(OP, "input", &inputs[0], 2)?;
        let fused = inputs.len() == 1;
        let (rows, width) = (shape[0], if fused { shape[1] / 2 } else { shape[1] });
        if fused && shape[1] % 2 != 0 {
            return Err(PluginError::new(format!("{OP}: fused gate|up width {} is odd", shape[1])));
        }
        if !fused {
            expect_shape(OP, "up", &inputs[1], &shape)?;
        }
        expect_shape(OP, "out", &outputs[0], &[rows, width])?;
        let gate = device_ptr(OP, "gate", &inputs[0], self.dtype)?;
        // The fused input's up half starts `width` elements into each row of 2·width.
        let up = match inputs.get(1) {
            Some(up) => device_ptr(OP, "up", up, self.dtype)?,
            None => gate + (width * self.dtype.block_bytes()) as u64,
        };
        let out = device_ptr_mut(OP, "out", &mut outputs[0], self.dtype)?;
        // SAFETY: checked device tensors; gate and up rows are shape[1] elements apart inside
        // the input tensor(s).
        unsafe { launch_silu_mul(OP, self.f, self.dtype, gate, up, out, rows, width, shape[1], ctx.stream()) }
    }
}

/// Enqueues silu_mul_<T> (`f`, of `dtype`): out[r, c] = silu(gate[r, c]) · up[r, c] for `rows` rows of
/// `width`, gate and up rows `in_stride` elements apart, out rows `width` apart.
///
/// # Safety
/// Device pointers of `f`'s dtype valid for those rows; out does not overlap the inputs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_silu_mul(
    op: &str,
    f: Function,
    dtype: DType,
    gate: u64,
    up: u64,
    out: u64,
    rows: usize,
    width: usize,
    in_stride: usize,
    stream: *mut std::ffi::c_void,
) -> Result<(), PluginError> {
    if rows == 0 || width == 0 {
        return Ok(());
    }
    let args = KernelArgs::new()
        .u64(gate)
        .u64(up)
        .u64(out)
        .i32(to_i32(op, "T", rows)?)
        .i32(to_i32(op, "I", width)?)
        .i64(in_stride as i64);
    let grid = (grid_dim(op, "T", rows, MAX_GRID_X)?, grid_dim(op, "I", column_chunks(width, dtype), MAX_GRID_YZ)?, 1);
    let dims = Dims { grid, block: (THREADS, 1, 1), shared_bytes: 0 };
    // SAFETY: the arguments match silu_mul_<T>(gate, up, out, rows, width, in_stride).
    unsafe { runtime::launch(f, dims, stream, &args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_stride_blocks_are_bounded() {
        assert_eq!(stride_blocks(1, DType::F32), 1);
        assert_eq!(stride_blocks(4 * 256 + 1, DType::F32), 2);
        assert_eq!(stride_blocks(1 << 30, DType::BF16), MAX_STRIDE_BLOCKS as u32);
    }

    #[test]
    fn examples_cover_the_dtypes() {
        for ex in [Add::examples(), SiluMul::examples()] {
            let dtypes: std::collections::HashSet<_> = ex.iter().map(|e| e.inputs[0].dtype).collect();
            assert_eq!(dtypes.len(), 3);
        }
        for e in SiluMul::examples() {
            assert_eq!(SiluMul::infer(&e.inputs, &e.attrs).unwrap()[0].dtype, e.inputs[0].dtype);
        }
        for e in Add::examples() {
            assert_eq!(Add::infer(&e.inputs, &e.attrs).unwrap()[0], e.inputs[0]);
        }
    }
}
