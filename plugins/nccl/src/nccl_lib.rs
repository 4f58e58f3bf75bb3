//! Opening NCCL at run time: the library and the entry points the CUDA provider calls, with
//! cudarc's NCCL types (`ncclUniqueId`, `ncclComm_t`, the dtype and reduction enums).
//!
//! cudarc's own loader only tries `libnccl.so` and `libnccl.so.<CUDA major>` and panics on a
//! missing symbol, while NCCL's soname is `libnccl.so.2` (the only file the pip wheels ship),
//! so this module opens the library itself: `RTLLM_NCCL_LIB` when set, else `libnccl.so.2`,
//! `libnccl.so` and the `nvidia/nccl/lib` folder of Python environments. Results are ints (not
//! cudarc's enum) so an unknown code from a newer NCCL cannot be undefined behaviour.

use crate::error::NcclError;
use cudarc::nccl::sys::{ncclComm_t, ncclUniqueId};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable naming the NCCL library to open.
pub const LIB_ENV: &str = "RTLLM_NCCL_LIB";

pub type Stream = *mut c_void;

type AllReduceFn = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, ncclComm_t, Stream) -> c_int;
type AllGatherFn = unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, ncclComm_t, Stream) -> c_int;
type ReduceScatterFn =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, ncclComm_t, Stream) -> c_int;

/// The opened library and its entry points.
pub struct Nccl {
    pub path: String,
    _lib: libloading::Library,
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> c_int,
    comm_finalize: Option<unsafe extern "C" fn(ncclComm_t) -> c_int>,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> c_int,
    comm_cu_device: unsafe extern "C" fn(ncclComm_t, *mut c_int) -> c_int,
    group_start: unsafe extern "C" fn() -> c_int,
    group_end: unsafe extern "C" fn() -> c_int,
    all_reduce: AllReduceFn,
    all_gather: AllGatherFn,
    reduce_scatter: ReduceScatterFn,
}

