//! The few CUDA driver calls the CUDA provider makes (through cudarc, loaded at run time):
//! whether a driver is present, the current context's device, and the asynchronous copies of
//! world_size 1 and of the axis layout transforms (capture-safe: plain and 2-D memcpy nodes).

use crate::error::NcclError;
use cudarc::driver::{result as drv, sys};
use std::ffi::c_void;
use std::sync::OnceLock;

fn driver_err(call: &str, e: impl std::fmt::Debug) -> NcclError {
    NcclError::Driver { call: call.to_string(), cause: format!("{e:?}") }
}

/// Whether libcuda loads and initialises in this process.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the library, then cuInit.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() } && drv::init().is_ok())
}

/// The device of the context current on this thread (the runtime makes rank r's device
/// current before creating its kernels).
pub fn current_device(rank: usize) -> Result<i32, NcclError> {
    if !driver_present() {
        return Err(NcclError::NoDriver);
    }
    if drv::ctx::get_current().map_err(|e| driver_err("cuCtxGetCurrent", e))?.is_none() {
        return Err(NcclError::NoContext { rank });
    }
    let mut dev = 0;
    // SAFETY: a context is current; writes one int.
    unsafe { sys::cuCtxGetDevice(&mut dev) }.result().map_err(|e| driver_err("cuCtxGetDevice", e))?;
    Ok(dev)
}

/// Copies `bytes` bytes device to device on `stream`.
///
/// # Safety
/// Both device ranges are valid and do not overlap (or are the same).
pub unsafe fn copy(dst: u64, src: u64, bytes: usize, stream: *mut c_void) -> Result<(), NcclError> {
    if bytes == 0 || dst == src {
        return Ok(());
    }
    drv::memcpy_dtod_async(dst, src, bytes, stream as sys::CUstream).map_err(|e| driver_err("cuMemcpyDtoDAsync", e))
}

/// A strided device-to-device copy: `rows` rows of `width` bytes, from `src` with a pitch of
/// `src_pitch` bytes to `dst` with a pitch of `dst_pitch` bytes, on `stream`.
///
/// # Safety
/// Both strided ranges are valid device memory and do not overlap.
pub unsafe fn copy_2d(
    dst: u64,
    dst_pitch: usize,
    src: u64,
    src_pitch: usize,
    width: usize,
    rows: usize,
    stream: *mut c_void,
) -> Result<(), NcclError> {
    if width == 0 || rows == 0 {
        return Ok(());
    }
    // Built field by field: CUmemorytype has no zero value, so a zeroed struct is invalid.
    let p = sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst_pitch,
        WidthInBytes: width,
        Height: rows,
    };
    sys::cuMemcpy2DAsync_v2(&p, stream as sys::CUstream).result().map_err(|e| driver_err("cuMemcpy2DAsync", e))
}

/// Whether `stream` is being captured into a CUDA graph (its work is recorded, not run).
pub fn is_capturing(stream: *mut c_void) -> Result<bool, NcclError> {
    let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // SAFETY: a stream of the current context; writes one status.
    unsafe { sys::cuStreamIsCapturing(stream as sys::CUstream, &mut status) }
        .result()
        .map_err(|e| driver_err("cuStreamIsCapturing", e))?;
    Ok(status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}
