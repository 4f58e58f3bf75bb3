//! The CUDA driver calls this plugin needs (libcuda loaded at run time through cudarc): the
//! current context, loading a cubin into it (cached per context and file), looking up a
//! function, and launching it on the host's stream. Plugins do not depend on each other, so
//! this is the Triton plugin's own small copy of what plugins/cuda's runtime does.

use cudarc::driver::{result as drv, sys};
use rtllm_plugin_api::PluginError;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Mutex, OnceLock};

fn err(context: impl std::fmt::Display, e: impl std::fmt::Debug) -> PluginError {
    PluginError::new(format!("{context}: {e:?}"))
}

/// Whether libcuda loads and cuInit succeeds in this process.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library and initialise it.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() } && drv::init().is_ok())
}

/// The context current on this thread, or device 0's primary context made current.
pub fn current_context() -> Result<sys::CUcontext, PluginError> {
    if !driver_present() {
        return Err(PluginError::new(
            "CUDA is not available: libcuda could not be loaded or cuInit failed (no NVIDIA driver on this machine?); \
             the Triton kernels run on CUDA only",
        ));
    }
    if let Some(ctx) = drv::ctx::get_current().map_err(|e| err("cuCtxGetCurrent", e))? {
        return Ok(ctx);
    }
    let dev = drv::device::get(0).map_err(|e| err("cuDeviceGet(0)", e))?;
    // SAFETY: a valid device; the primary context is kept for the life of the process.
    unsafe {
        let ctx = drv::primary_ctx::retain(dev).map_err(|e| err("cuDevicePrimaryCtxRetain", e))?;
        drv::ctx::set_current(ctx).map_err(|e| err("cuCtxSetCurrent", e))?;
        Ok(ctx)
    }
}

/// `(major, minor)` compute capability of the current context's device.
pub fn compute_capability() -> Result<(i32, i32), PluginError> {
    current_context()?;
    let mut dev = 0;
    // SAFETY: writes one int.
    unsafe { sys::cuCtxGetDevice(&mut dev) }.result().map_err(|e| err("cuCtxGetDevice", e))?;
    let get = |a| unsafe { drv::device::get_attribute(dev, a) }.map_err(|e| err("cuDeviceGetAttribute", e));
    Ok((
        get(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        get(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    ))
}

#[derive(Clone, Copy)]
struct Module(sys::CUmodule);
// SAFETY: a module handle may be used from any thread with its context current.
unsafe impl Send for Module {}

/// A kernel function handle.
#[derive(Clone, Copy, Debug)]
pub struct Function(pub sys::CUfunction);
// SAFETY: plain driver handles, usable from any thread.
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

/// Function `symbol` of cubin `file` (bytes `image`), loading the module into the current
/// context on first use; `shared` bytes of dynamic shared memory are allowed for it.
pub fn function(file: &str, image: &[u8], symbol: &str, shared: u32) -> Result<Function, PluginError> {
    static MODULES: OnceLock<Mutex<HashMap<(usize, String), Module>>> = OnceLock::new();
    let ctx = current_context()?;
    let module = {
        let mut map = MODULES
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .map_err(|_| PluginError::new("Triton module cache poisoned"))?;
        match map.get(&(ctx as usize, file.to_string())) {
            Some(m) => *m,
            None => {
                // cuModuleLoadData reads an ELF image from an aligned buffer.
                let aligned: Vec<u64> = image
                    .chunks(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b[..c.len()].copy_from_slice(c);
                        u64::from_le_bytes(b)
                    })
                    .collect();
                // SAFETY: a cubin compiled by Triton; the buffer outlives the call.
                let m = unsafe { drv::module::load_data(aligned.as_ptr() as *const c_void) }.map_err(|e| {
                    let cc = compute_capability().map(|(a, b)| format!("sm_{a}{b}")).unwrap_or_default();
                    err(
                        format_args!(
                            "loading kernels/triton/artifacts/{file} (compiled for sm_90) on this {cc} device"
                        ),
                        e,
                    )
                })?;
                map.insert((ctx as usize, file.to_string()), Module(m));
                Module(m)
            }
        }
    };
    let name = CString::new(symbol).map_err(|e| err("symbol name", e))?;
    // SAFETY: a loaded module and a NUL-terminated name.
    let f = unsafe { drv::module::get_function(module.0, name) }
        .map_err(|e| err(format_args!("kernels/triton/artifacts/{file}: function {symbol}"), e))?;
    if shared > 48 * 1024 {
        // SAFETY: a valid function handle.
        unsafe {
            drv::function::set_function_attribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared as i32,
            )
        }
        .map_err(|e| err("cuFuncSetAttribute(max dynamic shared memory)", e))?;
    }
    Ok(Function(f))
}

/// Launches `f` on `stream` with `slots` as its parameters (each slot one 8-byte little-endian
/// cell, so a pointer to it is also a valid pointer to a 4-byte int or float parameter).
///
/// # Safety
/// The slots must match the kernel's parameters and every pointer must be valid for it.
pub unsafe fn launch(
    f: Function,
    grid: (u32, u32, u32),
    block: u32,
    shared: u32,
    stream: *mut c_void,
    slots: &[u64],
) -> Result<(), PluginError> {
    let mut params: Vec<*mut c_void> = slots.iter().map(|s| s as *const u64 as *mut c_void).collect();
    drv::launch_kernel(f.0, grid, (block, 1, 1), shared, stream as sys::CUstream, &mut params)
        .map_err(|e| err("cuLaunchKernel", e))
}
