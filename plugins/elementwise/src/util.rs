//! Launch-time helpers shared by the elementwise kernels: argument-count and concrete-shape
//! checks (from plugin-api's shared `shapes`), and a row splitter that hands each task of the
//! host's pool its own output rows.

use rtllm_plugin_api::{LaunchContext, PluginError};
use std::ops::Range;

pub use rtllm_plugin_api::shapes::{expect_args, expect_shape, shape_of_rank};

/// Runs `f(rows, out_rows)` over disjoint ranges of the rows of `out` (rows of `row_len`
/// elements) on the host's pool, with at least `min_elems` elements per task; small work runs
/// inline on the calling thread.
pub fn par_rows<T, F>(
    ctx: &LaunchContext<'_>,
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
    let min_rows = min_elems.div_ceil(row_len).max(1);
    let rows = out.len() / row_len;
    ctx.parallel_chunks_mut([&mut out[..rows * row_len]], row_len, min_rows, |r, [chunk]| f(r, chunk))
}
