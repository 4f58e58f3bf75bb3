//! The bytes of one bound weight as kernels read them: borrowed from the weight source (which
//! the engine keeps alive), converted into a host buffer of the engine's own, or on the device.

use super::buffer::AlignedBuf;
use super::error::{setup, EngineError};
use crate::device::{CudaDevice, DeviceBuffer};
use rtllm_plugin_api::DType;
use std::sync::Arc;

/// Weight bytes the engine reads: borrowed from the weight source (kept alive by the engine),
/// converted into a host buffer of its own, or uploaded to the device.
pub enum WeightBytes {
    Borrowed { ptr: *const u8, len: usize },
    Owned(AlignedBuf),
    Device(DeviceBuffer),
}

impl WeightBytes {
    /// The address kernels read (host or device).
    pub(super) fn ptr(&self) -> *mut u8 {
        match self {
            WeightBytes::Borrowed { ptr, .. } => *ptr as *mut u8,
            WeightBytes::Owned(b) => b.as_ptr() as *mut u8,
            WeightBytes::Device(b) => b.device_ptr() as usize as *mut u8,
        }
    }

    /// The host bytes (None once uploaded to a device).
    pub fn host_bytes(&self) -> Option<&[u8]> {
        match self {
            // SAFETY: the weight source keeps the borrowed range alive and unchanged.
            WeightBytes::Borrowed { ptr, len } => Some(unsafe { std::slice::from_raw_parts(*ptr, *len) }),
            WeightBytes::Owned(b) => Some(b.as_bytes()),
            WeightBytes::Device(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            WeightBytes::Borrowed { len, .. } => *len,
            WeightBytes::Owned(b) => b.len(),
            WeightBytes::Device(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Uploads every weight to the device (host copies are dropped as they go).
pub(super) fn upload_all(device: &Arc<CudaDevice>, weights: Vec<WeightBytes>) -> Result<Vec<WeightBytes>, EngineError> {
    let mut out = Vec::with_capacity(weights.len());
    for w in weights {
        match w.host_bytes() {
            Some(bytes) => out.push(WeightBytes::Device(device.upload(bytes).map_err(setup("uploading weights"))?)),
            None => out.push(w),
        }
    }
    Ok(out)
}

/// Binds stored weight bytes of `dtype` without a copy when their address suits the dtype's
/// element (kernels view them as `&[T]`); a misaligned tensor (safetensors only aligns
/// its data section to 8 bytes by convention, not by rule) is copied into an aligned buffer.
pub(crate) fn bind_weight(bytes: &[u8], dtype: DType) -> WeightBytes {
    // Quantized blocks are read as bytes; plain dtypes as elements of their own size.
    let align = if dtype.is_quantized() { 1 } else { dtype.block_bytes() };
    if (bytes.as_ptr() as usize) % align == 0 {
        WeightBytes::Borrowed { ptr: bytes.as_ptr(), len: bytes.len() }
    } else {
        tracing::debug!(%dtype, bytes = bytes.len(), "copying a misaligned weight into an aligned buffer");
        WeightBytes::Owned(AlignedBuf::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misaligned_weights_are_copied_aligned_ones_borrowed() {
        let backing = AlignedBuf::from_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let all = backing.as_bytes();
        match bind_weight(&all[..8], DType::F32) {
            WeightBytes::Borrowed { ptr, len } => assert_eq!((ptr, len), (all.as_ptr(), 8)),
            _ => panic!("an aligned weight was copied"),
        }
        match bind_weight(&all[1..9], DType::F32) {
            WeightBytes::Owned(b) => {
                assert_eq!(b.as_ptr() as usize % 4, 0);
                assert_eq!(b.as_bytes(), &all[1..9]);
            }
            _ => panic!("a misaligned f32 weight was borrowed"),
        }
        // Bytes and quantized blocks need no alignment.
        assert!(matches!(bind_weight(&all[1..9], DType::U8), WeightBytes::Borrowed { .. }));
        assert!(matches!(bind_weight(&all[1..9], DType::F16), WeightBytes::Owned(_)));
    }
}
