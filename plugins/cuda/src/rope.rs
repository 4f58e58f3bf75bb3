//! CUDA provider of `rope` (rope_<T> of kernels/cuda/elementwise.cu): rotary embedding of packed
//! heads x [T, heads·head_dim] (f32/bf16/f16, out like x) at positions [T] i32, neox or
//! interleaved pairs, partial rotary, none/linear/llama3 frequency scaling. The attributes are
//! parsed by plugin-api's shared `shapes::elementwise::RopeAttrs`; the kernel computes each
//! pair's frequency from them exactly as the CPU's rope_freqs.rs does (nothing is uploaded).
//! Negative positions (an error on the CPU, which reads them) rotate backwards here.

use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, grid_dim, to_i32, MAX_GRID_X, MAX_GRID_YZ};
use crate::elementwise::{function, ACT};
use crate::runtime::{self, Dims, Function, KernelArgs};
use rtllm_plugin_api::shapes::elementwise::{self as shapes, RopeAttrs, RopeScaling, RopeStyle};
use rtllm_plugin_api::shapes::{expect_args, expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Dim, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

/// Threads per block.
const THREADS: u32 = 128;
/// Pairs a block aims to rotate (several heads of one token share its cos/sin table).
const PAIRS_PER_BLOCK: usize = 512;
/// Largest cos/sin table in shared memory.
const MAX_SHARED: usize = 48 * 1024;

/// The scaling as the kernel's (kind, factor, low_freq_factor, high_freq_factor,
/// original_max_position_embeddings) arguments.
/// The `rope` attributes of a Llama-3 model (theta 500000, llama3 scaling with `factor`), for
/// the examples of the ops that rotate.
pub fn llama3_rope_attrs(head_dim: usize, factor: f64) -> Attrs {
    Attrs::new()
        .with("head_dim", head_dim)
        .with("theta", 500000.0)
        .with("scaling_type", "llama3")
        .with("scaling_factor", factor)
        .with("low_freq_factor", 1.0)
        .with("high_freq_factor", 4.0)
        .with("original_max_position_embeddings", 8192usize)
}

pub fn scaling_args(s: RopeScaling) -> (i32, f32, f32, f32, f32) {
    match s {
        RopeScaling::None => (0, 1.0, 1.0, 1.0, 1.0),
        RopeScaling::Linear { factor } => (1, factor, 1.0, 1.0, 1.0),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            (2, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
        }
    }
}

/// Heads per block and the (tokens, head groups) grid for `heads` heads of `rotary_dim`.
pub fn head_groups(heads: usize, rotary_dim: usize) -> (usize, usize) {
    let per = (PAIRS_PER_BLOCK / (rotary_dim / 2).max(1)).clamp(1, heads.max(1));
    (per, heads.div_ceil(per))
}

/// Provider of `rope` on CUDA.
pub struct Rope;

/// A CUDA `rope` instance.
pub struct RopeKernel {
    f: Function,
    dtype: DType,
    attrs: RopeAttrs,
}

impl Op for Rope {
    const NAME: &'static str = "rope";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "rotary embedding: x [T, heads*head_dim] f32/bf16/f16, positions [T] i32 -> like x; \
        attrs head_dim, theta, style neox|interleaved, rotary_dim, scaling_type none|linear|llama3, scaling_factor, \
        low_freq_factor, high_freq_factor, original_max_position_embeddings";
    type Kernel = RopeKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = ACT.to_vec();
        d.push(DType::I32);
        d
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::infer_rope(inputs, attrs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<RopeKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        let a = RopeAttrs::from_attrs(attrs)?;
        if a.rotary_dim / 2 * 2 * std::mem::size_of::<f32>() > MAX_SHARED {
            return Err(PluginError::new(format!(
                "rope: rotary_dim {} is too large for the CUDA kernel",
                a.rotary_dim
            )));
        }
        let dtype = inputs[0].dtype;
        Ok(RopeKernel { f: function(Self::NAME, "rope", dtype)?, dtype, attrs: a })
    }

    fn examples() -> Vec<OpExample> {
        let ex = |d: DType, t: usize, heads: usize, attrs: Attrs| {
            let hd = attrs.usize("head_dim").unwrap_or(1);
            OpExample {
                inputs: vec![TensorMeta::of(d, &[t, heads * hd]), TensorMeta::of(DType::I32, &[t])].into(),
                attrs,
            }
        };
        let llama3 = llama3_rope_attrs(128, 8.0);
        vec![
            ex(DType::F32, 1, 9, Attrs::new().with("head_dim", 64usize)),
            ex(DType::BF16, 33, 32, Attrs::new().with("head_dim", 64usize).with("theta", 100000.0)),
            ex(DType::F16, 5, 4, Attrs::new().with("head_dim", 18usize).with("style", "interleaved")),
            ex(DType::F32, 3, 2, Attrs::new().with("head_dim", 80usize).with("rotary_dim", 32usize)),
            ex(
                DType::BF16,
                4,
                2,
                Attrs::new().with("head_dim", 32usize).with("scaling_type", "linear").with("scaling_factor", 2.0),
            ),
            ex(DType::F16, 1, 32, llama3.clone()),
            ex(DType::F32, 33, 8, llama3),
        ]
    }
}

impl Kernel for RopeKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = Rope::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[2], outputs, 1)?;
        let shape = shape_of_rank(OP, "x", &inputs[0], 2)?;
        let (t, width) = (shape[0], shape[1]);
        shapes::check_rope_width(self.attrs.head_dim, &Dim::from(width))?;
        expect_shape(OP, "positions", &inputs[1], &[t])?;
        expect_shape(OP, "out", &outputs[0], &shape)?;
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let positions = device_ptr(OP, "positions", &inputs[1], DType::I32)?;
        let out = device_ptr_mut(OP, "out", &mut outputs[0], self.dtype)?;
        // SAFETY: x and out hold t rows of width (checked above), positions t ints.
        unsafe { launch_rope(OP, self.f, &self.attrs, x, positions, out, t, width, ctx.stream()) }
    }
}

