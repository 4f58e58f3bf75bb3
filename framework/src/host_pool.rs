//! The host's CPU thread pool, offered to every plugin's kernels through
//! [`HostServices::parallel_for`], so all dylibs share one pool instead of each spinning its own.
//! Size: `RTLLM_NUM_THREADS`, or every core.

use rayon::prelude::*;
use rtllm_plugin_api::{HostServices, LaunchEnv, TaskFn};
use std::ffi::c_void;
use std::sync::OnceLock;

/// The environment variable that sets the pool's thread count.
pub const NUM_THREADS_ENV: &str = "RTLLM_NUM_THREADS";

#[derive(Debug, thiserror::Error)]
pub enum HostPoolError {
    #[error("{NUM_THREADS_ENV}={value:?} is not a positive integer")]
    BadThreadCount { value: String },
    #[error("could not start the host thread pool: {0}")]
    Build(#[from] rayon::ThreadPoolBuildError),
}

/// A rayon pool that kernels reach through [`HostServices`].
pub struct HostPool {
    /// `None` only when the OS refused to start any thread: tasks then run on the caller.
    pool: Option<rayon::ThreadPool>,
    num_threads: usize,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPool").field("num_threads", &self.num_threads).finish()
    }
}

/// Runs `run(task, i)` for `i in 0..n` on the pool `pool` points at (a [`HostPool`]).
///
/// # Safety
/// `pool` is null or a live `HostPool`; `task` is valid for `run` until this returns.
unsafe extern "C" fn pool_parallel_for(pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    let task = task as usize;
    // SAFETY: the caller keeps `task` valid until every index ran (rayon joins before returning).
    let body = move |i: usize| unsafe { (run.run)(task as *const c_void, i) };
    if pool.is_null() {
        (0..n).for_each(body);
        return;
    }
    // SAFETY: `services()` stores a pointer to a live `HostPool`; the pool outlives every
    // context made from it (the global pool is 'static; others are documented to).
    let pool = unsafe { &*(pool as *const HostPool) };
    match &pool.pool {
        Some(p) => p.install(|| (0..n).into_par_iter().for_each(body)),
        None => (0..n).for_each(body),
    }
}

impl HostPool {
    /// A pool of `num_threads` threads (`None`: one per core).
    pub fn new(num_threads: Option<usize>) -> Result<HostPool, HostPoolError> {
        let threads = num_threads.filter(|&n| n > 0).unwrap_or_else(default_threads);
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("rtllm-host-{i}")).build()?;
        Ok(HostPool { pool: Some(pool), num_threads: threads })
    }

    /// A pool sized by `RTLLM_NUM_THREADS` (unset: one thread per core).
    pub fn from_env() -> Result<HostPool, HostPoolError> {
        HostPool::new(threads_from_env()?)
    }

    /// The process-wide default pool. A bad `RTLLM_NUM_THREADS` is logged and ignored.
    pub fn global() -> &'static HostPool {
        static GLOBAL: OnceLock<HostPool> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let threads = threads_from_env().unwrap_or_else(|e| {
                tracing::warn!("{e}; using one thread per core");
                None
            });
            match HostPool::new(threads) {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::warn!("{e}; running kernels' parallel loops on the calling thread");
                    single_threaded()
                }
            }
        })
    }

    pub fn num_threads(&self) -> usize {
        self.num_threads
    }

    /// The services table kernels see. It points at `self`: the pool must outlive every
    /// launch that uses it.
    pub fn services(&self) -> HostServices {
        // SAFETY: `pool_parallel_for` runs every index once on this pool (or inline) and
        // returns after all ran; callers keep the pool alive while the services are used.
        unsafe { HostServices::new(self as *const HostPool as *const c_void, self.num_threads, pool_parallel_for) }
    }

    /// A CPU launch environment over `workspace` that runs kernels' parallel loops on this
    /// pool. The pool must stay alive while the environment is used.
    pub fn cpu_env<'a>(&self, workspace: &'a mut [u8]) -> LaunchEnv<'a> {
        LaunchEnv::cpu(self.services(), workspace)
    }

    /// Runs `f` inside the pool (so rayon calls in `f` use these threads).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn single_threaded() -> HostPool {
    HostPool { pool: None, num_threads: 1 }
}

fn threads_from_env() -> Result<Option<usize>, HostPoolError> {
    match std::env::var(NUM_THREADS_ENV) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(HostPoolError::BadThreadCount { value: v }),
        },
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parallel_for_runs_every_index_once() {
        let pool = HostPool::new(Some(3)).unwrap();
        let mut ws = vec![0u8; 16];
        let mut env = pool.cpu_env(&mut ws);
        let ctx = env.context();
        assert_eq!(ctx.num_threads(), 3);
        assert_eq!(ctx.workspace_bytes(), 16);
        let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        ctx.parallel_for(1000, |i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        let sum = AtomicUsize::new(0);
        ctx.parallel_chunks(777, 10, |r| {
            sum.fetch_add(r.len(), Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(sum.load(Ordering::Relaxed), 777);
    }

    #[test]
    fn a_panicking_task_is_an_error_and_the_pool_survives() {
        let mut env = HostPool::global().cpu_env(&mut []);
        let ctx = env.context();
        let err = ctx.parallel_for(64, |i| assert!(i != 13, "task {i} failed")).unwrap_err();
        assert!(err.message().contains("panicked"), "{err}");
        let count = AtomicUsize::new(0);
        ctx.parallel_for(64, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
