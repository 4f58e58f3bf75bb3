//! What a launch gets besides its tensors. [`LaunchEnv`] crosses the ABI: device, stream,
//! workspace and the host's services (its thread pool, so CPU kernels in every plugin share one
//! pool instead of each dylib spinning its own). [`LaunchContext`] is the kernel's side of one
//! launch: it hands out the workspace once, as plain elements, for the launch's lifetime, and
//! runs parallel work on the host's pool (see `parallel`).

use crate::error::PluginError;
use abi_stable::StableAbi;
use bytemuck::Pod;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    Cpu = 0,
    Cuda = 1,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Some(DeviceKind::Cpu),
            "cuda" | "gpu" => Some(DeviceKind::Cuda),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One task body for [`HostServices`]: `run(task, index)`; never unwinds.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct TaskFn {
    /// # Safety
    /// `task` must be the pointer the caller of `parallel_for` passed with this function.
    pub run: unsafe extern "C" fn(task: *const c_void, index: usize),
}

/// Services the host offers to kernels: a pool that runs `run(task, i)` for every `i` in
/// `0..n`, possibly in parallel, and returns when all are done.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct HostServices {
    pool: *const c_void,
    num_threads: usize,
    /// # Safety
    /// `pool` must be the pointer these services carry, and `task` valid for `run` until the
    /// call returns (written out: abi_stable reads fn pointer types only inline).
    parallel_for: unsafe extern "C" fn(pool: *const c_void, n: usize, task: *const c_void, run: TaskFn),
}

// SAFETY: the pool pointer is the host's thread-safe pool (or null), shared read-only.
unsafe impl Send for HostServices {}
unsafe impl Sync for HostServices {}

unsafe extern "C" fn sequential_for(_pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    for i in 0..n {
        // SAFETY: the caller's contract: `task` is valid for `run`.
        unsafe { (run.run)(task, i) };
    }
}

impl HostServices {
    /// Services over a host pool.
    ///
    /// # Safety
    /// `parallel_for(pool, n, task, run)` must call `run(task, i)` exactly once for every
    /// `i < n` (from any threads, concurrently or not) and return only after all calls
    /// returned; `pool` must stay valid while these services are used.
    pub unsafe fn new(
        pool: *const c_void,
        num_threads: usize,
        parallel_for: unsafe extern "C" fn(*const c_void, usize, *const c_void, TaskFn),
    ) -> HostServices {
        HostServices { pool, num_threads, parallel_for }
    }

    /// Services that run everything on the calling thread.
    pub fn sequential() -> Self {
        HostServices { pool: std::ptr::null(), num_threads: 1, parallel_for: sequential_for }
    }

    pub fn num_threads(&self) -> usize {
        self.num_threads.max(1)
    }

    /// Runs `run(task, i)` for every `i < n` through the host's pool.
    ///
    /// # Safety
    /// `task` must be valid for `run` (with any index below `n`, from any thread) until this
    /// returns.
    pub(crate) unsafe fn run(&self, n: usize, task: *const c_void, run: TaskFn) {
        // SAFETY: `new`'s contract on the function and pool; the caller's on `task`.
        unsafe { (self.parallel_for)(self.pool, n, task, run) }
    }
}

/// The environment of a launch as the host passes it across the ABI. Not `Clone`: a launch
/// borrows it mutably, so two launches can never share its workspace at once.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct LaunchEnv<'a> {
    device: DeviceKind,
    ordinal: i32,
    /// A `CUstream` on CUDA; null on CPU.
    stream: *mut c_void,
    workspace: *mut u8,
    workspace_bytes: usize,
    host: HostServices,
    _workspace: PhantomData<&'a mut u8>,
}

// SAFETY: the stream is a handle; the workspace is handed to one launch at a time (below).
unsafe impl Send for LaunchEnv<'_> {}
unsafe impl Sync for LaunchEnv<'_> {}

impl<'a> LaunchEnv<'a> {
    /// An environment on `device` with a workspace at `workspace` (host or device memory).
    ///
    /// # Safety
    /// `workspace` must address `workspace_bytes` writable bytes (or be null with 0 bytes),
    /// valid for `'a`, that nothing else touches while a launch with this environment runs;
    /// launches sharing it must not overlap. `stream` must be a valid stream of `device` (or
    /// null on CPU).
    pub unsafe fn new(
        device: DeviceKind,
        ordinal: i32,
        stream: *mut c_void,
        workspace: *mut u8,
        workspace_bytes: usize,
        host: HostServices,
    ) -> LaunchEnv<'a> {
        LaunchEnv { device, ordinal, stream, workspace, workspace_bytes, host, _workspace: PhantomData }
    }

    /// A CPU environment over `host`'s pool with `workspace` (may be empty).
    pub fn cpu(host: HostServices, workspace: &'a mut [u8]) -> LaunchEnv<'a> {
        // SAFETY: the workspace is borrowed exclusively for 'a; a null stream is the CPU's.
        unsafe {
            LaunchEnv::new(DeviceKind::Cpu, 0, std::ptr::null_mut(), workspace.as_mut_ptr(), workspace.len(), host)
        }
    }

    /// A CPU environment with no workspace that runs on the calling thread.
    pub fn cpu_sequential() -> LaunchEnv<'static> {
        LaunchEnv::cpu(HostServices::sequential(), &mut [])
    }

    pub fn device(&self) -> DeviceKind {
        self.device
    }

    pub fn workspace_bytes(&self) -> usize {
        self.workspace_bytes
    }

    /// The kernel's view of one launch in this environment (the environment stays borrowed
    /// until the launch is over).
    pub fn context(&mut self) -> LaunchContext<'_> {
        LaunchContext { env: self, workspace_taken: AtomicBool::new(false) }
    }
}

