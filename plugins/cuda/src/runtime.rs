//! The CUDA runtime this plugin's kernels share: loading the driver and NVRTC at run time,
//! the current context, compiling `kernels/cuda/*.cu` with NVRTC for the device's architecture
//! (cubins cached on disk by a hash of source, options, architecture and NVRTC version; modules
//! cached per context), and launching a function on the host's stream with packed arguments.

use cudarc::driver::{result as drv, sys};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use rtllm_plugin_api::PluginError;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The header every kernel source is compiled with (dtype helpers, reductions).
pub const COMMON_HEADER: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/cuda/common.cuh"));

/// Headers of kernels/cuda that sources may `#include "name.cuh"`: inlined when a source is
/// compiled (NVRTC gets one translation unit), and part of the cache key.
const HEADERS: &[(&str, &str)] =
    &[("attention.cuh", include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/cuda/attention.cuh")))];

/// `source`'s text with each `#include "X.cuh"` of [`HEADERS`] replaced by the header, `#line`
/// directives keeping file names and line numbers in NVRTC's messages right.
fn expand_includes(source: &KernelSource) -> Result<String, PluginError> {
    let mut out = format!("#line 1 \"{}\"\n", source.name);
    for (i, line) in source.text.lines().enumerate() {
        let included = line.trim().strip_prefix("#include \"").and_then(|r| r.strip_suffix('"'));
        match included {
            Some(name) => {
                let (_, text) = HEADERS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                    PluginError::new(format!("kernels/cuda/{}: unknown header \"{name}\"", source.name))
                })?;
                out += &format!("#line 1 \"{name}\"\n{text}\n#line {} \"{}\"\n", i + 2, source.name);
            }
            None => {
                out += line;
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// A CUDA C source from kernels/cuda: its file name and text.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub name: &'static str,
    pub text: &'static str,
}

/// `kernel_source!("norm.cu")` embeds kernels/cuda/norm.cu at build time.
#[macro_export]
macro_rules! kernel_source {
    ($file:literal) => {
        $crate::runtime::KernelSource {
            name: $file,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/cuda/", $file)),
        }
    };
}

pub fn err(context: impl std::fmt::Display, e: impl std::fmt::Debug) -> PluginError {
    PluginError::new(format!("{context}: {e:?}"))
}

/// Whether libcuda can be loaded in this process (false on machines with no NVIDIA driver).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() } && drv::init().is_ok())
}

/// Whether libnvrtc can be loaded in this process.
pub fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library.
    *PRESENT.get_or_init(|| unsafe { nvrtc_sys::is_culib_present() })
}

fn require_driver() -> Result<(), PluginError> {
    if driver_present() {
        Ok(())
    } else {
        Err(PluginError::new(
            "CUDA is not available: libcuda could not be loaded or cuInit failed (no NVIDIA driver on this machine?)",
        ))
    }
}

/// The context current on this thread; when none is, device 0's primary context is retained
/// and made current (the host normally does this before building or launching).
pub fn current_context() -> Result<sys::CUcontext, PluginError> {
    require_driver()?;
    if let Some(ctx) = drv::ctx::get_current().map_err(|e| err("cuCtxGetCurrent", e))? {
        return Ok(ctx);
    }
    let dev = drv::device::get(0).map_err(|e| err("cuDeviceGet(0)", e))?;
    // SAFETY: a valid device handle; the primary context is never released (lives as long as
    // the process, like the modules loaded into it).
    unsafe {
        let ctx = drv::primary_ctx::retain(dev).map_err(|e| err("cuDevicePrimaryCtxRetain", e))?;
        drv::ctx::set_current(ctx).map_err(|e| err("cuCtxSetCurrent", e))?;
        Ok(ctx)
    }
}

/// The device of the current context.
pub fn current_device() -> Result<sys::CUdevice, PluginError> {
    current_context()?;
    let mut dev = 0;
    // SAFETY: writes one int.
    unsafe { sys::cuCtxGetDevice(&mut dev) }.result().map_err(|e| err("cuCtxGetDevice", e))?;
    Ok(dev)
}

/// An attribute of the current device (e.g. multiprocessor count).
pub fn device_attribute(attr: sys::CUdevice_attribute) -> Result<i32, PluginError> {
    let dev = current_device()?;
    // SAFETY: a valid device handle.
    unsafe { drv::device::get_attribute(dev, attr) }.map_err(|e| err("cuDeviceGetAttribute", e))
}

/// `sm_XY` of the current device.
pub fn device_arch() -> Result<String, PluginError> {
    let major = device_attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = device_attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(format!("sm_{major}{minor}"))
}

/// Compiles a source to a cubin (or PTX when `arch` is a `compute_XY` target) with NVRTC.
pub fn compile(source: &KernelSource, arch: &str) -> Result<Vec<u8>, PluginError> {
    if !nvrtc_present() {
        return Err(PluginError::new(format!(
            "compiling kernels/cuda/{}: libnvrtc could not be loaded (add its directory to LD_LIBRARY_PATH)",
            source.name
        )));
    }
    let full = format!("{COMMON_HEADER}\n{}", expand_includes(source)?);
    let src = CString::new(full).map_err(|e| err("kernel source", e))?;
    let name = CString::new(source.name).map_err(|e| err("kernel name", e))?;
    let prog = nvrtc::create_program(&src, Some(&name)).map_err(|e| err("nvrtcCreateProgram", e))?;
    let options = [format!("--gpu-architecture={arch}"), "--std=c++17".into(), "-default-device".into()];
    // SAFETY: `prog` is live until destroyed below.
    let compiled = unsafe { nvrtc::compile_program(prog, &options) };
    let result = match compiled {
        Ok(()) if arch.starts_with("sm_") => unsafe { read_cubin(prog) },
        Ok(()) => unsafe { nvrtc::get_ptx(prog) }
            .map(|p| p.into_iter().map(|c| c as u8).collect())
            .map_err(|e| err("nvrtcGetPTX", e)),
        Err(e) => {
            let log = unsafe { nvrtc::get_program_log(prog) }
                .map(|l| l.into_iter().map(|c| c as u8 as char).collect::<String>())
                .unwrap_or_default();
            Err(PluginError::new(format!(
                "NVRTC failed to compile kernels/cuda/{} for {arch}: {e:?}\n{}",
                source.name,
                log.trim_end_matches('\0')
            )))
        }
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    result
}

unsafe fn read_cubin(prog: nvrtc_sys::nvrtcProgram) -> Result<Vec<u8>, PluginError> {
    let mut size = 0usize;
    nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| err("nvrtcGetCUBINSize", e))?;
    let mut out = vec![0u8; size];
    nvrtc_sys::nvrtcGetCUBIN(prog, out.as_mut_ptr() as *mut _).result().map_err(|e| err("nvrtcGetCUBIN", e))?;
    Ok(out)
}

fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints; only called once NVRTC is known to load.
    let _ = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    format!("{major}.{minor}")
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RTLLM_CACHE_DIR") {
        return Some(PathBuf::from(d).join("cuda-kernels"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rtllm").join("cuda-kernels"))
}

/// FNV-1a, 64 bit: a stable hash of the cache key (std's hasher is not stable across builds).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The cubin for `source` on `arch`: from the disk cache, or compiled and written there.
fn cubin(source: &KernelSource, arch: &str) -> Result<Vec<u8>, PluginError> {
    let version = if nvrtc_present() { nvrtc_version() } else { "none".into() };
    let key = fnv1a(&[COMMON_HEADER, &expand_includes(source)?, arch, &version, "v1"]);
    let stem = source.name.trim_end_matches(".cu");
    let path = cache_dir().map(|d| d.join(format!("{stem}-{arch}-{key:016x}.cubin")));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    let bytes = compile(source, arch)?;
    if let Some(p) = path {
        // Best effort: a read-only cache only costs a recompile next time.
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &p);
        }
    }
    Ok(bytes)
}

