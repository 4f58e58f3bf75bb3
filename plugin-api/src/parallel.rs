//! Parallel work on the host's pool for CPU kernels: [`LaunchContext::parallel_for`] over
//! indices, [`LaunchContext::parallel_chunks`] over index ranges, and
//! [`LaunchContext::parallel_chunks_mut`] which splits output buffers into disjoint `&mut`
//! chunks (the safe way for tasks to write one output). For writes that are not contiguous
//! chunks (a GEMM task's column tile), [`DisjointMut`] is the one shared, documented way to
//! let tasks write disjoint parts of one buffer.

use crate::context::{LaunchContext, TaskFn};
use crate::error::PluginError;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

struct Task<'a, F> {
    f: &'a F,
    panicked: AtomicBool,
    message: Mutex<Option<String>>,
}

unsafe extern "C" fn trampoline<F: Fn(usize) + Sync>(task: *const c_void, index: usize) {
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

/// Contiguous ranges covering `0..len` in chunks of at least `min_chunk` items (about four per
/// thread): `(chunks, per_chunk)`.
fn chunking(len: usize, min_chunk: usize, threads: usize) -> (usize, usize) {
    let min_chunk = min_chunk.max(1);
    let max_chunks = (len / min_chunk).max(1);
    let chunks = (threads * 4).min(max_chunks).max(1);
    (chunks, len.div_ceil(chunks).max(1))
}

impl LaunchContext<'_> {
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
        // SAFETY: `task` lives on this frame until `run` returns, and `trampoline::<F>` reads
        // it as exactly this type.
        unsafe { self.host().run(n, &task as *const Task<'_, F> as *const c_void, run) };
        if task.panicked.load(Ordering::Relaxed) {
            let msg = task.message.lock().ok().and_then(|m| m.clone()).unwrap_or_default();
            return Err(PluginError::new(format!("kernel task panicked: {msg}")));
        }
        Ok(())
    }

    /// Splits `0..len` into contiguous ranges of at least `min_chunk` items (about a few per
    /// thread) and runs `f(range)` for each on the host's pool.
    pub fn parallel_chunks<F: Fn(Range<usize>) + Sync>(
        &self,
        len: usize,
        min_chunk: usize,
        f: F,
    ) -> Result<(), PluginError> {
        let (chunks, per) = chunking(len, min_chunk, self.num_threads());
        self.parallel_for(chunks, |c| {
            let start = c * per;
            let end = ((c + 1) * per).min(len);
            if start < end {
                f(start..end)
            }
        })
    }

    /// Splits each of `outputs` (every one `rows * row_len` elements) into the same disjoint row
    /// ranges of at least `min_rows` rows and runs `f(rows, chunks)` for each on the host's pool,
    /// `chunks[i]` being those rows of `outputs[i]`. Small work runs inline.
    pub fn parallel_chunks_mut<T: Send, const N: usize, F>(
        &self,
        outputs: [&mut [T]; N],
        row_len: usize,
        min_rows: usize,
        f: F,
    ) -> Result<(), PluginError>
    where
        F: Fn(Range<usize>, [&mut [T]; N]) + Sync,
    {
        let Some(len) = outputs.first().map(|o| o.len()) else { return Ok(()) };
        if row_len == 0 || len % row_len != 0 || outputs.iter().any(|o| o.len() != len) {
            return Err(PluginError::new(format!(
                "parallel_chunks_mut: outputs of {:?} elements are not the same whole number of {row_len}-element rows",
                outputs.iter().map(|o| o.len()).collect::<Vec<_>>()
            )));
        }
        let rows = len / row_len;
        if rows == 0 {
            return Ok(());
        }
        if rows <= min_rows.max(1) || self.num_threads() == 1 {
            f(0..rows, outputs);
            return Ok(());
        }
        let shared = outputs.map(DisjointMut::new);
        self.parallel_chunks(rows, min_rows, |r| {
            // SAFETY: `parallel_chunks` hands each task a disjoint row range of `0..rows`, so no
            // two live chunks overlap; the buffers stay borrowed until every task returns.
            let chunks = shared.each_ref().map(|s| unsafe { s.slice_mut(r.start * row_len..r.end * row_len) });
            f(r, chunks)
        })
    }
}

/// One mutable buffer that pool tasks share to write disjoint parts of it: it keeps the
/// buffer's borrow (so nothing else reaches it while tasks run) and checks bounds; the caller
/// proves that concurrent parts do not overlap.
pub struct DisjointMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _buf: PhantomData<&'a mut [T]>,
}

// SAFETY: it is a `&mut [T]` that tasks split among themselves (see `slice_mut`).
unsafe impl<T: Send> Send for DisjointMut<'_, T> {}
unsafe impl<T: Send> Sync for DisjointMut<'_, T> {}

impl<'a, T> DisjointMut<'a, T> {
    pub fn new(buf: &'a mut [T]) -> Self {
        DisjointMut { ptr: buf.as_mut_ptr(), len: buf.len(), _buf: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `range` of the buffer (panics if out of bounds, like slice indexing).
    ///
    /// # Safety
    /// No other live slice from this `DisjointMut` may overlap `range` while the result lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len, "range {range:?} outside {} elements", self.len);
        // SAFETY: in bounds (checked); exclusivity is the caller's proof.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// The buffer's base address, for kernels that write strided tiles through raw pointers
    /// (every write is `unsafe` there and must stay inside `len` and disjoint from other tasks).
    pub fn as_mut_ptr(&self) -> *mut T {
        self.ptr
    }
}

#[cfg(test)]
mod tests {
    use crate::context::LaunchEnv;
    use crate::testing;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn chunks_mut_cover_every_row_once() {
        let mut env = testing::threaded_env::<u8>(&mut []);
        let (mut a, mut b) = (vec![0u32; 1000 * 3], vec![0u32; 1000 * 3]);
        env.context()
            .parallel_chunks_mut([&mut a, &mut b], 3, 7, |rows, [x, y]| {
                assert_eq!(x.len(), rows.len() * 3);
                for (i, r) in rows.clone().enumerate() {
                    x[i * 3..i * 3 + 3].fill(r as u32 + 1);
                    y[i * 3] += 1;
                }
            })
            .unwrap();
        assert!(a.chunks(3).enumerate().all(|(r, row)| row.iter().all(|&v| v == r as u32 + 1)));
        assert!(b.chunks(3).all(|row| row[0] == 1));
        let e = env.context().parallel_chunks_mut([&mut a[..5]], 3, 1, |_, _| {}).unwrap_err();
        assert!(e.message().contains("whole number"), "{e}");
    }

    #[test]
    fn a_panicking_task_is_an_error() {
        let mut env = LaunchEnv::cpu_sequential();
        let hits = AtomicUsize::new(0);
        let e = env
            .context()
            .parallel_for(4, |i| {
                hits.fetch_add(1, Ordering::Relaxed);
                assert!(i != 1, "task one fails");
            })
            .unwrap_err();
        assert!(e.message().contains("task one fails"), "{e}");
    }
}
