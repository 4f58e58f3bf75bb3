//! Launch-time helpers shared by the elementwise kernels: argument-count and concrete-shape
//! checks (from plugin-api's shared `shapes`), and a row splitter that hands each task of the host's pool its own output rows.

use rtllm_plugin_api::{LaunchContext, PluginError};
use std::ops::Range;

pub use rtllm_plugin_api::shapes::{expect_args, expect_shape, shape_of_rank};

/// A raw base pointer that pool tasks may share; each task derives a disjoint sub-slice.
struct SharedMut<T>(*mut T);

// SAFETY: the pointer is only used to build disjoint sub-slices (see `par_rows`).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Runs `f(rows, out_rows)` over disjoint ranges of the rows of `out` (rows of `row_len`
/// elements) on the host's pool, with at least `min_elems` elements per task; small work runs
/// inline on the calling thread.
pub fn par_rows<T, F>(
    ctx: &LaunchContext,
    out: &mut [T],
    row_len: usize,
    min_elems: usize,
    f: F,
) -> Result<(), PluginError>
where
    T: Send,
    F: Fn(Range<usize>, &mut [T]) + Sync,
{
    if row_len == 0 || out.is_empty() {
        return Ok(());
    }
    let rows = out.len() / row_len;
    let min_rows = min_elems.div_ceil(row_len).max(1);
    if rows <= min_rows || ctx.num_threads() == 1 {
        f(0..rows, &mut out[..rows * row_len]);
        return Ok(());
    }
    let base = SharedMut(out.as_mut_ptr());
    ctx.parallel_chunks(rows, min_rows, |r| {
        // SAFETY: `parallel_chunks` hands out disjoint row ranges within `0..rows`, and `out`
        // stays mutably borrowed (so untouched elsewhere) until every task has finished.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(r.start * row_len), r.len() * row_len) };
        f(r, chunk)
    })
}
