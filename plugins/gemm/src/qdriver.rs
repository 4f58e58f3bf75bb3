//! Runs one quantized matmul (y[T, N] = x[T, K] · w[N, K]ᵀ + bias, w in GGUF blocks) on the
//! host's pool, by one of three methods ([`QPath`]):
//!
//! - `Rows`: weight sub-blocks are dequantized in registers and multiplied with the f32
//!   activations (`qf32`); no workspace beyond per-block activation sums.
//! - `Int` (the default): every activation row is quantized to [`ActBlock`]s (~15 bits in two
//!   bytes, see `qact`) in the workspace (rows spread over the pool), then tasks split the
//!   weight rows and run the integer kernels over all tokens: `qdot`'s for a few tokens (and
//!   without VNNI), `qpanel`'s (weights repacked per task into column-interleaved panels) from
//!   [`PANEL_FROM`] tokens. Both give every row the same bits (see `qdot`).
//! - `Tiles`: tasks split the weight rows; each dequantizes 64-row × K-block tiles of its
//!   weights to f32 straight into 16-column panels in its workspace slot and runs the f32
//!   outer-product kernel of `packed` over all tokens (the weights are widened once per task,
//!   not once per token).
//!
//! [`path_for`] picks `Int` always (batch invariance, and the fastest at every token count
//! measured); `Rows` and `Tiles` stay for comparisons (`RTLLM_GEMM_QPATH=rows|tiles`).

use crate::packed::{packed_fn, PackedBlock, PANEL};
use crate::qact::{quantize_row, ActBlock, QA};
use crate::qdot::{qblock_fn, QBlock, QIsa, GC};
use crate::qf32::{fblock_fn, half_sums, FBlock};
use crate::qformat::Format;
use crate::qpanel;
use crate::simd::Isa;
use rtllm_plugin_api::{quant, DType, DisjointMut, LaunchContext, PluginError};

/// The method of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QPath {
    /// f32 activations, weights dequantized in registers.
    Rows,
    /// Quantized activations, integer dot products.
    Int,
    /// Weight tiles dequantized to f32 in the workspace, f32 micro-kernel.
    Tiles,
}

impl QPath {
    /// Parses `rows`, `int` or `tiles`.
    pub fn parse(s: &str) -> Option<QPath> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rows" => Some(QPath::Rows),
            "int" => Some(QPath::Int),
            "tiles" => Some(QPath::Tiles),
            _ => None,
        }
    }
}

/// The method for `t` tokens of `dtype` weights on `isa`: always the integer method. Its
/// numbers are defined per row (see `qdot`), so a sequence's logits do not depend on how many
/// tokens share the step (a beam or request decoded alone or batched, a prompt prefilled whole
/// or in chunks); `Rows` and `Tiles` (f32 arithmetic, blocked differently per token count) are
/// kept for comparisons (`RTLLM_GEMM_QPATH`). `bench_quantized` (2 threads, a loaded
/// Sapphire Rapids VM, µs) Q4_1 576×1536: T=1 Rows 84 / Int 49 / Tiles 890; T=16 901 / 283 /
/// 922; T=128 4901 / 2237 / 3762. Q8_0 576×49152 (the tied head): T=1 2199 / 2300 / 27330;
/// T=128 152689 / 65728 / 122274.
pub fn path_for(_t: usize, _dtype: DType, _isa: QIsa) -> QPath {
    QPath::Int
}

/// Workspace bytes for any launch of up to `t` tokens with the methods [`path_for`] picks.
pub fn workspace_bytes_upto(t: usize, k: usize) -> usize {
    workspace_bytes(t, k, QPath::Int)
}

/// The fewest tokens for which the integer method repacks weights into panels (VNNI only).
pub const PANEL_FROM: usize = 8;
/// Most tasks (and panel slots) of the panel kernel.
const PANEL_MAX_TASKS: usize = 8;

/// Weight rows per dequantized tile (whole panels).
const DQ_NB: usize = 64;
/// Most K elements per dequantized tile.
const DQ_KC: usize = 768;
/// Most tasks (and workspace slots) of the dequantizing path.
const DQ_MAX_TASKS: usize = 8;
/// Fewest multiply-adds per task of the integer path.
const MIN_TASK_MACS: usize = 1 << 16;

/// One quantized matmul on host memory.
pub struct QProblem<'a> {
    pub x: &'a [f32],
    /// The weight bytes: `n` rows of `k / F::BLOCK` blocks.
    pub w: &'a [u8],
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
    pub t: usize,
    pub k: usize,
    pub n: usize,
}

