//! The per-step inputs as kernels read them: one staging area with a fixed region per input
//! (token ids, positions, block tables, lengths, logits rows, and the GPU sampler's per-row
//! parameters), sized for the engine's limits so the addresses never move. On CUDA the staging
//! area is pinned host memory mirrored to a device buffer by one copy per step; the fixed
//! addresses are what lets a captured CUDA graph be replayed with new inputs. What comes back
//! (logits, sampled tokens) is `readback`'s.

use super::batch::StepBatch;
use super::error::EngineError;
use super::limits::EngineLimits;
use crate::device::{CudaDevice, DeviceBuffer, PinnedBuffer};
use std::sync::Arc;

/// The staged inputs, in region order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Region {
    InputIds = 0,
    Positions,
    BlockTables,
    SeqLens,
    QueryStart,
    LogitsIndices,
    Temperature,
    TopK,
    TopP,
    Seeds,
    /// Written by the device: the sampled token of each row.
    Tokens,
}

const REGIONS: usize = 11;
const ALIGN: usize = 64;

/// One row's parameters for the GPU sampler (`sample` op).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSampling {
    /// <= 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k.
    pub top_k: i32,
    /// 1 means no top-p.
    pub top_p: f32,
    pub seed: u64,
}

impl RowSampling {
    pub fn greedy() -> RowSampling {
        RowSampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

enum Staging {
    Host(Vec<u64>),
    Device { pinned: PinnedBuffer, device: DeviceBuffer },
}

pub(super) struct StepIo {
    /// Byte offset and capacity (bytes) of each region.
    regions: [(usize, usize); REGIONS],
    staging: Staging,
    /// Bytes written this step (copied to the device).
    used: usize,
}

/// Each region's offset and capacity, and the staging area's size, for `limits` (None: the
/// sizes overflow).
fn layout(limits: &EngineLimits) -> Option<([(usize, usize); REGIONS], usize)> {
    let (t, s, mb) =
        (limits.max_num_tokens.max(limits.max_batch_size), limits.max_batch_size, limits.max_blocks_per_seq());
    let elems = [t, t, s.checked_mul(mb)?, s, s.checked_add(1)?, s, s, s, s, s.checked_mul(2)?, s];
    let mut regions = [(0, 0); REGIONS];
    let mut off = 0usize;
    for (r, n) in regions.iter_mut().zip(elems) {
        let bytes = n.checked_mul(4)?;
        *r = (off, bytes);
        off = off.checked_add(bytes.checked_next_multiple_of(ALIGN)?)?;
    }
    Some((regions, off))
}

/// The bytes of the staging area for `limits` (None: they overflow); on a GPU, twice: pinned
/// on the host and mirrored on the device.
pub(super) fn staged_bytes(limits: &EngineLimits) -> Option<usize> {
    layout(limits).map(|(_, bytes)| bytes)
}

impl StepIo {
    pub fn new(limits: &EngineLimits, device: Option<&Arc<CudaDevice>>) -> Result<StepIo, EngineError> {
        let (regions, off) =
            layout(limits).ok_or_else(|| EngineError::Setup("the step inputs' size overflows".into()))?;
        let staging = match device {
            None => {
                let mut words = Vec::new();
                words
                    .try_reserve_exact(off.div_ceil(8))
                    .map_err(|_| EngineError::Setup(format!("step inputs: no memory for {off} bytes")))?;
                words.resize(off.div_ceil(8), 0u64);
                Staging::Host(words)
            }
            Some(d) => {
                let err = |e: crate::device::CudaError| EngineError::Setup(format!("step inputs: {e}"));
                Staging::Device { pinned: d.alloc_pinned(off).map_err(err)?, device: d.alloc_zeroed(off).map_err(err)? }
            }
        };
        Ok(StepIo { regions, staging, used: 0 })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.staging {
            Staging::Host(v) => {
                // SAFETY: a u64 vector viewed as its bytes.
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 8) }
            }
            Staging::Device { pinned, .. } => pinned.as_bytes_mut(),
        }
    }

    fn write<T: Copy>(&mut self, region: Region, values: &[T]) -> Result<(), EngineError> {
        let (off, cap) = self.regions[region as usize];
        let n = std::mem::size_of_val(values);
        if n > cap {
            return Err(EngineError::Batch(format!("{region:?}: {n} bytes exceed the staged {cap}")));
        }
        let bytes = self.bytes_mut();
        // SAFETY: `values` is plain data of `n` bytes; the destination range was checked.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr() as *const u8, bytes[off..off + n].as_mut_ptr(), n) };
        self.used = self.used.max(off + n);
        Ok(())
    }

    /// Stages a batch's inputs (and, for the GPU sampler, its rows' parameters).
    pub fn stage(&mut self, b: &StepBatch, sampling: Option<&[RowSampling]>) -> Result<(), EngineError> {
        self.used = 0;
        self.write(Region::InputIds, &b.input_ids)?;
        self.write(Region::Positions, &b.positions)?;
        self.write(Region::BlockTables, &b.block_tables)?;
        self.write(Region::SeqLens, &b.seq_lens)?;
        self.write(Region::QueryStart, &b.query_start)?;
        self.write(Region::LogitsIndices, &b.logits_indices)?;
        if let Some(rows) = sampling {
            let l = b.logits_indices.len();
            let row = |i: usize| rows.get(i).copied().unwrap_or_else(RowSampling::greedy);
            let temps: Vec<f32> = (0..l).map(|i| row(i).temperature).collect();
            let top_k: Vec<i32> = (0..l).map(|i| row(i).top_k).collect();
            let top_p: Vec<f32> = (0..l).map(|i| row(i).top_p).collect();
            let seeds: Vec<i64> = (0..l).map(|i| row(i).seed as i64).collect();
            self.write(Region::Temperature, &temps)?;
            self.write(Region::TopK, &top_k)?;
            self.write(Region::TopP, &top_p)?;
            self.write(Region::Seeds, &seeds)?;
        }
        Ok(())
    }

