//! CUDA `sample`: one token per row of logits on the GPU (greedy, or temperature + top-k +
//! top-p + a seeded draw), so whole logits never go to the host. The exact per-row semantics
//! and the random stream are documented in plugin-api `shapes::sampling` (shared with the CPU
//! provider and the reference). One block per row (kernels/cuda/sampling.cu): argmax, a radix
//! select of the threshold over the weights' f32 bit patterns, then a block prefix scan for
//! the drawn token. No workspace; the grid is the row count.

use crate::devargs::{device_ptr, device_ptr_mut};
use crate::kernel_source;
use crate::runtime::{self, Dims, Function, KernelArgs, KernelSource};
use cudarc::driver::sys::CUdevice_attribute;
use rtllm_plugin_api::shapes::sampling::{self, LOGITS, OP, SEEDS, TEMPERATURE, TOP_K, TOP_P};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

static SRC: KernelSource = kernel_source!("sampling.cu");

/// Threads per row block (SAMPLE_THREADS in sampling.cu).
pub const THREADS: u32 = 512;

/// Dynamic shared memory of a row block: per-warp f64 masses [warps][256], merged masses [256],
/// scan scratch [warps + 1] (f64), then per-warp u32 counts [warps][256] and merged counts [256].
pub const fn shared_bytes() -> u32 {
    let warps = THREADS / 32;
    (warps * 256 + 256 + warps + 1) * 8 + (warps * 256 + 256) * 4
}

pub struct Sample;

pub struct SampleKernel {
    dtype: DType,
    f: Function,
    /// Whether the device runs thread-block clusters (sm_90+).
    clusters: bool,
    sms: usize,
}

/// Blocks per row: a cluster of 8 splits the argmax scan of a few rows (one block per row
/// would leave the GPU idle: 21 µs for one 128K-vocabulary bf16 row on an H100); with rows
/// enough to fill the multiprocessors, or without clusters, one block per row.
pub fn argmax_cluster(rows: usize, sms: usize, clusters: bool) -> usize {
    if clusters && rows * 2 <= sms {
        8
    } else {
        1
    }
}

fn suffix(d: DType) -> Result<&'static str, PluginError> {
    match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => Err(PluginError::new(format!("{OP} (cuda): logits dtype {other} is not f32, bf16 or f16"))),
    }
}

/// The examples' metas: `l` rows of `v` logits of `dtype`.
pub fn example_inputs(dtype: DType, l: usize, v: usize) -> Vec<TensorMeta> {
    vec![
        TensorMeta::of(dtype, &[l, v]),
        TensorMeta::of(DType::F32, &[l]),
        TensorMeta::of(DType::I32, &[l]),
        TensorMeta::of(DType::F32, &[l]),
        TensorMeta::of(DType::I64, &[l]),
    ]
}

impl Op for Sample {
    const NAME: &'static str = OP;
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "one token per logits row on the GPU: logits [L, V] (f32/bf16/f16), temperature [L] \
        f32 (<= 0: greedy argmax), top_k [L] i32 (0 = off), top_p [L] f32 (1 = off), seeds [L] i64 -> tokens [L] i32. \
        Ties at the top-k/top-p threshold are kept; the draw is u = (splitmix64(seed) >> 11) * 2^-53 over the kept \
        mass in vocabulary order (exact rules: plugin-api shapes::sampling).";
    type Kernel = SampleKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        sampling::infer(inputs, &DType::FLOATS)
    }

    fn create(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<SampleKernel, PluginError> {
        sampling::infer(inputs, &DType::FLOATS)?;
        let dtype = inputs[LOGITS].dtype;
        let f = runtime::function(&SRC, &format!("sample_{}", suffix(dtype)?))?;
        runtime::set_max_dynamic_shared(f, shared_bytes())?;
        let major = runtime::device_attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let sms = runtime::device_attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        Ok(SampleKernel { dtype, f, clusters: major >= 9, sms: sms.max(1) as usize })
    }

    fn examples() -> Vec<OpExample> {
        [(DType::F32, 6, 1000), (DType::BF16, 8, 4099), (DType::F16, 5, 515), (DType::F32, 3, 32000)]
            .into_iter()
            .map(|(d, l, v)| OpExample { inputs: example_inputs(d, l, v).into(), attrs: Attrs::new() })
            .collect()
    }
}