/// K blocking of the dequantizing path: (count, length), length a multiple of `block`.
fn dq_k_blocking(k: usize, block: usize) -> (usize, usize) {
    let count = k.div_ceil(DQ_KC).max(1);
    let len = k.div_ceil(count).next_multiple_of(block).min(k).max(block.min(k));
    (k.div_ceil(len.max(1)), len)
}

/// Bytes of quantized activations for `t` rows of `k`.
pub fn act_bytes(t: usize, k: usize) -> usize {
    t * (k / QA) * std::mem::size_of::<ActBlock>()
}

/// Bytes of one panel slot of the integer method (whole activation blocks).
fn panel_slot_bytes(nsub: usize) -> usize {
    qpanel::slot_bytes(nsub).next_multiple_of(std::mem::size_of::<ActBlock>())
}

/// f32s of one dequantizing task's panel slot.
fn dq_slot(k: usize) -> usize {
    DQ_NB * k.min(DQ_KC.next_multiple_of(256))
}

/// Workspace bytes for up to `t` tokens (both methods' needs; the larger applies).
pub fn workspace_bytes(t: usize, k: usize, path: QPath) -> usize {
    match path {
        QPath::Rows => t * (k / QA) * std::mem::size_of::<[f32; 2]>(),
        QPath::Int if t >= PANEL_FROM => act_bytes(t, k) + PANEL_MAX_TASKS * panel_slot_bytes(k / QA),
        QPath::Int => act_bytes(t, k),
        QPath::Tiles => DQ_MAX_TASKS * dq_slot(k) * std::mem::size_of::<f32>(),
    }
}

/// Part `i` of `parts` of `0..len` in whole `unit`s.
fn split(len: usize, unit: usize, parts: usize, i: usize) -> (usize, usize) {
    let units = len.div_ceil(unit);
    ((i * units / parts * unit).min(len), ((i + 1) * units / parts * unit).min(len))
}

fn check<F: Format>(p: &QProblem<'_>) -> Result<(), PluginError> {
    let QProblem { x, w, bias, y, t, k, n } = p;
    let (t, k, n) = (*t, *k, *n);
    if k % F::BLOCK != 0 {
        return Err(PluginError::new(format!(
            "matmul: K={k} is not a multiple of {}'s {}-element blocks",
            F::DTYPE,
            F::BLOCK
        )));
    }
    let row_bytes = k / F::BLOCK * F::BYTES;
    if x.len() != t * k || w.len() != n * row_bytes || y.len() != t * n || bias.is_some_and(|b| b.len() != n) {
        return Err(PluginError::new(format!(
            "matmul: buffer lengths do not match T={t}, K={k}, N={n} ({})",
            F::DTYPE
        )));
    }
    Ok(())
}