    /// Queues the copy of what `stage` wrote to the device (no-op on the host).
    pub fn upload(&self, device: Option<&Arc<CudaDevice>>) -> Result<(), EngineError> {
        if let (Staging::Device { pinned, device: buf }, Some(d)) = (&self.staging, device) {
            // SAFETY: `used` <= the buffer's length; the pinned source lives as long as `self`
            // and is rewritten only by the next `stage`, after the caller synchronised.
            unsafe { d.copy_to_device_async(buf.device_ptr(), &pinned.as_bytes()[..self.used]) }.map_err(|e| {
                EngineError::Kernel {
                    scope: "inputs".into(),
                    op: "upload".into(),
                    plugin: "engine".into(),
                    message: e.to_string(),
                }
            })?;
        }
        Ok(())
    }

    /// The address kernels read a region at (host or device).
    pub fn addr(&self, region: Region) -> *mut u8 {
        let off = self.regions[region as usize].0;
        match &self.staging {
            Staging::Host(v) => (v.as_ptr() as *mut u8).wrapping_add(off),
            Staging::Device { device, .. } => (device.device_ptr() as usize + off) as *mut u8,
        }
    }
}

/// The region a graph input named `name` is read from, if it is a step input.
pub(super) fn region_of(name: &str) -> Option<Region> {
    use rtllm_models::io;
    Some(match name {
        io::INPUT_IDS => Region::InputIds,
        io::POSITIONS => Region::Positions,
        io::BLOCK_TABLES => Region::BlockTables,
        io::SEQ_LENS => Region::SeqLens,
        io::QUERY_START => Region::QueryStart,
        io::LOGITS_INDICES => Region::LogitsIndices,
        _ => return None,
    })
}

/// Whether `b` is a pure decode step (one token per sequence, logits for each in order), the
/// shape CUDA graphs are captured for.
pub(super) fn is_decode_step(b: &StepBatch) -> bool {
    let s = b.num_seqs();
    b.num_tokens() == s
        && b.logits_indices.len() == s
        && b.logits_indices.iter().enumerate().all(|(i, &x)| x as usize == i)
}

/// `b` (a decode step) padded to `bucket` sequences with `max_blocks` table columns. Padding
/// rows decode token 0 at position 0 into `scratch_block`, a KV block no sequence owns.
pub(super) fn pad_decode(b: &StepBatch, bucket: usize, max_blocks: usize, scratch_block: i32, out: &mut StepBatch) {
    let s = b.num_seqs();
    out.clear();
    out.max_blocks = max_blocks;
    out.input_ids.extend_from_slice(&b.input_ids);
    out.positions.extend_from_slice(&b.positions);
    out.seq_lens.extend_from_slice(&b.seq_lens);
    for r in 0..s {
        let row = &b.block_tables[r * b.max_blocks..(r + 1) * b.max_blocks];
        out.block_tables.extend_from_slice(row);
        out.block_tables.extend(std::iter::repeat_n(scratch_block, max_blocks - b.max_blocks));
    }
    out.query_start.truncate(0);
    out.query_start.extend((0..=bucket).map(|i| i as i32));
    out.logits_indices.extend((0..bucket).map(|i| i as i32));
    for _ in s..bucket {
        out.input_ids.push(0);
        out.positions.push(0);
        out.seq_lens.push(1);
        out.block_tables.extend(std::iter::repeat_n(scratch_block, max_blocks));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_steps_pad_to_their_bucket() {
        let mut b = StepBatch::default();
        b.clear();
        b.push_sequence(&[5], 3, &[7], true);
        b.push_sequence(&[6], 40, &[1, 2], true);
        assert!(is_decode_step(&b));
        let mut out = StepBatch::default();
        pad_decode(&b, 4, 3, 99, &mut out);
        assert_eq!(out.input_ids, vec![5, 6, 0, 0]);
        assert_eq!(out.positions, vec![3, 40, 0, 0]);
        assert_eq!(out.seq_lens, vec![4, 41, 1, 1]);
        assert_eq!(out.query_start, vec![0, 1, 2, 3, 4]);
        assert_eq!(out.logits_indices, vec![0, 1, 2, 3]);
        assert_eq!(out.block_tables, vec![7, 0, 99, 1, 2, 99, 99, 99, 99, 99, 99, 99]);
        b.push_sequence(&[1, 2], 0, &[3], true);
        assert!(!is_decode_step(&b), "a prefill row is not a decode step");
    }

    #[test]
    fn host_staging_keeps_addresses_and_checks_sizes() {
        let limits = EngineLimits {
            max_batch_size: 2,
            max_num_tokens: 8,
            max_seq_len: 64,
            tokens_per_block: 16,
            num_kv_blocks: 4,
        };
        let mut io = StepIo::new(&limits, None).unwrap();
        let before = io.addr(Region::SeqLens);
        let mut b = StepBatch::default();
        b.clear();
        b.push_sequence(&[1, 2, 3], 0, &[0], true);
        io.stage(&b, None).unwrap();
        assert_eq!(io.addr(Region::SeqLens), before);
        // SAFETY: host staging; the region holds the staged i32s.
        let ids = unsafe { std::slice::from_raw_parts(io.addr(Region::InputIds) as *const i32, 3) };
        assert_eq!(ids, &[1, 2, 3]);
        b.push_sequence(&[1; 9], 0, &[0], true);
        assert!(io.stage(&b, None).is_err(), "more tokens than staged space");
    }
}
