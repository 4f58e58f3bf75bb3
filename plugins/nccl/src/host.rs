//! The CPU provider's arithmetic over the slots of one collective call: sums in f32 in rank
//! order (so every rank gets bit-identical results), gathers and identity copies. Ranks split
//! the work: for all_reduce rank r sums share r of the elements and writes it into every
//! rank's output; for all_gather and reduce_scatter each rank fills its own output.

use crate::rendezvous::Slot;
use rtllm_plugin_api::shapes::collective::Split;
use rtllm_plugin_api::{LaunchContext, PluginError};

/// An element type the collectives sum: converted to f32 and back.
pub trait Float: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Float for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Float for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

impl Float for half::f16 {
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// Elements summed per block (an f32 accumulator on the stack).
const BLOCK: usize = 512;
/// Smallest piece of work handed to one pool task.
const MIN_CHUNK: usize = 16 * 1024;

/// The range of `n` items that share `r` of `w` covers (shares differ by at most one).
pub fn share(n: usize, w: usize, r: usize) -> std::ops::Range<usize> {
    (n * r / w)..(n * (r + 1) / w)
}

/// Sums `len` elements at `ins[s] + at_in` over `s` in order and stores the result at
/// `outs[k] + at_out` for every `k`.
///
/// # Safety
/// Every address must hold `T`s covering the ranges touched, and no one else may write the
/// output ranges meanwhile.
unsafe fn sum_run<T: Float>(ins: &[usize], at_in: usize, outs: &[usize], at_out: usize, len: usize) {
    let mut acc = [0f32; BLOCK];
    let mut done = 0;
    while done < len {
        let n = BLOCK.min(len - done);
        let acc = &mut acc[..n];
        for (s, &base) in ins.iter().enumerate() {
            let src = std::slice::from_raw_parts((base as *const T).add(at_in + done), n);
            if s == 0 {
                acc.iter_mut().zip(src).for_each(|(a, v)| *a = v.to_f32());
            } else {
                acc.iter_mut().zip(src).for_each(|(a, v)| *a += v.to_f32());
            }
        }
        for &base in outs {
            let dst = std::slice::from_raw_parts_mut((base as *mut T).add(at_out + done), n);
            dst.iter_mut().zip(acc.iter()).for_each(|(d, &a)| *d = T::from_f32(a));
        }
        done += n;
    }
}

fn addresses(slots: &[Slot], pick: impl Fn(&Slot) -> usize) -> Vec<usize> {
    slots.iter().map(pick).collect()
}

/// all_reduce: rank `rank` sums its share of the `numel` elements and writes it to every
/// rank's output.
///
/// # Safety
/// Every slot's input and output hold `numel` `T`s and stay valid until every rank's work is
/// done; each rank writes only its own share.
pub unsafe fn all_reduce<T: Float>(
    ctx: &LaunchContext,
    slots: &[Slot],
    rank: usize,
    numel: usize,
) -> Result<(), PluginError> {
    let (ins, outs) = (addresses(slots, |s| s.input), addresses(slots, |s| s.output));
    let mine = share(numel, slots.len(), rank);
    ctx.parallel_chunks(mine.len(), MIN_CHUNK, |range| {
        let at = mine.start + range.start;
        // SAFETY: the caller's contract; `range` lies in this rank's share.
        unsafe { sum_run::<T>(&ins, at, &outs, at, range.len()) }
    })
}

/// reduce_scatter: rank `rank`'s output `[outer, C]` (C = len/world * inner) is the sum over
/// ranks of slice `rank` of each input `[outer, world * C]`.
///
/// # Safety
/// Every input holds x's `split` elements, this rank's output its `[outer, C]`, all valid
/// until every rank's work is done.
pub unsafe fn reduce_scatter<T: Float>(
    ctx: &LaunchContext,
    slots: &[Slot],
    rank: usize,
    split: Split,
) -> Result<(), PluginError> {
    let w = slots.len();
    let c = split.len / w * split.inner;
    let ins = addresses(slots, |s| s.input);
    let out = [slots[rank].output];
    ctx.parallel_chunks(split.outer * c, MIN_CHUNK, |range| {
        let mut p = range.start;
        while p < range.end {
            let (o, j) = (p / c, p % c);
            let run = (c - j).min(range.end - p);
            // SAFETY: the caller's contract; the run stays inside row `o` of both layouts.
            unsafe { sum_run::<T>(&ins, o * w * c + rank * c + j, &out, p, run) };
            p += run;
        }
    })
}

/// all_gather: rank `rank`'s output `[outer, world, L]` (L = len * inner) gets rank s's row o
/// of x `[outer, L]` at `[o, s]`. Copies bytes (`esize` per element).
///
/// # Safety
/// Every input holds x's `split` elements of `esize` bytes, this rank's output `world` times
/// as many, all valid until every rank's work is done.
pub unsafe fn all_gather(
    ctx: &LaunchContext,
    slots: &[Slot],
    rank: usize,
    split: Split,
    esize: usize,
) -> Result<(), PluginError> {
    let w = slots.len();
    let l = split.row();
    let ins = addresses(slots, |s| s.input);
    let out = slots[rank].output;
    ctx.parallel_chunks(split.outer * w * l, MIN_CHUNK, |range| {
        let mut p = range.start;
        while p < range.end {
            let (o, s, j) = (p / (w * l), (p / l) % w, p % l);
            let run = (l - j).min(range.end - p);
            // SAFETY: the caller's contract; the run stays inside row `o` of rank `s`'s input.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (ins[s] as *const u8).add((o * l + j) * esize),
                    (out as *mut u8).add(p * esize),
                    run * esize,
                )
            };
            p += run;
        }
    })
}

/// Copies `bytes` bytes from `src` to `dst` (world_size 1); nothing when they are the same.
///
/// # Safety
/// Both addresses cover `bytes` bytes; the ranges are the same or do not overlap.
pub unsafe fn identity(src: *const u8, dst: *mut u8, bytes: usize) {
    if bytes > 0 && !std::ptr::eq(src, dst) {
        std::ptr::copy_nonoverlapping(src, dst, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for (n, w) in [(0, 3), (10, 3), (7, 4), (1, 2)] {
            let mut next = 0;
            for r in 0..w {
                let s = share(n, w, r);
                assert_eq!(s.start, next);
                next = s.end;
            }
            assert_eq!(next, n);
        }
    }
}