impl Kernel for SampleKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let (l, v) = sampling::check_launch(inputs, outputs)?;
        if inputs[LOGITS].meta().dtype != self.dtype {
            return Err(PluginError::new(format!(
                "{OP} (cuda): created for {} logits, launched with {}",
                self.dtype,
                inputs[LOGITS].meta()
            )));
        }
        let addr = |i: usize, what: &str, dtype: DType| device_ptr(OP, what, &inputs[i], dtype);
        let ins = [
            addr(LOGITS, "logits", self.dtype)?,
            addr(TEMPERATURE, "temperature", DType::F32)?,
            addr(TOP_K, "top_k", DType::I32)?,
            addr(TOP_P, "top_p", DType::F32)?,
            addr(SEEDS, "seeds", DType::I64)?,
        ];
        let tokens = device_ptr_mut(OP, "tokens", &mut outputs[0], DType::I32)?;
        if l == 0 {
            return Ok(());
        }
        if l > i32::MAX as usize {
            return Err(PluginError::new(format!("{OP} (cuda): {l} rows exceed the grid")));
        }
        let cl = argmax_cluster(l, self.sms, self.clusters);
        let args =
            ins.iter().fold(KernelArgs::new(), |a, &p| a.u64(p)).u64(tokens).i32(l as i32).i32(v as i32).i32(cl as i32);
        let blocks = l.checked_mul(cl).filter(|&b| b <= i32::MAX as usize);
        let blocks = blocks.ok_or_else(|| PluginError::new(format!("{OP} (cuda): {l} rows exceed the grid")))?;
        let dims = Dims { grid: (blocks as u32, 1, 1), block: (THREADS, 1, 1), shared_bytes: shared_bytes() };
        if cl > 1 {
            // SAFETY: as below; the grid is whole clusters of `cl` blocks (one row each).
            return unsafe { runtime::launch_clustered(self.f, dims, cl as u32, ctx.stream(), &args) };
        }
        // SAFETY: the arguments match sample_<dtype>'s parameters; the pointers are device
        // tensors of the checked shapes; the kernel reads row r < L of V logits.
        unsafe { runtime::launch(self.f, dims, ctx.stream(), &args) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_rows_split_their_argmax_across_a_cluster() {
        assert_eq!(argmax_cluster(1, 132, true), 8);
        assert_eq!(argmax_cluster(66, 132, true), 8);
        assert_eq!(argmax_cluster(67, 132, true), 1);
        assert_eq!(argmax_cluster(1, 132, false), 1);
    }

    #[test]
    fn shared_memory_matches_the_kernel_layout() {
        // 16 warps: (16*256 + 256 + 17) f64 + (16*256 + 256) u32.
        assert_eq!(shared_bytes(), 4369 * 8 + 4352 * 4);
        assert!(shared_bytes() < 227 * 1024);
        let src = SRC.text;
        assert!(src.contains("#define SAMPLE_THREADS 512"), "THREADS matches the kernel");
    }

    #[test]
    fn examples_infer_i32_tokens() {
        for ex in Sample::examples() {
            let out = Sample::infer(&ex.inputs, &ex.attrs).unwrap();
            assert_eq!(out, vec![TensorMeta::of(DType::I32, &[ex.inputs[0].dims[0].known().unwrap()])]);
        }
        let mut bad = example_inputs(DType::F32, 2, 10);
        bad[TOP_K] = TensorMeta::of(DType::F32, &[2]);
        assert!(Sample::infer(&bad, &Attrs::new()).unwrap_err().message().contains("top_k must be i32"));
    }
}
