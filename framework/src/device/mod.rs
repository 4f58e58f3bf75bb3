//! Where an engine's memory lives and how bytes get there: host buffers (the CPU backend) or
//! CUDA device memory (`cuda`), behind one `Memory` type the engine plans with.

pub mod cuda;
pub mod memory;

pub use cuda::{CudaDevice, CudaError, CudaEvent, CudaGraph, DeviceBuffer, PinnedBuffer};
pub use memory::Memory;
