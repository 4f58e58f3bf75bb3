//! CUDA providers of the row gathers `embedding` (ids [T] into a float table [V, H]) and
//! `gather_rows` (index [S] into x [T, H]); both run gather_rows_<T> of kernels/cuda/
//! elementwise.cu and copy rows bit for bit (16-byte accesses where aligned). The output has the
//! table's / x's dtype (f32/bf16/f16). The kernel cannot report an index outside the table
//! without a host sync, so such a row comes out as zeros (the CPU providers return an error).

use crate::devargs::{
    check_ctx, column_chunks, device_ptr, device_ptr_mut, grid_dim, to_i32, MAX_GRID_X, MAX_GRID_YZ, THREADS,
};
use crate::elementwise::{function, ACT};
use crate::runtime::{self, Dims, Function, KernelArgs};
use rtllm_plugin_api::shapes::{elementwise as shapes, expect_args, expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

/// One gather: `out[s] = table[index[s]]` for `count` rows of `h` out of `rows`.
struct Gather<'a, 'v, 'o> {
    op: &'static str,
    table: (&'static str, &'a InputView<'v>),
    index: (&'static str, &'a InputView<'v>),
    out: &'a mut OutputView<'o>,
    rows: usize,
    h: usize,
    count: usize,
}

fn launch_gather(f: Function, dtype: DType, ctx: &LaunchContext, g: Gather<'_, '_, '_>) -> Result<(), PluginError> {
    let op = g.op;
    let args = KernelArgs::new()
        .u64(device_ptr(op, g.table.0, g.table.1, dtype)?)
        .u64(device_ptr(op, g.index.0, g.index.1, DType::I32)?)
        .u64(device_ptr_mut(op, "out", g.out, dtype)?)
        .i32(to_i32(op, "table rows", g.rows)?)
        .i32(to_i32(op, "row width", g.h)?)
        .i32(to_i32(op, "gathered rows", g.count)?);
    if g.count == 0 || g.h == 0 {
        return Ok(());
    }
    let grid = (
        grid_dim(op, "rows", g.count, MAX_GRID_X)?,
        grid_dim(op, "columns", column_chunks(g.h, dtype), MAX_GRID_YZ)?,
        1,
    );
    // SAFETY: the arguments match gather_rows_<T>(x, index, out, rows, h, count); the kernel
    // reads only rows in 0..rows (others give zeros) and writes count rows of h.
    unsafe { runtime::launch(f, Dims { grid, block: (THREADS, 1, 1), shared_bytes: 0 }, ctx.stream(), &args) }
}

/// Provider of `embedding` (float tables) on CUDA.
pub struct Embedding;

/// A CUDA `embedding` instance.
pub struct EmbeddingKernel {
    f: Function,
    dtype: DType,
}

impl Op for Embedding {
    const NAME: &'static str = "embedding";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "ids [T] i32, table [V, H] f32/bf16/f16 -> [T, H] of the table's dtype; \
                                   an id outside 0..V gives a zero row";
    type Kernel = EmbeddingKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = ACT.to_vec();
        d.push(DType::I32);
        d
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::infer_embedding(inputs, &ACT, None)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<EmbeddingKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        let dtype = inputs[1].dtype;
        Ok(EmbeddingKernel { f: function(Self::NAME, "gather_rows", dtype)?, dtype })
    }

    fn examples() -> Vec<OpExample> {
        let cases = [
            (1usize, 50usize, 7usize, DType::F32),
            (33, 50, 7, DType::BF16),
            (1, 1000, 2048, DType::F16),
            (33, 1000, 2048, DType::BF16),
            (7, 33, 17, DType::F16),
            (64, 1000, 64, DType::F32),
        ];
        cases
            .iter()
            .map(|&(t, v, h, d)| OpExample {
                inputs: vec![TensorMeta::of(DType::I32, &[t]), TensorMeta::of(d, &[v, h])].into(),
                attrs: Attrs::new(),
            })
            .collect()
    }
}

impl Kernel for EmbeddingKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = Embedding::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[2], outputs, 1)?;
        let t = shape_of_rank(OP, "ids", &inputs[0], 1)?[0];
        let ts = shape_of_rank(OP, "table", &inputs[1], 2)?;
        expect_shape(OP, "out", &outputs[0], &[t, ts[1]])?;
        let g = Gather {
            op: OP,
            table: ("table", &inputs[1]),
            index: ("ids", &inputs[0]),
            out: &mut outputs[0],
            rows: ts[0],
            h: ts[1],
            count: t,
        };
        launch_gather(self.f, self.dtype, ctx, g)
    }
}

/// Provider of `gather_rows` on CUDA.
pub struct GatherRows;

/// A CUDA `gather_rows` instance.
pub struct GatherRowsKernel {
    f: Function,
    dtype: DType,
}

impl Op for GatherRows {
    const NAME: &'static str = "gather_rows";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "x [T, H] f32/bf16/f16, index [S] i32 -> [S, H] with out[s] = x[index[s]]; \
                                   an index outside 0..T gives a zero row";
    type Kernel = GatherRowsKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = ACT.to_vec();
        d.push(DType::I32);
        d
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::infer_gather_rows(inputs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<GatherRowsKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        let dtype = inputs[0].dtype;
        Ok(GatherRowsKernel { f: function(Self::NAME, "gather_rows", dtype)?, dtype })
    }

    fn examples() -> Vec<OpExample> {
        let cases = [
            (1usize, 7usize, 1usize, DType::F32),
            (33, 7, 3, DType::BF16),
            (33, 2048, 33, DType::F16),
            (64, 2048, 1, DType::BF16),
            (7, 33, 9, DType::F16),
            (5, 1, 9, DType::F32),
        ];
        cases
            .iter()
            .map(|&(t, h, s, d)| OpExample {
                inputs: vec![TensorMeta::of(d, &[t, h]), TensorMeta::of(DType::I32, &[s])].into(),
                attrs: Attrs::new(),
            })
            .collect()
    }
}

impl Kernel for GatherRowsKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = GatherRows::NAME;
        check_ctx(OP, ctx)?;
        expect_args(OP, inputs, &[2], outputs, 1)?;
        let xs = shape_of_rank(OP, "x", &inputs[0], 2)?;
        let s = shape_of_rank(OP, "index", &inputs[1], 1)?[0];
        expect_shape(OP, "out", &outputs[0], &[s, xs[1]])?;
        let g = Gather {
            op: OP,
            table: ("x", &inputs[0]),
            index: ("index", &inputs[1]),
            out: &mut outputs[0],
            rows: xs[0],
            h: xs[1],
            count: s,
        };
        launch_gather(self.f, self.dtype, ctx, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_take_the_table_dtype_and_quantized_tables_are_refused() {
        for e in Embedding::examples() {
            assert_eq!(Embedding::infer(&e.inputs, &e.attrs).unwrap()[0].dtype, e.inputs[1].dtype);
        }
        for e in GatherRows::examples() {
            assert_eq!(GatherRows::infer(&e.inputs, &e.attrs).unwrap()[0].dtype, e.inputs[0].dtype);
        }
        let q = [TensorMeta::of(DType::I32, &[2]), TensorMeta::of(DType::Q8_0, &[4, 64])];
        assert!(Embedding::infer(&q, &Attrs::new()).is_err());
    }
}
