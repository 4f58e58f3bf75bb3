//! The launch context: device, stream, workspace, and host services (the host's thread pool,
//! so CPU kernels in every plugin share one pool instead of each dylib spinning its own).

use crate::error::PluginError;
use abi_stable::StableAbi;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

/// Runs `run(task, i)` for every `i` in `0..n`, possibly in parallel, and returns when all
/// are done. `run` never unwinds.
pub type ParallelForFn = extern "C" fn(pool: *const c_void, n: usize, task: *const c_void, run: TaskFn);

/// One task body for [`HostServices::parallel_for`]: `run(task, index)`; never unwinds.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct TaskFn {
    pub run: extern "C" fn(task: *const c_void, index: usize),
}

/// Services the host offers to kernels.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct HostServices {
    pub pool: *const c_void,
    pub num_threads: usize,
    /// See [`ParallelForFn`] (written out: abi_stable reads fn pointer types only inline).
    pub parallel_for: extern "C" fn(pool: *const c_void, n: usize, task: *const c_void, run: TaskFn),
}

extern "C" fn sequential_for(_pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    for i in 0..n {
        (run.run)(task, i);
    }
}

impl HostServices {
    /// Services that run everything on the calling thread.
    pub fn sequential() -> Self {
        HostServices { pool: std::ptr::null(), num_threads: 1, parallel_for: sequential_for }
    }
}

/// What a kernel launch gets besides its tensors.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct LaunchContext {
    pub device: DeviceKind,
    pub ordinal: i32,
    /// A `CUstream` on CUDA; null on CPU.
    pub stream: *mut c_void,
    pub workspace: *mut u8,
    pub workspace_bytes: usize,
    pub host: HostServices,
}

unsafe impl Send for LaunchContext {}
unsafe impl Sync for LaunchContext {}

struct Task<'a, F> {
    f: &'a F,
    panicked: AtomicBool,
    message: Mutex<Option<String>>,
}

extern "C" fn trampoline<F: Fn(usize) + Sync>(task: *const c_void, index: usize) {
    // SAFETY: `task` is the `Task<F>` that `parallel_for` passed in and keeps alive.
    let task = unsafe { &*(task as *const Task<'_, F>) };
    if task.panicked.load(Ordering::Relaxed) {
        return;
    }
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (task.f)(index))) {
        task.panicked.store(true, Ordering::Relaxed);
        if let Ok(mut m) = task.message.lock() {
            m.get_or_insert_with(|| crate::author::panic_message(&payload));
        }
    }
}

impl LaunchContext {
    /// A CPU context with no workspace that runs on the calling thread.
    pub fn cpu_sequential() -> Self {
        LaunchContext {
            device: DeviceKind::Cpu,
            ordinal: 0,
            stream: std::ptr::null_mut(),
            workspace: std::ptr::null_mut(),
            workspace_bytes: 0,
            host: HostServices::sequential(),
        }
    }

    pub fn num_threads(&self) -> usize {
        self.host.num_threads.max(1)
    }

    /// Runs `f(i)` for `i in 0..n` on the host's pool. A panic in `f` becomes an error.
    pub fn parallel_for<F: Fn(usize) + Sync>(&self, n: usize, f: F) -> Result<(), PluginError> {
        if n == 0 {
            return Ok(());
        }
        if n == 1 {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)))
                .map_err(|p| PluginError::new(format!("kernel task panicked: {}", crate::author::panic_message(&p))));
        }
        let task = Task { f: &f, panicked: AtomicBool::new(false), message: Mutex::new(None) };
        let run = TaskFn { run: trampoline::<F> };
        (self.host.parallel_for)(self.host.pool, n, &task as *const Task<'_, F> as *const c_void, run);
        if task.panicked.load(Ordering::Relaxed) {
            let msg = task.message.lock().ok().and_then(|m| m.clone()).unwrap_or_default();
            return Err(PluginError::new(format!("kernel task panicked: {msg}")));
        }
        Ok(())
    }

    /// Splits `0..len` into contiguous ranges of at least `min_chunk` items (about a few per
    /// thread) and runs `f(range)` for each on the host's pool.
    pub fn parallel_chunks<F: Fn(std::ops::Range<usize>) + Sync>(
        &self,
        len: usize,
        min_chunk: usize,
        f: F,
    ) -> Result<(), PluginError> {
        let min_chunk = min_chunk.max(1);
        let max_chunks = (len / min_chunk).max(1);
        let chunks = (self.num_threads() * 4).min(max_chunks).max(1);
        let per = len.div_ceil(chunks);
        self.parallel_for(chunks, |c| {
            let start = c * per;
            let end = ((c + 1) * per).min(len);
            if start < end {
                f(start..end)
            }
        })
    }

    /// The workspace as `len` elements of `T`, or an error if the host gave too little.
    #[allow(clippy::mut_from_ref)]
    pub fn workspace<T: Copy>(&self, len: usize) -> Result<&mut [T], PluginError> {
        if len == 0 {
            return Ok(&mut []);
        }
        let need = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            PluginError::new(format!(
                "workspace of {len} elements of {} bytes overflows usize",
                std::mem::size_of::<T>()
            ))
        })?;
        if self.workspace.is_null() || self.workspace_bytes < need {
            return Err(PluginError::new(format!(
                "workspace of {} bytes is smaller than the {need} bytes the kernel asked for",
                self.workspace_bytes
            )));
        }
        if (self.workspace as usize) % std::mem::align_of::<T>() != 0 {
            return Err(PluginError::new("workspace is misaligned"));
        }
        // SAFETY: the host hands the workspace to one launch at a time.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.workspace as *mut T, len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_sizes_are_checked() {
        let mut buf = [0u64; 4];
        let mut ctx = LaunchContext::cpu_sequential();
        ctx.workspace = buf.as_mut_ptr() as *mut u8;
        ctx.workspace_bytes = std::mem::size_of_val(&buf);
        assert_eq!(ctx.workspace::<u64>(4).map(|w| w.len()), Ok(4));
        assert!(ctx.workspace::<u64>(5).is_err());
        let overflow = ctx.workspace::<u64>(usize::MAX / 4).expect_err("overflow is an error");
        assert!(overflow.to_string().contains("overflows"), "{overflow}");
    }
}
