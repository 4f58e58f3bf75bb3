//! The step's outputs brought back to the caller: logits rows (as f32, converted from the
//! graph's bf16/f16 logits) or sampled token ids, through one pinned buffer on a GPU, read in
//! place on the host.

use super::error::{setup, EngineError};
use crate::device::{CudaDevice, PinnedBuffer};
use rtllm_plugin_api::DType;
use std::sync::Arc;

pub(super) struct Readback {
    /// Logits or tokens copied from the device (GPU only).
    pinned: Option<PinnedBuffer>,
    logits_f32: Vec<f32>,
    tokens: Vec<i32>,
}

fn readback_error(what: &str, e: crate::device::CudaError) -> EngineError {
    EngineError::Kernel { scope: "output".into(), op: what.into(), plugin: "engine".into(), message: e.to_string() }
}

impl Readback {
    /// Room for `max_bytes` of logits (or tokens) on `device`.
    pub fn new(device: Option<&Arc<CudaDevice>>, max_bytes: usize) -> Result<Readback, EngineError> {
        let pinned = match device {
            None => None,
            Some(d) => Some(d.alloc_pinned(max_bytes).map_err(setup("logits readback"))?),
        };
        Ok(Readback { pinned, logits_f32: Vec::new(), tokens: Vec::new() })
    }

    /// `n` logits of `dtype` at `addr` (written by the step) as f32s.
    pub fn logits(
        &mut self,
        device: Option<&Arc<CudaDevice>>,
        addr: *mut u8,
        n: usize,
        dtype: DType,
    ) -> Result<&[f32], EngineError> {
        let bytes = n * dtype.block_bytes();
        match (device, &mut self.pinned) {
            (Some(d), Some(pinned)) => {
                // SAFETY: the logits slot holds at least `n` values; the pinned buffer max_batch_size rows.
                unsafe { d.copy_to_host_async(&mut pinned.as_bytes_mut()[..bytes], addr as usize as u64) }
                    .and_then(|_| d.synchronize())
                    .map_err(|e| readback_error("logits readback", e))?;
                to_f32(dtype, &pinned.as_bytes()[..bytes], &mut self.logits_f32);
                Ok(&self.logits_f32)
            }
            _ if dtype == DType::F32 => {
                // SAFETY: the logits slot holds at least `n` f32s, written by the last node.
                Ok(unsafe { std::slice::from_raw_parts(addr as *const f32, n) })
            }
            _ => {
                // SAFETY: as above, in the logits dtype.
                let src = unsafe { std::slice::from_raw_parts(addr as *const u8, bytes) };
                to_f32(dtype, src, &mut self.logits_f32);
                Ok(&self.logits_f32)
            }
        }
    }

    /// `rows` token ids at `addr` (written by the sampler).
    pub fn tokens(
        &mut self,
        device: Option<&Arc<CudaDevice>>,
        addr: *mut u8,
        rows: usize,
    ) -> Result<&[i32], EngineError> {
        self.tokens.clear();
        match (device, &mut self.pinned) {
            (Some(d), Some(pinned)) => {
                let bytes = &mut pinned.as_bytes_mut()[..rows * 4];
                // SAFETY: the output region holds max_batch_size i32s.
                unsafe { d.copy_to_host_async(bytes, addr as usize as u64) }
                    .and_then(|_| d.synchronize())
                    .map_err(|e| EngineError::device("token readback", e))?;
                let bytes = &pinned.as_bytes()[..rows * 4];
                self.tokens.extend(bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            }
            _ => {
                // SAFETY: host memory holding `rows` i32s written by the sampler.
                let src = unsafe { std::slice::from_raw_parts(addr as *const i32, rows) };
                self.tokens.extend_from_slice(src);
            }
        }
        Ok(&self.tokens)
    }
}

/// Converts float bytes of `dtype` to f32s in `out`.
fn to_f32(dtype: DType, src: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match dtype {
        DType::BF16 => {
            out.extend(src.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()))
        }
        DType::F16 => {
            out.extend(src.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()))
        }
        _ => out.extend(src.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
    }
}
