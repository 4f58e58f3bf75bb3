//! The device flags every model-running command shares: where the engine runs (CPU or a CUDA
//! GPU) and how a GPU's memory, graphs and KV cache are set up.

use crate::engine::BuildConfig;
use rtllm_plugin_api::{DType, DeviceKind};

#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where the engine runs: cpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceKind,
    /// The GPU to use (with --device cuda).
    #[arg(long, default_value_t = 0)]
    pub device_ordinal: usize,
    /// GPU: share of the memory free after weights and activations that the KV cache takes.
    #[arg(long)]
    pub free_gpu_memory_fraction: Option<f64>,
    /// GPU: run decode steps op by op instead of replaying captured CUDA graphs.
    #[arg(long)]
    pub no_cuda_graphs: bool,
    /// GPU: sample on the host from copied logits instead of on the device.
    #[arg(long)]
    pub host_sampling: bool,
    /// dtype of the KV cache: f32, bf16, f16 or fp8 (f8_e4m3: E4M3 codes with per-layer
    /// scales). Default: fp8 when the checkpoint declares an FP8 KV cache, else f32 on the
    /// CPU and bf16 on a GPU.
    #[arg(long, value_parser = parse_kv_dtype)]
    pub kv_cache_dtype: Option<DType>,
    /// A fixed number of KV cache blocks (overrides the memory budget).
    #[arg(long)]
    pub num_kv_blocks: Option<usize>,
    /// Split the model across this many ranks (tensor parallelism): CPU threads, or with
    /// --device cuda one GPU per rank from --device-ordinal on.
    #[arg(long = "tensor-parallel-size", visible_alias = "tp", default_value_t = 1)]
    pub tensor_parallel_size: usize,
}

impl Default for DeviceArgs {
    fn default() -> Self {
        DeviceArgs {
            device: DeviceKind::Cpu,
            device_ordinal: 0,
            free_gpu_memory_fraction: None,
            no_cuda_graphs: false,
            host_sampling: false,
            kv_cache_dtype: None,
            num_kv_blocks: None,
            tensor_parallel_size: 1,
        }
    }
}

pub(crate) fn parse_device(s: &str) -> Result<DeviceKind, String> {
    DeviceKind::parse(s).ok_or_else(|| format!("unknown device '{s}' (cpu or cuda)"))
}

pub(crate) fn parse_kv_dtype(s: &str) -> Result<DType, String> {
    if s.eq_ignore_ascii_case("fp8") {
        return Ok(DType::F8_E4M3);
    }
    match DType::parse(s) {
        Some(d @ (DType::F32 | DType::BF16 | DType::F16 | DType::F8_E4M3)) => Ok(d),
        _ => Err(format!("the KV cache is f32, bf16, f16 or fp8 (f8_e4m3), not '{s}'")),
    }
}

impl DeviceArgs {
    /// Applies these flags (and the device's defaults) to a build config.
    pub fn apply(&self, b: &mut BuildConfig) {
        b.selection.device = self.device;
        b.device_ordinal = self.device_ordinal;
        if self.device == DeviceKind::Cuda {
            // Quantized weights become bf16 (the CUDA GEMMs read floats); so does the cache.
            b.selection.weight_fallback_dtype = Some(DType::BF16);
            b.kv_cache_dtype = DType::BF16;
            b.use_engine_cache = false;
        }
        if let Some(d) = self.kv_cache_dtype {
            b.kv_cache_dtype = d;
            b.kv_cache_dtype_from_checkpoint = false;
        }
        if let Some(f) = self.free_gpu_memory_fraction {
            b.free_gpu_memory_fraction = f;
        }
        if self.num_kv_blocks.is_some() {
            b.num_kv_blocks = self.num_kv_blocks;
        }
        b.cuda_graphs = !self.no_cuda_graphs;
        b.tensor_parallel_size = self.tensor_parallel_size;
        if self.host_sampling {
            b.device_sampling = Some(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_cache_dtypes_parse_and_a_named_one_overrides_the_checkpoint() {
        assert_eq!(parse_kv_dtype("fp8"), Ok(DType::F8_E4M3));
        assert_eq!(parse_kv_dtype("FP8"), Ok(DType::F8_E4M3));
        assert_eq!(parse_kv_dtype("f8_e4m3"), Ok(DType::F8_E4M3));
        assert_eq!(parse_kv_dtype("bf16"), Ok(DType::BF16));
        assert!(parse_kv_dtype("q8_0").unwrap_err().contains("fp8"));
        let mut b = BuildConfig::default();
        DeviceArgs::default().apply(&mut b);
        assert!(b.kv_cache_dtype_from_checkpoint, "no dtype named: the checkpoint decides");
        DeviceArgs { kv_cache_dtype: Some(DType::F32), ..DeviceArgs::default() }.apply(&mut b);
        assert_eq!((b.kv_cache_dtype, b.kv_cache_dtype_from_checkpoint), (DType::F32, false));
    }
}
