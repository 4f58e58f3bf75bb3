//! rtllm NCCL plugin: the collective ops of tensor parallelism (`all_reduce`, `all_gather`,
//! `reduce_scatter`) for ranks that are threads of one process. The CPU provider pairs the
//! ranks through a process-global rendezvous; the CUDA provider runs NCCL (loaded at run time,
//! so the plugin builds and loads with no CUDA or NCCL; its ops then fail to create with a
//! clear error). Shape and attribute rules: `rtllm_plugin_api::shapes::collective`.

pub mod comm;
pub mod cpu;
pub mod cuda;
pub mod driver;
pub mod error;
pub mod host;
pub mod nccl_lib;
mod ops;
pub mod rendezvous;

rtllm_plugin_api::register_op!(cpu::AllReduce);
rtllm_plugin_api::register_op!(cpu::AllGather);
rtllm_plugin_api::register_op!(cpu::ReduceScatter);
rtllm_plugin_api::register_op!(cuda::CudaAllReduce);
rtllm_plugin_api::register_op!(cuda::CudaAllGather);
rtllm_plugin_api::register_op!(cuda::CudaReduceScatter);

#[cfg(test)]
mod tests;

rtllm_plugin_api::export_plugin!(name: "rtllm-nccl", version: env!("CARGO_PKG_VERSION"));