/// Runs `p` with method `path` on `isa`.
pub fn run<F: Format>(ctx: &LaunchContext, isa: QIsa, path: QPath, p: QProblem<'_>) -> Result<(), PluginError> {
    check::<F>(&p)?;
    if p.t == 0 || p.n == 0 {
        return Ok(());
    }
    if p.k == 0 {
        for row in p.y.chunks_exact_mut(p.n) {
            match p.bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return Ok(());
    }
    match path {
        QPath::Rows => run_rows::<F>(ctx, isa, p),
        QPath::Int => run_int::<F>(ctx, isa, p),
        QPath::Tiles => run_tiles::<F>(ctx, isa, p),
    }
}

fn run_int<F: Format>(ctx: &LaunchContext, isa: QIsa, p: QProblem<'_>) -> Result<(), PluginError> {
    let QProblem { x, w, bias, y, t, k, n } = p;
    let nsub = k / QA;
    let panel = isa == QIsa::Avx512Vnni && t >= PANEL_FROM;
    let tasks = if panel {
        n.div_ceil(GC).min((ctx.num_threads() * 2).min(PANEL_MAX_TASKS)).max(1)
    } else {
        task_count(ctx.num_threads(), t, k, n)
    };
    // Panel slots follow the activations, in whole blocks.
    let slot_blocks = panel_slot_bytes(nsub) / std::mem::size_of::<ActBlock>();
    let ws = ctx
        .workspace::<ActBlock>(t * nsub + if panel { tasks * slot_blocks } else { 0 })
        .map_err(|e| e.context(format_args!("matmul {}: quantized activations", F::DTYPE)))?;
    let (acts, slots) = ws.split_at_mut(t * nsub);
    let simd = isa.has_avx2();
    if t == 1 {
        quantize_row(x, acts, simd);
    } else {
        ctx.parallel_chunks_mut([&mut *acts], nsub, 8, |rows, [out]| {
            for (r, out) in rows.zip(out.chunks_exact_mut(nsub)) {
                quantize_row(&x[r * k..(r + 1) * k], out, simd);
            }
        })?;
    }
    let row_bytes = k / F::BLOCK * F::BYTES;
    let block = qblock_fn::<F>(isa);
    let slots: &mut [u8] = rtllm_plugin_api::bytemuck::cast_slice_mut(slots);
    let (acts, slots, y_ptr) = (&*acts, DisjointMut::new(slots), DisjointMut::new(y));
    let slot_bytes = slot_blocks * std::mem::size_of::<ActBlock>();
    ctx.parallel_for(tasks, |task| {
        let (c0, c1) = split(n, GC, tasks, task);
        if c0 >= c1 {
            return;
        }
        let b = QBlock {
            acts: acts.as_ptr(),
            lda: nsub,
            w: w[c0 * row_bytes..].as_ptr(),
            row_bytes,
            nsub,
            // SAFETY: columns c0..c1 of every row of y belong to this task alone.
            y: unsafe { y_ptr.as_mut_ptr().add(c0) },
            ldy: n,
            bias: bias.map_or(std::ptr::null(), |b| b[c0..].as_ptr()),
            rows: t,
            cols: c1 - c0,
        };
        #[cfg(target_arch = "x86_64")]
        if panel {
            // SAFETY: as below; slot `task` (slot_bytes ≥ qpanel::slot_bytes(nsub)) of the
            // workspace belongs to this task alone, and `panel` implies VNNI on this CPU.
            unsafe { qpanel::block_panel::<F>(&b, slots.as_mut_ptr().add(task * slot_bytes)) };
            return;
        }
        let _ = (panel, &slots, slot_bytes);
        // SAFETY: the block lies inside acts (t*nsub blocks), w (n rows) and y (checked in
        // `check`); `isa` was detected on this CPU.
        unsafe { block(&b) }
    })
}

/// Tasks of the row-splitting methods: enough work each, a few per thread, and a whole
/// multiple of the thread count once there is work for every thread (5 equal tasks on 2
/// threads leave one thread 3/5 of the work: a 20% longer launch for decode's 576×576).
fn task_count(threads: usize, t: usize, k: usize, n: usize) -> usize {
    let macs = t.saturating_mul(k).saturating_mul(n);
    let goal = if threads <= 1 {
        1
    } else {
        let goal = (macs / MIN_TASK_MACS).clamp(1, threads * 4);
        if goal >= threads {
            goal / threads * threads
        } else {
            goal
        }
    };
    n.div_ceil(GC).min(goal).max(1)
}

fn run_rows<F: Format>(ctx: &LaunchContext, isa: QIsa, p: QProblem<'_>) -> Result<(), PluginError> {
    let QProblem { x, w, bias, y, t, k, n } = p;
    let nsub = k / QA;
    let xs = ctx
        .workspace::<[f32; 2]>(t * nsub)
        .map_err(|e| e.context(format_args!("matmul {}: activation sums", F::DTYPE)))?;
    for (row, out) in x.chunks_exact(k).zip(xs.chunks_exact_mut(nsub)) {
        half_sums(row, out);
    }
    let row_bytes = k / F::BLOCK * F::BYTES;
    let tasks = task_count(ctx.num_threads(), t, k, n);
    let block = fblock_fn::<F>(isa);
    let (xs, y_ptr) = (DisjointMut::new(xs), DisjointMut::new(y));
    ctx.parallel_for(tasks, |task| {
        let (c0, c1) = split(n, 4, tasks, task);
        if c0 >= c1 {
            return;
        }
        let b = FBlock {
            x: x.as_ptr(),
            ldx: k,
            xs: xs.as_mut_ptr(),
            w: w[c0 * row_bytes..].as_ptr(),
            row_bytes,
            nsub,
            // SAFETY: columns c0..c1 of every row of y belong to this task alone.
            y: unsafe { y_ptr.as_mut_ptr().add(c0) },
            ldy: n,
            bias: bias.map_or(std::ptr::null(), |b| b[c0..].as_ptr()),
            rows: t,
            cols: c1 - c0,
        };
        // SAFETY: the block lies inside x, xs (t*nsub sums), w and y (checked in `check`);
        // `isa` was detected on this CPU.
        unsafe { block(&b) }
    })
}

fn run_tiles<F: Format>(ctx: &LaunchContext, isa: QIsa, p: QProblem<'_>) -> Result<(), PluginError> {
    let QProblem { x, w, bias, y, t, k, n } = p;
    let row_bytes = k / F::BLOCK * F::BYTES;
    let (k_count, k_len) = dq_k_blocking(k, F::BLOCK);
    let slot = dq_slot(k);
    let tasks = n.div_ceil(PANEL).min((ctx.num_threads() * 2).min(DQ_MAX_TASKS)).max(1);
    let ws = ctx
        .workspace::<f32>(tasks * slot)
        .map_err(|e| e.context(format_args!("matmul {}: dequantized tiles", F::DTYPE)))?;
    let fisa = if isa.has_avx2() { Isa::Avx2Fma } else { Isa::Portable };
    let kernel = packed_fn(fisa);
    let (ws, y_ptr) = (DisjointMut::new(ws), DisjointMut::new(y));
    let failed = std::sync::atomic::AtomicBool::new(false);
    ctx.parallel_for(tasks, |task| {
        let (c0, c1) = split(n, PANEL, tasks, task);
        // SAFETY: slot `task` of the workspace (tasks*slot f32s) belongs to this task alone.
        let panels = unsafe { ws.slice_mut(task * slot..(task + 1) * slot) };
        let mut line = [0f32; DQ_KC + 256];
        for nb0 in (c0..c1).step_by(DQ_NB) {
            let cols = DQ_NB.min(c1 - nb0);
            for kb in 0..k_count {
                let k0 = kb * k_len;
                let depth = k_len.min(k - k0);
                let bytes = depth / F::BLOCK * F::BYTES;
                let npanels = cols.div_ceil(PANEL);
                for c in 0..npanels * PANEL {
                    let base = c / PANEL * PANEL * depth + c % PANEL;
                    if c < cols {
                        let src = &w[(nb0 + c) * row_bytes + k0 / F::BLOCK * F::BYTES..][..bytes];
                        if quant::dequantize_row(F::DTYPE, src, &mut line[..depth]).is_err() {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                        for (kk, v) in line[..depth].iter().enumerate() {
                            panels[base + kk * PANEL] = *v;
                        }
                    } else {
                        for kk in 0..depth {
                            panels[base + kk * PANEL] = 0.0;
                        }
                    }
                }
                let b = PackedBlock {
                    x: x[k0..].as_ptr(),
                    ldx: k,
                    panels: panels.as_ptr(),
                    // SAFETY: columns nb0..nb0+cols of every row of y belong to this task.
                    y: unsafe { y_ptr.as_mut_ptr().add(nb0) },
                    ldy: n,
                    bias: match bias {
                        Some(b) if kb == 0 => b[nb0..].as_ptr(),
                        _ => std::ptr::null(),
                    },
                    accumulate: kb > 0,
                    rows: t,
                    cols,
                    depth,
                };
                // SAFETY: the block lies inside x, the panels and y; `fisa` runs on this CPU.
                unsafe { kernel(&b) }
            }
        }
    })?;
    if failed.into_inner() {
        return Err(PluginError::new(format!("matmul {}: dequantizing a weight tile failed", F::DTYPE)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_tasks_are_a_multiple_of_the_threads() {
        for threads in [2usize, 3, 4] {
            // SmolLM2 decode shapes (T, K, N): q/o, k/v, gate/up, down, lm_head.
            for (t, k, n) in [(1, 576, 576), (1, 576, 192), (1, 576, 1536), (1, 1536, 576), (1, 576, 49152)] {
                let tasks = task_count(threads, t, k, n);
                assert!(tasks >= 1 && tasks <= threads * 4, "{t}x{k}x{n}: {tasks}");
                if t * k * n / MIN_TASK_MACS >= threads {
                    assert_eq!(tasks % threads, 0, "{threads} threads, {t}x{k}x{n}: {tasks} tasks");
                }
            }
        }
        assert_eq!(task_count(1, 1, 576, 49152), 1);
    }

    #[test]
    fn dequant_k_blocks_are_whole_blocks() {
        for (k, block) in [(576usize, 32usize), (1536, 32), (2048, 256), (256, 256), (4096, 32)] {
            let (count, len) = dq_k_blocking(k, block);
            assert_eq!(len % block, 0, "k={k}");
            assert!(len <= DQ_KC.next_multiple_of(256));
            assert!(count * len >= k && (count - 1) * len < k);
            assert!(DQ_NB * len <= dq_slot(k));
        }
    }
}
