//! Test-only: a launch context on a rayon pool, as the host's pool works (for the ignored
//! benchmarks). Threaded test contexts and test data come from `rtllm_plugin_api::testing`.

use rtllm_plugin_api::{testing::threaded, HostServices, LaunchContext, TaskFn};
use std::ffi::c_void;

extern "C" fn rayon_for(pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    use rayon::prelude::*;
    let task = task as usize;
    // SAFETY: `pool` is the `rayon::ThreadPool` that `pooled` was given, alive for the context.
    let pool = unsafe { &*(pool as *const rayon::ThreadPool) };
    pool.install(|| (0..n).into_par_iter().for_each(|i| (run.run)(task as *const c_void, i)));
}

/// A CPU context on a rayon pool, as the host's pool works (for benchmarks).
pub fn pooled(pool: &rayon::ThreadPool, workspace: &mut [f32]) -> LaunchContext {
    let mut ctx = threaded(workspace);
    ctx.host = HostServices {
        pool: pool as *const rayon::ThreadPool as *const c_void,
        num_threads: pool.current_num_threads(),
        parallel_for: rayon_for,
    };
    ctx
}