/// The kernel's side of one launch.
pub struct LaunchContext<'a> {
    env: &'a LaunchEnv<'a>,
    workspace_taken: AtomicBool,
}

impl LaunchContext<'_> {
    pub fn device(&self) -> DeviceKind {
        self.env.device
    }

    /// The device's ordinal (CUDA).
    pub fn ordinal(&self) -> i32 {
        self.env.ordinal
    }

    /// The `CUstream` to launch on (null on CPU).
    pub fn stream(&self) -> *mut c_void {
        self.env.stream
    }

    pub fn num_threads(&self) -> usize {
        self.env.host.num_threads()
    }

    pub(crate) fn host(&self) -> &HostServices {
        &self.env.host
    }

    /// Bytes of workspace the host gave this launch.
    pub fn workspace_bytes(&self) -> usize {
        self.env.workspace_bytes
    }

    fn take_workspace(&self, need: usize) -> Result<*mut u8, PluginError> {
        if self.workspace_taken.swap(true, Ordering::AcqRel) {
            return Err(PluginError::new("the workspace was already taken in this launch"));
        }
        if need > 0 && (self.env.workspace.is_null() || self.env.workspace_bytes < need) {
            return Err(PluginError::new(format!(
                "workspace of {} bytes is smaller than the {need} bytes the kernel asked for",
                self.env.workspace_bytes
            )));
        }
        Ok(self.env.workspace)
    }

    /// The host workspace as `len` elements of `T`, for this launch. It is handed out once:
    /// a second call in the same launch is an error.
    #[allow(clippy::mut_from_ref)]
    pub fn workspace<T: Pod>(&self, len: usize) -> Result<&mut [T], PluginError> {
        if self.env.device != DeviceKind::Cpu {
            return Err(PluginError::new(format!("a {} workspace has no host view", self.env.device)));
        }
        let need = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            PluginError::new(format!(
                "workspace of {len} elements of {} bytes overflows usize",
                std::mem::size_of::<T>()
            ))
        })?;
        let base = self.take_workspace(need)?;
        if need == 0 {
            return Ok(&mut []);
        }
        if (base as usize) % std::mem::align_of::<T>() != 0 {
            return Err(PluginError::new("workspace is misaligned"));
        }
        // SAFETY: `LaunchEnv::new`'s contract gives this launch the workspace alone; the flag
        // hands it out once, and the slice lives no longer than this launch's context. `T` is
        // plain data: any bytes are a valid `T`.
        Ok(unsafe { std::slice::from_raw_parts_mut(base as *mut T, len) })
    }

    /// The device workspace's address for this launch, checked to hold `bytes` (handed out
    /// once, as [`LaunchContext::workspace`]).
    pub fn device_workspace(&self, bytes: usize) -> Result<u64, PluginError> {
        if self.env.device == DeviceKind::Cpu {
            return Err(PluginError::new("a CPU launch has no device workspace; use `workspace`"));
        }
        Ok(self.take_workspace(bytes)? as usize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_sizes_are_checked() {
        let mut buf = [0u8; 32];
        let mut env = LaunchEnv::cpu(HostServices::sequential(), &mut buf);
        assert_eq!(env.context().workspace::<u64>(4).map(|w| w.len()), Ok(4));
        assert!(env.context().workspace::<u64>(5).is_err());
        let overflow = env.context().workspace::<u64>(usize::MAX / 4).expect_err("overflow is an error");
        assert!(overflow.to_string().contains("overflows"), "{overflow}");
    }

    #[test]
    fn workspace_is_handed_out_once_per_launch() {
        let mut buf = [0u8; 16];
        let mut env = LaunchEnv::cpu(HostServices::sequential(), &mut buf);
        let ctx = env.context();
        let ws = ctx.workspace::<f32>(4).unwrap();
        ws[0] = 1.0;
        let again = ctx.workspace::<f32>(1).unwrap_err();
        assert!(again.message().contains("already taken"), "{again}");
        drop(ctx);
        // The next launch gets it again.
        assert_eq!(env.context().workspace::<f32>(4).unwrap()[0], 1.0);
        assert!(env.context().device_workspace(4).is_err(), "a CPU launch has no device workspace");
    }
}
