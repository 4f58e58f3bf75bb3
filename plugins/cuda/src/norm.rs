//! CUDA providers of `rmsnorm` and `fused_add_rmsnorm` (kernels/cuda/norm.cu): one block per
//! row, f32 accumulation, 16-byte vector loads where aligned. Activations f32/bf16/f16 (the
//! outputs take x's dtype), weights any of f32/bf16/f16; shapes, dtypes and `eps` are checked
//! by plugin-api's shared `shapes::norm`, as the CPU providers do.

use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, grid_dim, pack_elems, suffix, to_i32, MAX_GRID_X};
use crate::runtime::{self, Dims, Function, KernelArgs, KernelSource};
use rtllm_plugin_api::shapes::norm::{check_weight_arg, eps, infer_fused_add_rmsnorm, infer_rmsnorm, rows_of};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

static SRC: KernelSource = crate::kernel_source!("norm.cu");

/// Activation dtypes of the CUDA norms.
const ACT: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// Threads per row: one 16-byte group of columns each, a multiple of 32, at most 1024.
pub fn threads_for_row(h: usize, dtype: DType) -> u32 {
    let groups = h.div_ceil(pack_elems(dtype));
    (groups.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// The kernel `<name>_<x dtype>_<w dtype>` for these metas.
fn lookup(op: &str, name: &str, x: &TensorMeta, w: &TensorMeta) -> Result<(Function, DType, DType), PluginError> {
    let f = runtime::function(&SRC, &format!("{name}_{}_{}", suffix(op, x.dtype)?, suffix(op, w.dtype)?))?;
    Ok((f, x.dtype, w.dtype))
}

/// Conformance shapes: (T, H, activation dtype, weight dtype).
const EXAMPLES: [(usize, usize, DType, DType); 10] = [
    (1, 7, DType::F32, DType::F32),
    (33, 7, DType::BF16, DType::BF16),
    (5, 64, DType::F16, DType::F16),
    (1, 2048, DType::BF16, DType::BF16),
    (33, 2048, DType::F16, DType::F32),
    (33, 2048, DType::F32, DType::F32),
    (1, 576, DType::F16, DType::F16),
    (7, 1000, DType::BF16, DType::F32),
    (2, 4096, DType::BF16, DType::BF16),
    (3, 4100, DType::F32, DType::BF16),
];

fn examples(residual: bool) -> Vec<OpExample> {
    EXAMPLES
        .iter()
        .enumerate()
        .map(|(i, &(t, h, xdt, wdt))| {
            let mut inputs = vec![TensorMeta::of(xdt, &[t, h])];
            if residual {
                inputs.push(TensorMeta::of(xdt, &[t, h]));
            }
            inputs.push(TensorMeta::of(wdt, &[h]));
            OpExample {
                inputs: inputs.into(),
                attrs: if i % 2 == 0 { Attrs::new() } else { Attrs::new().with("eps", 1e-5) },
            }
        })
        .collect()
}

/// Provider of `rmsnorm` on CUDA.
pub struct RmsNorm;

/// A CUDA `rmsnorm` instance.
pub struct RmsNormKernel {
    f: Function,
    eps: f32,
    x_dtype: DType,
    w_dtype: DType,
}

impl Op for RmsNorm {
    const NAME: &'static str = "rmsnorm";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str =
        "y = x / sqrt(mean(x²) + eps) * w over rows of x [T, H] (f32/bf16/f16, y like x); w [H] f32/bf16/f16; attr eps";
    type Kernel = RmsNormKernel;

    fn dtypes() -> Vec<DType> {
        ACT.to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        infer_rmsnorm(Self::NAME, inputs, attrs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<RmsNormKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        let (f, x_dtype, w_dtype) = lookup(Self::NAME, "rmsnorm", &inputs[0], &inputs[1])?;
        Ok(RmsNormKernel { f, eps: eps(Self::NAME, attrs)?, x_dtype, w_dtype })
    }

    fn examples() -> Vec<OpExample> {
        examples(false)
    }
}

impl Kernel for RmsNormKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = RmsNorm::NAME;
        check_ctx(OP, ctx)?;
        let (num_inputs, num_outputs) = (inputs.len(), outputs.len());
        let ([x, w], [y]) = (inputs, outputs) else {
            return Err(PluginError::new(format!(
                "{OP}: launch takes 2 inputs and 1 output, got {} and {}",
                num_inputs, num_outputs
            )));
        };
        let (t, h) = rows_of(OP, "x", x, None)?;
        rows_of(OP, "y", y, Some((t, h)))?;
        check_weight_arg(OP, w, h)?;
        let args = KernelArgs::new()
            .u64(device_ptr(OP, "x", x, self.x_dtype)?)
            .u64(device_ptr(OP, "w", w, self.w_dtype)?)
            .u64(device_ptr_mut(OP, "y", y, self.x_dtype)?)
            .i32(to_i32(OP, "T", t)?)
            .i32(to_i32(OP, "H", h)?)
            .f32(self.eps);
        if t == 0 || h == 0 {
            return Ok(());
        }
        let dims = Dims::linear(grid_dim(OP, "T", t, MAX_GRID_X)?, threads_for_row(h, self.x_dtype));
        // SAFETY: the arguments match rmsnorm_<T>_<W>(x, w, y, rows, h, eps) and the pointers
        // are the host's device tensors of the checked shapes.
        unsafe { runtime::launch(self.f, dims, ctx.stream(), &args) }
    }
}

/// Provider of `fused_add_rmsnorm` on CUDA.
pub struct FusedAddRmsNorm;

/// A CUDA `fused_add_rmsnorm` instance.
pub struct FusedAddRmsNormKernel {
    f: Function,
    eps: f32,
    x_dtype: DType,
    w_dtype: DType,
}

impl Op for FusedAddRmsNorm {
    const NAME: &'static str = "fused_add_rmsnorm";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "residual_out = x + residual (rounded to x's dtype); y = rmsnorm(residual_out) * w; \
                                   x, residual [T, H] f32/bf16/f16, w [H]; attr eps";
    type Kernel = FusedAddRmsNormKernel;

    fn dtypes() -> Vec<DType> {
        ACT.to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        infer_fused_add_rmsnorm(Self::NAME, inputs, attrs, &ACT)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<FusedAddRmsNormKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        let (f, x_dtype, w_dtype) = lookup(Self::NAME, "fused_add_rmsnorm", &inputs[0], &inputs[2])?;
        Ok(FusedAddRmsNormKernel { f, eps: eps(Self::NAME, attrs)?, x_dtype, w_dtype })
    }

    fn examples() -> Vec<OpExample> {
        examples(true)
    }
}