/// The library paths to try, in order.
fn candidates() -> Vec<String> {
    if let Some(p) = std::env::var_os(LIB_ENV) {
        return vec![p.to_string_lossy().into_owned()];
    }
    let mut out = vec!["libnccl.so.2".to_string(), "libnccl.so".to_string()];
    let mut prefixes: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from).into_iter().collect();
    prefixes.extend(["/opt/torch/.venv", "/usr/local", "/usr"].map(PathBuf::from));
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
            .collect();
        pythons.sort();
        for py in pythons {
            for site in ["site-packages", "dist-packages"] {
                let lib = py.join(site).join("nvidia/nccl/lib/libnccl.so.2");
                if lib.exists() {
                    out.push(lib.to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

/// # Safety
/// `T` must be the symbol's C signature.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, path: &str, name: &str) -> Result<T, NcclError> {
    lib.get::<T>(name.as_bytes()).map(|s| *s).map_err(|e| NcclError::MissingSymbol {
        path: path.to_string(),
        symbol: name.to_string(),
        cause: e.to_string(),
    })
}

fn open() -> Result<Nccl, NcclError> {
    let tried = candidates();
    for path in &tried {
        // SAFETY: opening NCCL runs its initialisers, which have no preconditions.
        let Ok(lib) = (unsafe { libloading::Library::new(path) }) else { continue };
        // SAFETY: each signature is NCCL's (nccl.h, 2.x), with enums as C ints.
        unsafe {
            return Ok(Nccl {
                path: path.clone(),
                get_version: symbol(&lib, path, "ncclGetVersion")?,
                get_error_string: symbol(&lib, path, "ncclGetErrorString")?,
                get_unique_id: symbol(&lib, path, "ncclGetUniqueId")?,
                comm_init_rank: symbol(&lib, path, "ncclCommInitRank")?,
                comm_finalize: symbol(&lib, path, "ncclCommFinalize").ok(),
                comm_destroy: symbol(&lib, path, "ncclCommDestroy")?,
                comm_cu_device: symbol(&lib, path, "ncclCommCuDevice")?,
                group_start: symbol(&lib, path, "ncclGroupStart")?,
                group_end: symbol(&lib, path, "ncclGroupEnd")?,
                all_reduce: symbol(&lib, path, "ncclAllReduce")?,
                all_gather: symbol(&lib, path, "ncclAllGather")?,
                reduce_scatter: symbol(&lib, path, "ncclReduceScatter")?,
                _lib: lib,
            });
        }
    }
    Err(NcclError::NoLibrary { tried: tried.join(", ") })
}

/// NCCL, opened on first use (the result, success or error, is kept for the process).
pub fn nccl() -> Result<&'static Nccl, NcclError> {
    static NCCL: OnceLock<Result<Nccl, NcclError>> = OnceLock::new();
    NCCL.get_or_init(open).as_ref().map_err(Clone::clone)
}

/// NCCL's dtype code for an rtllm float dtype.
pub fn dtype_code(dtype: rtllm_plugin_api::DType) -> Option<c_int> {
    use cudarc::nccl::sys::ncclDataType_t as T;
    use rtllm_plugin_api::DType;
    match dtype {
        DType::F32 => Some(T::ncclFloat32 as c_int),
        DType::F16 => Some(T::ncclFloat16 as c_int),
        DType::BF16 => Some(T::ncclBfloat16 as c_int),
        _ => None,
    }
}

const SUM: c_int = cudarc::nccl::sys::ncclRedOp_t::ncclSum as c_int;

impl Nccl {
    fn check(&self, call: &str, code: c_int) -> Result<(), NcclError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for any code.
        let text = unsafe {
            let p = (self.get_error_string)(code);
            if p.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(NcclError::Call { call: call.to_string(), code, text })
    }

    /// NCCL's version code (e.g. 22703 for 2.27.3).
    pub fn version(&self) -> Result<i32, NcclError> {
        let mut v = 0;
        // SAFETY: writes one int.
        self.check("ncclGetVersion", unsafe { (self.get_version)(&mut v) })?;
        Ok(v)
    }

    pub fn unique_id(&self) -> Result<ncclUniqueId, NcclError> {
        let mut id = ncclUniqueId { internal: [0; 128] };
        // SAFETY: writes one ncclUniqueId.
        self.check("ncclGetUniqueId", unsafe { (self.get_unique_id)(&mut id) })?;
        Ok(id)
    }

    /// Creates this rank's communicator on the current CUDA device; blocks until all ranks join.
    pub fn comm_init_rank(&self, world: usize, id: ncclUniqueId, rank: usize) -> Result<ncclComm_t, NcclError> {
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: writes one handle; `id` came from ncclGetUniqueId.
        let code = unsafe { (self.comm_init_rank)(&mut comm, world as c_int, id, rank as c_int) };
        self.check("ncclCommInitRank", code)?;
        Ok(comm)
    }

    /// The CUDA device of a communicator.
    ///
    /// # Safety
    /// `comm` is a live communicator.
    pub unsafe fn comm_device(&self, comm: ncclComm_t) -> Result<i32, NcclError> {
        let mut dev = -1;
        self.check("ncclCommCuDevice", (self.comm_cu_device)(comm, &mut dev))?;
        Ok(dev)
    }

    /// Finalizes the communicators together (one group call, so in-process peers can finish
    /// in any order) and destroys them.
    ///
    /// # Safety
    /// Every handle is live and used by no one else, now or later.
    pub unsafe fn destroy_all(&self, comms: &[ncclComm_t]) -> Result<(), NcclError> {
        let mut first_err = None;
        if let Some(finalize) = self.comm_finalize {
            let mut note = |r: Result<(), NcclError>| {
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            };
            note(self.check("ncclGroupStart", (self.group_start)()));
            for &c in comms {
                note(self.check("ncclCommFinalize", finalize(c)));
            }
            note(self.check("ncclGroupEnd", (self.group_end)()));
        }
        for &c in comms {
            if let Err(e) = self.check("ncclCommDestroy", (self.comm_destroy)(c)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// # Safety
    /// Device pointers valid for `count` elements, a live communicator, a stream of its device.
    pub unsafe fn all_reduce(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: c_int,
        comm: ncclComm_t,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let code = (self.all_reduce)(send as *const c_void, recv as *mut c_void, count, dtype, SUM, comm, stream);
        self.check("ncclAllReduce", code)
    }

    /// # Safety
    /// As [`Nccl::all_reduce`]; `recv` holds `send_count * world` elements.
    pub unsafe fn all_gather(
        &self,
        send: u64,
        recv: u64,
        send_count: usize,
        dtype: c_int,
        comm: ncclComm_t,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let code = (self.all_gather)(send as *const c_void, recv as *mut c_void, send_count, dtype, comm, stream);
        self.check("ncclAllGather", code)
    }

    /// # Safety
    /// As [`Nccl::all_reduce`]; `send` holds `recv_count * world` elements.
    pub unsafe fn reduce_scatter(
        &self,
        send: u64,
        recv: u64,
        recv_count: usize,
        dtype: c_int,
        comm: ncclComm_t,
        stream: Stream,
    ) -> Result<(), NcclError> {
        let code =
            (self.reduce_scatter)(send as *const c_void, recv as *mut c_void, recv_count, dtype, SUM, comm, stream);
        self.check("ncclReduceScatter", code)
    }
}
