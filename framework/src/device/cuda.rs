//! The CUDA device as the engine sees it, through cudarc's driver API loaded at run time: a
//! primary context bound to the calling thread, one stream, device and pinned host
//! allocations, copies, memory info, and CUDA graphs captured from that stream.

use cudarc::driver::{result as drv, sys};
use std::ffi::c_void;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA is not available: {0}")]
    Unavailable(String),
    #[error("{what}: {message}")]
    Driver { what: String, message: String },
}

fn driver_err(what: impl std::fmt::Display, e: drv::DriverError) -> CudaError {
    CudaError::Driver { what: what.to_string(), message: format!("{e:?}") }
}

/// Whether a CUDA driver can be loaded and initialised here, and how many devices it sees.
pub fn device_count() -> usize {
    // SAFETY: only tries to dlopen libcuda.
    if !unsafe { sys::is_culib_present() } || drv::init().is_err() {
        return 0;
    }
    drv::device::get_count().map(|n| n.max(0) as usize).unwrap_or(0)
}

/// One GPU: its primary context and the stream the engine launches on.
pub struct CudaDevice {
    pub ordinal: usize,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    name: String,
}

// SAFETY: driver handles are usable from any thread once the context is bound there
// (`bind` does that; every method that talks to the driver calls it).
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens device `ordinal`: retains its primary context, binds it to this thread, and
    /// creates a non-blocking stream.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        let n = device_count();
        if n == 0 {
            return Err(CudaError::Unavailable(
                "libcuda could not be loaded or found no GPU (is the NVIDIA driver installed?)".into(),
            ));
        }
        if ordinal >= n {
            return Err(CudaError::Unavailable(format!("device {ordinal} requested, {n} present")));
        }
        let dev = drv::device::get(ordinal as i32).map_err(|e| driver_err("cuDeviceGet", e))?;
        let name = drv::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
        // SAFETY: a valid device; the primary context is released in Drop.
        let ctx = unsafe { drv::primary_ctx::retain(dev) }.map_err(|e| driver_err("cuDevicePrimaryCtxRetain", e))?;
        // SAFETY: a live context.
        unsafe { drv::ctx::set_current(ctx) }.map_err(|e| driver_err("cuCtxSetCurrent", e))?;
        let stream =
            drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(|e| driver_err("cuStreamCreate", e))?;
        Ok(Arc::new(CudaDevice { ordinal, ctx, stream, name }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes this device's context current on the calling thread (cheap; call before any
    /// driver work on a thread that may not have it).
    pub fn bind(&self) -> Result<(), CudaError> {
        // SAFETY: the context lives as long as `self`.
        unsafe { drv::ctx::set_current(self.ctx) }.map_err(|e| driver_err("cuCtxSetCurrent", e))
    }

    /// The raw `CUstream` kernels launch on.
    pub fn stream(&self) -> *mut c_void {
        self.stream as *mut c_void
    }

    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: our stream.
        unsafe { drv::stream::synchronize(self.stream) }.map_err(|e| driver_err("cuStreamSynchronize", e))
    }

    /// (free, total) bytes of device memory.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        self.bind()?;
        drv::mem_get_info().map_err(|e| driver_err("cuMemGetInfo", e))
    }

    /// `len` zeroed bytes of device memory.
    pub fn alloc_zeroed(self: &Arc<Self>, len: usize) -> Result<DeviceBuffer, CudaError> {
        self.bind()?;
        let bytes = len.max(1).div_ceil(256) * 256;
        // SAFETY: a plain allocation, zeroed before use.
        let ptr = unsafe { drv::malloc_sync(bytes) }
            .map_err(|e| driver_err(format_args!("cuMemAlloc of {bytes} bytes on {}", self.name), e))?;
        // SAFETY: the allocation just made.
        unsafe { drv::memset_d8_sync(ptr, 0, bytes) }.map_err(|e| driver_err("cuMemsetD8", e))?;
        Ok(DeviceBuffer { ptr, len, device: self.clone() })
    }

    /// A device buffer holding a copy of `bytes` (synchronous).
    pub fn upload(self: &Arc<Self>, bytes: &[u8]) -> Result<DeviceBuffer, CudaError> {
        let buf = self.alloc_zeroed(bytes.len())?;
        if !bytes.is_empty() {
            // SAFETY: the buffer holds at least bytes.len() bytes.
            unsafe { drv::memcpy_htod_sync(buf.ptr, bytes) }.map_err(|e| driver_err("cuMemcpyHtoD", e))?;
        }
        Ok(buf)
    }

    /// `len` bytes of page-locked host memory (for asynchronous copies).
    pub fn alloc_pinned(self: &Arc<Self>, len: usize) -> Result<PinnedBuffer, CudaError> {
        self.bind()?;
        // SAFETY: a plain allocation, zeroed below.
        let ptr = unsafe { drv::malloc_host(len.max(1), 0) }.map_err(|e| driver_err("cuMemHostAlloc", e))?;
        // SAFETY: `len` writable bytes.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, len.max(1)) };
        Ok(PinnedBuffer { ptr: ptr as *mut u8, len, device: self.clone() })
    }

    /// Queues a host → device copy on the stream. The source must stay valid and unchanged
    /// until the stream has passed this point (pinned buffers the caller keeps).
    ///
    /// # Safety
    /// `dst + dst_offset .. + src.len()` must lie inside a live device buffer.
    pub unsafe fn copy_to_device_async(&self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
        drv::memcpy_htod_async(dst, src, self.stream).map_err(|e| driver_err("cuMemcpyHtoDAsync", e))
    }

    /// Queues a device → host copy on the stream; read `dst` only after `synchronize`.
    ///
    /// # Safety
    /// `src .. + dst.len()` must lie inside a live device buffer.
    pub unsafe fn copy_to_host_async(&self, dst: &mut [u8], src: u64) -> Result<(), CudaError> {
        drv::memcpy_dtoh_async(dst, src, self.stream).map_err(|e| driver_err("cuMemcpyDtoHAsync", e))
    }

    /// Queues a device → device copy on the stream.
    ///
    /// # Safety
    /// Both ranges must lie inside live device buffers.
    pub unsafe fn copy_device_async(&self, dst: u64, src: u64, len: usize) -> Result<(), CudaError> {
        drv::memcpy_dtod_async(dst, src, len, self.stream).map_err(|e| driver_err("cuMemcpyDtoDAsync", e))
    }

    /// Starts recording the stream's work into a graph (launches are recorded, not run).
    pub fn begin_capture(&self) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: our stream. Thread-local mode: other threads' driver calls are unaffected.
        unsafe {
            drv::stream::begin_capture(self.stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        }
        .map_err(|e| driver_err("cuStreamBeginCapture", e))
    }

    /// Ends a capture started by `begin_capture` and instantiates the graph.
    pub fn end_capture(self: &Arc<Self>) -> Result<CudaGraph, CudaError> {
        // SAFETY: our stream, capturing.
        let graph =
            unsafe { drv::stream::end_capture(self.stream) }.map_err(|e| driver_err("cuStreamEndCapture", e))?;
        // SAFETY: the graph just captured.
        let exec = unsafe { drv::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        // SAFETY: the exec (if any) holds what it needs; the graph itself is no longer used.
        unsafe {
            let _ = drv::graph::destroy(graph);
        }
        let exec = exec.map_err(|e| driver_err("cuGraphInstantiate", e))?;
        Ok(CudaGraph { exec, device: self.clone() })
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: our stream and our retain of the primary context.
        unsafe {
            let _ = drv::ctx::set_current(self.ctx);
            let _ = drv::stream::synchronize(self.stream);
            let _ = drv::stream::destroy(self.stream);
            if let Ok(dev) = drv::device::get(self.ordinal as i32) {
                let _ = drv::primary_ctx::release(dev);
            }
        }
    }
}

