//! Test-only: a launch environment on a rayon pool, as the host's pool works (for the ignored
//! benchmarks). Threaded test environments and test data come from `rtllm_plugin_api::testing`.

use rtllm_plugin_api::{HostServices, LaunchEnv, TaskFn};
use std::ffi::c_void;

/// # Safety
/// `pool` must be the `rayon::ThreadPool` that `pooled` was given, and `task` valid for `run`.
unsafe extern "C" fn rayon_for(pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    use rayon::prelude::*;
    let task = task as usize;
    // SAFETY: the caller's contract.
    let pool = unsafe { &*(pool as *const rayon::ThreadPool) };
    // SAFETY: `install` returns after every index ran, while `task` is still valid.
    pool.install(|| (0..n).into_par_iter().for_each(|i| unsafe { (run.run)(task as *const c_void, i) }));
}

/// A CPU environment on a rayon pool, as the host's pool works (for benchmarks).
pub fn pooled<'a>(pool: &'a rayon::ThreadPool, workspace: &'a mut [f32]) -> LaunchEnv<'a> {
    // SAFETY: `rayon_for` runs every index once on `pool`, which outlives the environment.
    let host = unsafe {
        HostServices::new(pool as *const rayon::ThreadPool as *const c_void, pool.current_num_threads(), rayon_for)
    };
    LaunchEnv::cpu(host, rtllm_plugin_api::bytemuck::cast_slice_mut(workspace))
}
