//! One buffer type for the engine's planned memory (arena, workspace, KV pools, weights):
//! host bytes on the CPU backend, device memory on CUDA. Kernels get its raw address.

use super::cuda::{CudaDevice, CudaError, DeviceBuffer};
use crate::engine::AlignedBuf;
use std::sync::Arc;

pub enum Memory {
    Host(AlignedBuf),
    Device(DeviceBuffer),
}

impl Memory {
    /// `len` zeroed bytes on the host, or on `device` when given. Running out of host memory
    /// is an error here, not an abort.
    pub fn zeroed(device: Option<&Arc<CudaDevice>>, len: usize) -> Result<Memory, CudaError> {
        Ok(match device {
            None => Memory::Host(AlignedBuf::try_zeroed(len).ok_or_else(|| CudaError::Driver {
                what: format!("allocating {len} bytes of host memory"),
                message: "out of memory".into(),
            })?),
            Some(d) => Memory::Device(d.alloc_zeroed(len)?),
        })
    }

    /// The address kernels read: a host pointer or a device pointer.
    pub fn addr(&self) -> *mut u8 {
        match self {
            Memory::Host(b) => b.as_ptr() as *mut u8,
            Memory::Device(b) => b.device_ptr() as usize as *mut u8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Memory::Host(b) => b.len(),
            Memory::Device(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_device(&self) -> bool {
        matches!(self, Memory::Device(_))
    }
}