/// Enqueues rope_<T> (`f`): out = x rotated at `positions` for `t` rows of `width` (whole heads
/// of `a.head_dim`). `out` may be `x`.
///
/// # Safety
/// Device pointers of `f`'s dtype valid for t rows of width; positions holds t i32.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_rope(
    op: &str,
    f: Function,
    a: &RopeAttrs,
    x: u64,
    positions: u64,
    out: u64,
    t: usize,
    width: usize,
    stream: *mut std::ffi::c_void,
) -> Result<(), PluginError> {
    let heads = width / a.head_dim.max(1);
    let (per_block, groups) = head_groups(heads, a.rotary_dim);
    let (kind, factor, low, high, old) = scaling_args(a.scaling);
    let args = KernelArgs::new()
        .u64(x)
        .u64(positions)
        .u64(out)
        .i32(to_i32(op, "T", t)?)
        .i32(to_i32(op, "heads", heads)?)
        .i32(to_i32(op, "head_dim", a.head_dim)?)
        .i32(to_i32(op, "rotary_dim", a.rotary_dim)?)
        .i32(i32::from(a.style == RopeStyle::Interleaved))
        .i32(to_i32(op, "heads per block", per_block)?)
        .f32(a.theta as f32)
        .i32(kind)
        .f32(factor)
        .f32(low)
        .f32(high)
        .f32(old);
    if t == 0 || heads == 0 {
        return Ok(());
    }
    let dims = Dims {
        grid: (grid_dim(op, "T", t, MAX_GRID_X)?, grid_dim(op, "head groups", groups, MAX_GRID_YZ)?, 1),
        block: (THREADS, 1, 1),
        shared_bytes: (a.rotary_dim / 2 * 2 * std::mem::size_of::<f32>()) as u32,
    };
    // SAFETY: the arguments match rope_<T>(x, positions, out, tokens, heads, head_dim,
    // rotary_dim, interleaved, heads_per_block, theta, scaling, factor, low, high, old); the
    // caller vouches for the buffers; shared memory holds the table.
    unsafe { runtime::launch(f, dims, stream, &args) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_and_scaling_args() {
        assert_eq!(head_groups(32, 128), (8, 4));
        assert_eq!(head_groups(9, 64), (9, 1));
        assert_eq!(head_groups(3, 4096), (1, 3));
        assert_eq!(head_groups(0, 64), (1, 0));
        let l3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        assert_eq!(scaling_args(l3), (2, 8.0, 1.0, 4.0, 8192.0));
        assert_eq!(scaling_args(RopeScaling::Linear { factor: 2.0 }).0, 1);
    }

    #[test]
    fn examples_infer_and_bad_attrs_fail_before_cuda() {
        for e in Rope::examples() {
            assert_eq!(Rope::infer(&e.inputs, &e.attrs).unwrap()[0], e.inputs[0]);
        }
        let x = [TensorMeta::of(DType::BF16, &[2, 64]), TensorMeta::of(DType::I32, &[2])];
        let e = Rope::create(&x, &Attrs::new().with("head_dim", 64usize).with("style", "gptj")).err().unwrap();
        assert!(e.message().contains("style"), "{e}");
    }
}
