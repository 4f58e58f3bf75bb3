//! Helpers for testing kernels outside a host: a `LaunchContext` whose `parallel_for` spreads
//! tasks over scoped std threads (so a kernel's parallel paths really run concurrently), host
//! tensor arguments over slices, and deterministic test data. Plugin crates use these in their
//! unit tests; the real host passes its own thread pool.

use crate::{DeviceKind, HostServices, LaunchContext, TaskFn, TensorArg, TensorMeta};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Worker threads of [`threaded`] contexts.
pub const THREADS: usize = 4;

extern "C" fn threaded_for(_pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    let next = AtomicUsize::new(0);
    let task = task as usize;
    std::thread::scope(|s| {
        for _ in 0..THREADS.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                (run.run)(task as *const c_void, i);
            });
        }
    });
}

/// A CPU context over [`THREADS`] std threads with `workspace` (may be empty) as its workspace.
pub fn threaded(workspace: &mut [f32]) -> LaunchContext {
    let mut ctx = LaunchContext::cpu_sequential();
    ctx.host = HostServices { pool: std::ptr::null(), num_threads: THREADS, parallel_for: threaded_for };
    if !workspace.is_empty() {
        ctx.workspace = workspace.as_mut_ptr() as *mut u8;
        ctx.workspace_bytes = std::mem::size_of_val(workspace);
    }
    ctx
}

/// A host tensor argument over `data`.
pub fn arg<T>(meta: TensorMeta, data: &mut [T]) -> TensorArg {
    // SAFETY: tests keep `data` alive and sized for `meta` while the argument is used.
    unsafe { TensorArg::new(meta, data.as_mut_ptr() as *mut u8, DeviceKind::Cpu) }
}

/// `len` deterministic pseudo-random values in [-1, 1).
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_context_runs_every_task_once() {
        let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        threaded(&mut [])
            .parallel_for(100, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        assert_eq!(data(3, 7), data(3, 7));
        assert!(data(1000, 1).iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