impl Kernel for FusedAddRmsNormKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        const OP: &str = FusedAddRmsNorm::NAME;
        check_ctx(OP, ctx)?;
        let (num_inputs, num_outputs) = (inputs.len(), outputs.len());
        let ([x, residual, w], [y, r_out]) = (inputs, outputs) else {
            return Err(PluginError::new(format!(
                "{OP}: launch takes 3 inputs and 2 outputs, got {} and {}",
                num_inputs, num_outputs
            )));
        };
        let (t, h) = rows_of(OP, "x", x, None)?;
        rows_of(OP, "residual", residual, Some((t, h)))?;
        rows_of(OP, "y", y, Some((t, h)))?;
        rows_of(OP, "residual_out", r_out, Some((t, h)))?;
        check_weight_arg(OP, w, h)?;
        let args = KernelArgs::new()
            .u64(device_ptr(OP, "x", x, self.x_dtype)?)
            .u64(device_ptr(OP, "residual", residual, self.x_dtype)?)
            .u64(device_ptr(OP, "w", w, self.w_dtype)?)
            .u64(device_ptr_mut(OP, "y", y, self.x_dtype)?)
            .u64(device_ptr_mut(OP, "residual_out", r_out, self.x_dtype)?)
            .i32(to_i32(OP, "T", t)?)
            .i32(to_i32(OP, "H", h)?)
            .f32(self.eps);
        if t == 0 || h == 0 {
            return Ok(());
        }
        let dims = Dims::linear(grid_dim(OP, "T", t, MAX_GRID_X)?, threads_for_row(h, self.x_dtype));
        // SAFETY: the arguments match fused_add_rmsnorm_<T>_<W>(x, residual, w, y, residual_out,
        // rows, h, eps) and the pointers are the host's device tensors of the checked shapes.
        unsafe { runtime::launch(self.f, dims, ctx.stream(), &args) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_cover_a_row_in_warps() {
        assert_eq!(threads_for_row(7, DType::F32), 32);
        assert_eq!(threads_for_row(2048, DType::BF16), 256);
        assert_eq!(threads_for_row(2048, DType::F32), 512);
        assert_eq!(threads_for_row(1 << 20, DType::F32), 1024);
        assert_eq!(threads_for_row(0, DType::F16), 32);
    }

    #[test]
    fn examples_infer_in_every_dtype() {
        let mut seen = std::collections::HashSet::new();
        for (op, ex) in [("rmsnorm", RmsNorm::examples()), ("fused_add_rmsnorm", FusedAddRmsNorm::examples())] {
            for e in ex {
                let out = if op == "rmsnorm" {
                    RmsNorm::infer(&e.inputs, &e.attrs).unwrap()
                } else {
                    FusedAddRmsNorm::infer(&e.inputs, &e.attrs).unwrap()
                };
                assert!(out.iter().all(|m| m.dtype == e.inputs[0].dtype), "{op}: outputs take x's dtype");
                seen.insert(e.inputs[0].dtype);
            }
        }
        assert_eq!(seen.len(), 3, "f32, bf16 and f16 examples");
    }

    #[test]
    fn bad_metas_are_errors_before_any_cuda_call() {
        let x = TensorMeta::of(DType::I32, &[2, 8]);
        let w = TensorMeta::of(DType::F32, &[8]);
        let e = RmsNorm::create(&[x, w], &Attrs::new()).err().expect("i32 activations are refused");
        assert!(e.message().contains("x must be f32, bf16 or f16 [T, H]"), "{e}");
    }
}
