//! Launch-time helpers the CUDA providers of the norm, elementwise and matmul ops share:
//! checking that the context and every tensor are on the GPU (device pointers, contiguous,
//! dtype as at create), dtype suffixes of kernel entry points, and the i32 / grid-size
//! conversions with overflow checks. Nothing here touches device memory.

use rtllm_plugin_api::{DType, DeviceKind, InputView, LaunchContext, OutputView, PluginError};

/// Threads per block of the row/column kernels.
pub const THREADS: u32 = 256;

/// The entry-point suffix of a float dtype (`rmsnorm_bf16`, ...).
pub fn suffix(op: &str, dtype: DType) -> Result<&'static str, PluginError> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => Err(PluginError::new(format!("{op}: the CUDA kernels take f32, bf16 or f16, got {other}"))),
    }
}

/// Elements of `dtype` in one 16-byte vector (`Pack16<T>::N` in common.cuh).
pub fn pack_elems(dtype: DType) -> usize {
    16 / dtype.block_bytes().max(1)
}

/// Checks that a launch runs on a CUDA context.
pub fn check_ctx(op: &str, ctx: &LaunchContext) -> Result<(), PluginError> {
    if ctx.device() != DeviceKind::Cuda {
        return Err(PluginError::new(format!("{op}: a CUDA kernel was launched with a {} context", ctx.device())));
    }
    Ok(())
}

/// The device address of an input: on CUDA, contiguous, of dtype `dtype` (as at create) and
/// non-null unless empty.
pub fn device_ptr(op: &str, what: &str, arg: &InputView<'_>, dtype: DType) -> Result<u64, PluginError> {
    arg.device_ptr(DeviceKind::Cuda, dtype).map_err(|e| e.context(format_args!("{op}: {what}")))
}

/// The device address of an output, checked as [`device_ptr`].
pub fn device_ptr_mut(op: &str, what: &str, arg: &mut OutputView<'_>, dtype: DType) -> Result<u64, PluginError> {
    arg.device_ptr(DeviceKind::Cuda, dtype).map_err(|e| e.context(format_args!("{op}: {what}")))
}

/// The device address of an input the op updates in place (declared in `Op::IN_PLACE`).
pub fn in_place_ptr(op: &str, what: &str, arg: &mut InputView<'_>, dtype: DType) -> Result<u64, PluginError> {
    arg.device_ptr_mut(DeviceKind::Cuda, dtype).map_err(|e| e.context(format_args!("{op}: {what}")))
}

/// `v` as a kernel's i32 argument.
pub fn to_i32(op: &str, what: &str, v: usize) -> Result<i32, PluginError> {
    i32::try_from(v).map_err(|_| PluginError::new(format!("{op}: {what} = {v} exceeds the kernels' i32 range")))
}

/// `v` as a grid dimension no larger than `max`.
pub fn grid_dim(op: &str, what: &str, v: usize, max: u32) -> Result<u32, PluginError> {
    u32::try_from(v)
        .ok()
        .filter(|&g| g <= max)
        .ok_or_else(|| PluginError::new(format!("{op}: {what} needs {v} blocks, more than the grid allows ({max})")))
}

/// Largest grid.x and grid.y / grid.z.
pub const MAX_GRID_X: u32 = i32::MAX as u32;
pub const MAX_GRID_YZ: u32 = 65535;

/// Column chunks of a (rows, column chunks) grid over rows of `width` elements of `dtype`: each
/// thread of a [`THREADS`]-thread block owns one 16-byte group of columns.
pub fn column_chunks(width: usize, dtype: DType) -> usize {
    width.div_ceil(THREADS as usize * pack_elems(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::TensorMeta;

    #[test]
    fn sizes_and_suffixes() {
        assert_eq!(pack_elems(DType::F32), 4);
        assert_eq!(pack_elems(DType::BF16), 8);
        assert_eq!(suffix("x", DType::F16).unwrap(), "f16");
        assert!(suffix("x", DType::I32).unwrap_err().message().contains("f32, bf16 or f16"));
        assert_eq!(column_chunks(2048, DType::BF16), 1);
        assert_eq!(column_chunks(2049, DType::BF16), 2);
        assert_eq!(column_chunks(0, DType::F32), 0);
        assert!(to_i32("op", "h", 1 << 31).unwrap_err().message().contains("i32"));
        assert!(grid_dim("op", "rows", 70000, MAX_GRID_YZ).is_err());
    }

    #[test]
    fn host_tensors_and_contexts_are_refused() {
        let data = [0f32; 4];
        let arg = rtllm_plugin_api::testing::input(TensorMeta::of(DType::F32, &[4]), &data);
        let e = device_ptr("rmsnorm", "x", &arg, DType::F32).unwrap_err();
        assert!(e.message().contains("rmsnorm: x") && e.message().contains("not cuda"), "{e}");
        let e = check_ctx("rmsnorm", &rtllm_plugin_api::LaunchEnv::cpu_sequential().context()).unwrap_err();
        assert!(e.message().contains("cpu context"), "{e}");
        // SAFETY: device views are never dereferenced on the host.
        let mut dev = unsafe { InputView::new(TensorMeta::of(DType::F32, &[4]), 0x100 as *const u8, DeviceKind::Cuda) };
        assert_eq!(device_ptr("rmsnorm", "x", &dev, DType::F32).unwrap(), 0x100);
        assert!(device_ptr("rmsnorm", "x", &dev, DType::BF16).unwrap_err().message().contains("not bf16"));
        let e = in_place_ptr("paged_attention", "k_cache", &mut dev, DType::F32).unwrap_err();
        assert!(e.message().contains("read-only"), "{e}");
        // SAFETY: as above.
        let null = unsafe { InputView::new(TensorMeta::of(DType::F32, &[4]), std::ptr::null(), DeviceKind::Cuda) };
        assert!(device_ptr("rmsnorm", "x", &null, DType::F32).unwrap_err().message().contains("null"));
    }
}