/// A loaded module (never unloaded: kernels keep its functions).
#[derive(Clone, Copy)]
struct Module(sys::CUmodule);
// SAFETY: a module handle may be used from any thread with its context current.
unsafe impl Send for Module {}

fn modules() -> &'static Mutex<HashMap<(usize, &'static str), Module>> {
    static MODULES: OnceLock<Mutex<HashMap<(usize, &'static str), Module>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A kernel function handle, valid in the context it was loaded into.
#[derive(Clone, Copy, Debug)]
pub struct Function(pub sys::CUfunction);
// SAFETY: function handles are plain driver handles, usable from any thread.
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

/// Function `name` of `source`, compiling and loading the module into the current context on
/// first use.
pub fn function(source: &KernelSource, name: &str) -> Result<Function, PluginError> {
    let ctx = current_context()?;
    let key = (ctx as usize, source.name);
    let module = {
        let mut map = modules().lock().map_err(|_| PluginError::new("CUDA module cache poisoned"))?;
        match map.get(&key) {
            Some(m) => *m,
            None => {
                let image = cubin(source, &device_arch()?)?;
                // SAFETY: a cubin produced by NVRTC for this device's architecture.
                let m = unsafe { drv::module::load_data(image.as_ptr() as *const c_void) }
                    .map_err(|e| err(format_args!("loading kernels/cuda/{}", source.name), e))?;
                map.insert(key, Module(m));
                Module(m)
            }
        }
    };
    let cname = CString::new(name).map_err(|e| err("function name", e))?;
    // SAFETY: a loaded module and a NUL-terminated name.
    let f = unsafe { drv::module::get_function(module.0, cname) }
        .map_err(|e| err(format_args!("kernels/cuda/{}: function {name}", source.name), e))?;
    crate::launch_repeat::note_function(Function(f), name);
    Ok(Function(f))
}

/// Raises a function's dynamic shared-memory limit (needed above 48 KiB).
pub fn set_max_dynamic_shared(f: Function, bytes: u32) -> Result<(), PluginError> {
    // SAFETY: a valid function handle.
    unsafe {
        drv::function::set_function_attribute(
            f.0,
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    }
    .map_err(|e| err("cuFuncSetAttribute(max dynamic shared memory)", e))
}

/// Kernel arguments, each stored in an 8-byte slot (pointers, ints, floats).
#[derive(Default)]
pub struct KernelArgs {
    slots: Vec<u64>,
}

impl KernelArgs {
    pub fn new() -> Self {
        KernelArgs { slots: Vec::with_capacity(16) }
    }

    pub fn ptr<T>(mut self, p: *const T) -> Self {
        self.slots.push(p as usize as u64);
        self
    }

    pub fn i32(mut self, v: i32) -> Self {
        self.slots.push(v as u32 as u64);
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.slots.push(v as u64);
        self
    }

    pub fn i64(mut self, v: i64) -> Self {
        self.slots.push(v as u64);
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.slots.push(v);
        self
    }

    pub fn f32(mut self, v: f32) -> Self {
        self.slots.push(v.to_bits() as u64);
        self
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl Dims {
    /// A 1-D grid of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Dims {
        Dims { grid: (blocks.max(1), 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
    }
}

/// The environment variable that turns programmatic dependent launch off (`0`).
pub const PDL_ENV: &str = "RTLLM_CUDA_PDL";

/// Whether kernels are launched with programmatic stream serialization (see `pdl_trigger` in
/// kernels/cuda/common.cuh): on sm_90 and later unless [`PDL_ENV`] is `0`/`false`/`off`.
pub fn pdl_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let off = matches!(std::env::var(PDL_ENV).as_deref().map(str::trim), Ok("0" | "false" | "off"));
        let major = device_attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
        !off && major.is_ok_and(|m| m >= 9)
    })
}

/// Launches `f` on `stream` (the `LaunchContext`'s). Asynchronous; never synchronizes.
///
/// # Safety
/// The arguments must match the kernel's parameters and every pointer must be a device
/// pointer valid for what the kernel accesses.
pub unsafe fn launch(f: Function, dims: Dims, stream: *mut c_void, args: &KernelArgs) -> Result<(), PluginError> {
    unsafe { launch_ex(f, dims, None, stream, args) }
}

/// Launches `f` as thread-block clusters of `cluster` blocks along x (sm_90 and later;
/// `dims.grid.0` must be a multiple of `cluster`). Asynchronous and capturable, like [`launch`].
///
/// # Safety
/// As [`launch`].
pub unsafe fn launch_clustered(
    f: Function,
    dims: Dims,
    cluster: u32,
    stream: *mut c_void,
    args: &KernelArgs,
) -> Result<(), PluginError> {
    unsafe { launch_ex(f, dims, Some(cluster), stream, args) }
}

/// One `cuLaunchKernelEx`: clusters when asked, programmatic stream serialization when
/// [`pdl_enabled`] (every kernel of kernels/cuda waits for its predecessor in `pdl_wait`).
unsafe fn launch_ex(
    f: Function,
    dims: Dims,
    cluster: Option<u32>,
    stream: *mut c_void,
    args: &KernelArgs,
) -> Result<(), PluginError> {
    // Each slot is 8 bytes and little-endian, so a pointer to it is a valid pointer to a 4-byte
    // int or float argument as well.
    let mut params: Vec<*mut c_void> = args.slots.iter().map(|s| s as *const u64 as *mut c_void).collect();
    // SAFETY: plain C structs; all-zero is a valid value before the fields are set.
    let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    if let Some(cluster) = cluster {
        attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attrs[n].value.clusterDim.x = cluster;
        attrs[n].value.clusterDim.y = 1;
        attrs[n].value.clusterDim.z = 1;
        n += 1;
    }
    if pdl_enabled() {
        attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attrs[n].value.programmaticStreamSerializationAllowed = 1;
        n += 1;
    }
    let config = sys::CUlaunchConfig {
        gridDimX: dims.grid.0,
        gridDimY: dims.grid.1,
        gridDimZ: dims.grid.2,
        blockDimX: dims.block.0,
        blockDimY: dims.block.1,
        blockDimZ: dims.block.2,
        sharedMemBytes: dims.shared_bytes,
        hStream: stream as sys::CUstream,
        attrs: attrs.as_mut_ptr(),
        numAttrs: n as u32,
    };
    // A diagnostic (RTLLM_CUDA_REPEAT) may ask for extra copies of this launch.
    for _ in 0..=crate::launch_repeat::extra_launches(f, dims.grid.0) {
        // SAFETY: the caller vouches for the arguments; the config points at live locals.
        unsafe { sys::cuLaunchKernelEx(&config, f.0, params.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .map_err(|e| err("cuLaunchKernelEx", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_is_stable_and_sensitive() {
        assert_eq!(fnv1a(&["a", "b"]), fnv1a(&["a", "b"]));
        assert_ne!(fnv1a(&["ab", ""]), fnv1a(&["a", "b"]));
    }

    #[test]
    fn includes_are_inlined_with_line_directives() {
        let src = KernelSource { name: "x.cu", text: "int a;\n#include \"attention.cuh\"\nint b;\n" };
        let full = expand_includes(&src).unwrap();
        assert!(full.starts_with("#line 1 \"x.cu\"\nint a;\n#line 1 \"attention.cuh\"\n"), "{full}");
        assert!(full.contains("struct PaGeom") && full.ends_with("#line 3 \"x.cu\"\nint b;\n"), "{full}");
        let bad = KernelSource { name: "y.cu", text: "#include \"nope.cuh\"\n" };
        assert!(expand_includes(&bad).unwrap_err().message().contains("unknown header \"nope.cuh\""));
    }

    #[test]
    fn missing_driver_is_an_error_not_a_panic() {
        if driver_present() {
            eprintln!("skipped: a CUDA driver is present, so the no-driver error path cannot be exercised");
            return;
        }
        let e = current_context().expect_err("no driver");
        assert!(e.to_string().contains("CUDA is not available"), "{e}");
    }
}