/// Device memory, freed on drop.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    len: usize,
    device: Arc<CudaDevice>,
}

impl DeviceBuffer {
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Copies the whole buffer to the host (synchronous; for tests and checks).
    pub fn to_host(&self) -> Result<Vec<u8>, CudaError> {
        self.device.synchronize()?;
        let mut out = vec![0u8; self.len];
        if self.len > 0 {
            // SAFETY: `len` bytes inside this buffer.
            unsafe { drv::memcpy_dtoh_sync(&mut out, self.ptr) }.map_err(|e| driver_err("cuMemcpyDtoH", e))?;
        }
        Ok(out)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        // SAFETY: allocated by `alloc_zeroed`, freed once.
        unsafe {
            let _ = drv::free_sync(self.ptr);
        }
    }
}

/// Page-locked host memory, freed on drop.
pub struct PinnedBuffer {
    ptr: *mut u8,
    len: usize,
    device: Arc<CudaDevice>,
}

// SAFETY: owned host memory like a Vec<u8>.
unsafe impl Send for PinnedBuffer {}

impl PinnedBuffer {
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        // SAFETY: allocated by `alloc_pinned`, freed once.
        unsafe {
            let _ = drv::free_host(self.ptr as *mut c_void);
        }
    }
}

/// An instantiated CUDA graph, replayed on the device's stream.
pub struct CudaGraph {
    exec: sys::CUgraphExec,
    device: Arc<CudaDevice>,
}

// SAFETY: an exec handle is usable from any thread with the context bound.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Queues one replay of the graph on the device's stream.
    pub fn launch(&self) -> Result<(), CudaError> {
        // SAFETY: a live exec and our stream.
        unsafe { drv::graph::launch(self.exec, self.device.stream) }.map_err(|e| driver_err("cuGraphLaunch", e))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        // SAFETY: destroyed once.
        unsafe {
            let _ = drv::graph::exec_destroy(self.exec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_device_without_cuda_is_a_clear_error() {
        if device_count() > 0 {
            eprintln!("skipped: a GPU is present, so the no-driver error cannot be exercised");
            return;
        }
        let e = CudaDevice::open(0).err().expect("no GPU here");
        assert!(e.to_string().contains("CUDA is not available"), "{e}");
    }
}

/// A CUDA event for timing work on the device's stream.
pub struct CudaEvent {
    event: sys::CUevent,
}

// SAFETY: event handles are usable from any thread with the context bound.
unsafe impl Send for CudaEvent {}

impl CudaEvent {
    pub fn new(device: &CudaDevice) -> Result<CudaEvent, CudaError> {
        device.bind()?;
        let event =
            drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).map_err(|e| driver_err("cuEventCreate", e))?;
        Ok(CudaEvent { event })
    }

    /// Records the event on the device's stream.
    pub fn record(&self, device: &CudaDevice) -> Result<(), CudaError> {
        // SAFETY: a live event and the device's stream.
        unsafe { drv::event::record(self.event, device.stream) }.map_err(|e| driver_err("cuEventRecord", e))
    }

    /// Milliseconds from `start` to this event (both recorded and complete).
    pub fn elapsed_ms_since(&self, start: &CudaEvent) -> Result<f32, CudaError> {
        // SAFETY: two live events.
        unsafe { drv::event::elapsed(start.event, self.event) }.map_err(|e| driver_err("cuEventElapsedTime", e))
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: destroyed once.
        unsafe {
            let _ = drv::event::destroy(self.event);
        }
    }
}
