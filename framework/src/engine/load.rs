//! From a model config and its weights to a running `Engine`: pick the architecture, build
//! the graph through the registry, size the limits and KV pool, bind (and convert) weights.

use super::buffer::AlignedBuf;
use super::build::{EngineGraphBuilder, SelectionConfig, WeightMetas};
use super::engine::{Engine, EngineError, EngineLimits, Placement, WeightBytes};
use crate::device::CudaDevice;
use crate::registry::{create_with, OpRequest, Registry};
use rtllm_models::toml::ModelDefinition;
use rtllm_models::{find_architecture, known_architecture_names, BuildError, BuildOptions, ModelConfig, Parallel};
use rtllm_plugin_api::{quant, Attrs, DType, DeviceKind, TensorMeta};
use std::sync::Arc;

/// Weights an engine can read: metas for building, bytes for binding.
pub trait WeightSource: WeightMetas + Send + Sync {
    /// The stored bytes of a weight (row-major, in its stored dtype).
    fn weight_bytes(&self, name: &str) -> Option<&[u8]>;
    /// The rule of a generated weight (dummy weights): a GPU engine runs it on the device
    /// (`dummy_fill` op) instead of uploading host bytes.
    fn weight_fill(&self, _name: &str) -> Option<crate::weights::FillRule> {
        None
    }
}

/// How to build an engine (TensorRT-LLM's names where they exist).
#[derive(Clone, Debug)]
pub struct BuildConfig {
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    /// Defaults to the model's max_position_embeddings, capped at 4096.
    pub max_seq_len: Option<usize>,
    pub tokens_per_block: usize,
    pub kv_cache_dtype: DType,
    /// Host bytes for the KV cache (CPU); ignored when `num_kv_blocks` is set.
    pub kv_cache_bytes: usize,
    pub num_kv_blocks: Option<usize>,
    pub selection: SelectionConfig,
    /// Reuse / write the engine cache under `RTLLM_CACHE_DIR/engines` (see `engine::cache`);
    /// host engines only.
    pub use_engine_cache: bool,
    /// The GPU used when `selection.device` is CUDA.
    pub device_ordinal: usize,
    /// GPU: the share of free memory (after weights and activations) the KV cache takes when
    /// `num_kv_blocks` is not set.
    pub free_gpu_memory_fraction: f64,
    /// GPU: capture decode steps into CUDA graphs per batch-size bucket.
    pub cuda_graphs: bool,
    /// Sample on the device with a `sample` kernel (None: on when the device is a GPU).
    pub device_sampling: Option<bool>,
    /// Ranks the model is split across (tensor parallelism; one engine per rank, built by
    /// `rtllm::parallel`). On a GPU, rank r runs on `device_ordinal + r`.
    pub tensor_parallel_size: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            max_batch_size: 8,
            max_num_tokens: 2048,
            max_seq_len: None,
            tokens_per_block: 32,
            kv_cache_dtype: DType::F32,
            kv_cache_bytes: 512 << 20,
            num_kv_blocks: None,
            selection: SelectionConfig::default(),
            use_engine_cache: true,
            device_ordinal: 0,
            free_gpu_memory_fraction: 0.9,
            cuda_graphs: true,
            device_sampling: None,
            tensor_parallel_size: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("architecture '{name}' is not registered (known: {known})")]
    UnknownArchitecture { name: String, known: String },
    #[error("building the graph: {0}")]
    Build(BuildError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("impossible build config: {0}")]
    Config(String),
    #[error("weight '{name}': {message}")]
    Weight { name: String, message: String },
}

pub(crate) fn limits_for(
    config: &ModelConfig,
    bc: &BuildConfig,
    kv_bytes_per_token: usize,
) -> Result<EngineLimits, LoadError> {
    let bad = |m: String| Err(LoadError::Config(m));
    if bc.max_batch_size == 0 || bc.max_num_tokens == 0 || bc.tokens_per_block == 0 {
        return bad("max_batch_size, max_num_tokens and tokens_per_block must be >= 1".into());
    }
    let max_seq_len = bc.max_seq_len.unwrap_or_else(|| config.max_position_embeddings.clamp(1, 4096));
    if max_seq_len == 0 {
        return bad("max_seq_len must be >= 1".into());
    }
    let blocks_per_seq = max_seq_len.div_ceil(bc.tokens_per_block);
    let num_kv_blocks = match bc.num_kv_blocks {
        Some(n) => n,
        None => {
            let per_block = kv_bytes_per_token.max(1) * bc.tokens_per_block;
            (bc.kv_cache_bytes / per_block).min(blocks_per_seq * bc.max_batch_size)
        }
    };
    if num_kv_blocks == 0 {
        return bad(format!(
            "the KV cache budget of {} bytes holds no block of {} tokens ({} bytes per token)",
            bc.kv_cache_bytes, bc.tokens_per_block, kv_bytes_per_token
        ));
    }
    Ok(EngineLimits {
        max_batch_size: bc.max_batch_size,
        max_num_tokens: bc.max_num_tokens,
        max_seq_len,
        tokens_per_block: bc.tokens_per_block,
        num_kv_blocks,
    })
}

/// Converts a weight's stored bytes to `dtype` (f32, bf16 or f16 targets).
pub(crate) fn convert(
    name: &str,
    bytes: &[u8],
    from: DType,
    to: DType,
    row_len: usize,
) -> Result<AlignedBuf, LoadError> {
    let err = |message: String| LoadError::Weight { name: name.to_string(), message };
    if to != DType::F32 {
        let f32s = convert(name, bytes, from, DType::F32, row_len)?;
        return Ok(match to {
            DType::BF16 => narrow(f32s.as_f32(), |v| half::bf16::from_f32(v).to_bits()),
            DType::F16 => narrow(f32s.as_f32(), |v| half::f16::from_f32(v).to_bits()),
            _ => return Err(err(format!("no conversion from {from} to {to}"))),
        });
    }
    let row_bytes =
        from.bytes_for(row_len).ok_or_else(|| err(format!("row of {row_len} is not whole {from} blocks")))?;
    if row_bytes == 0 || bytes.len() % row_bytes != 0 {
        return Err(err(format!("{} bytes are not whole rows of {row_bytes}", bytes.len())));
    }
    let rows = bytes.len() / row_bytes;
    let mut out = AlignedBuf::zeroed(rows * row_len * 4);
    let dst = out.as_bytes_mut();
    // SAFETY: the buffer is 64-byte aligned and holds rows × row_len f32s.
    let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, rows * row_len) };
    for (src, d) in bytes.chunks_exact(row_bytes).zip(dst.chunks_exact_mut(row_len)) {
        quant::dequantize_row(from, src, d).map_err(|e| err(e.to_string()))?;
    }
    Ok(out)
}

/// f32s rounded to a 16-bit float format.
fn narrow(values: &[f32], bits: impl Fn(f32) -> u16) -> AlignedBuf {
    let mut out = AlignedBuf::zeroed(values.len() * 2);
    for (d, &v) in out.as_bytes_mut().chunks_exact_mut(2).zip(values) {
        d.copy_from_slice(&bits(v).to_le_bytes());
    }
    out
}

/// Builds an engine for `config` over `weights` with the ops of `registry`, using the
/// architecture registered for `config.architecture`.
pub fn build_engine(
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: &Registry,
    bc: &BuildConfig,
) -> Result<Engine, LoadError> {
    build_engine_with(&registered_definition(config)?, config, weights, registry, bc)
}

/// The architecture registered for `config.architecture`.
pub fn registered_definition(config: &ModelConfig) -> Result<ModelDefinition, LoadError> {
    let arch = find_architecture(&config.architecture).ok_or_else(|| LoadError::UnknownArchitecture {
        name: config.architecture.clone(),
        known: known_architecture_names().join(", "),
    })?;
    Ok(ModelDefinition::Registered(arch))
}

/// Builds an engine from an explicit model definition (a registered architecture or a TOML
/// model file); `config.architecture` is not consulted.
pub fn build_engine_with(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: &Registry,
    bc: &BuildConfig,
) -> Result<Engine, LoadError> {
    build_parts(definition, config, weights, registry, bc)?.into_engine()
}

/// A built graph with its bound weights, before the engine allocates its memory: what the
/// engine serializer writes (`engine::serialize`) and what [`BuiltParts::into_engine`] runs.
pub struct BuiltParts {
    pub graph: super::Graph,
    /// Owner of the memory `WeightBytes::Borrowed` points into.
    pub weights: Arc<dyn WeightSource>,
    /// One entry per `graph.weight_uses()` item, in that order.
    pub bound: Vec<WeightBytes>,
    pub limits: EngineLimits,
    pub kv_cache_dtype: DType,
    /// Host, or the GPU with its KV sizing, graphs and sampler.
    pub placement: Placement,
}

impl BuiltParts {
    pub fn into_engine(self) -> Result<Engine, LoadError> {
        Ok(Engine::new(self.graph, self.weights, self.bound, self.limits, self.kv_cache_dtype, self.placement)?)
    }
}

/// Opens the GPU a CUDA build runs on and binds it to this thread (kernels compile into its
/// context while the graph is built).
fn open_device(bc: &BuildConfig) -> Result<Option<std::sync::Arc<CudaDevice>>, LoadError> {
    if bc.selection.device != DeviceKind::Cuda {
        return Ok(None);
    }
    if !(bc.free_gpu_memory_fraction > 0.0 && bc.free_gpu_memory_fraction <= 1.0) {
        return Err(LoadError::Config(format!(
            "free_gpu_memory_fraction must be in (0, 1], got {}",
            bc.free_gpu_memory_fraction
        )));
    }
    CudaDevice::open(bc.device_ordinal).map(Some).map_err(|e| LoadError::Config(e.to_string()))
}

/// A `sample` kernel for logits of `dtype` on `device`, if the build asks for device sampling.
fn device_sampler(
    registry: &Registry,
    bc: &BuildConfig,
    logits_dtype: DType,
) -> Result<Option<rtllm_plugin_api::KernelBox>, LoadError> {
    let device = bc.selection.device;
    if !bc.device_sampling.unwrap_or(device == DeviceKind::Cuda) {
        return Ok(None);
    }
    let rows = || rtllm_plugin_api::Dim::sym(rtllm_models::io::SYM_LOGITS);
    let vec1 = |dtype: DType| TensorMeta::new(dtype, [rows()]);
    let metas = vec![
        TensorMeta::new(logits_dtype, [rows(), rtllm_plugin_api::Dim::Known(1)]),
        vec1(DType::F32),
        vec1(DType::I32),
        vec1(DType::F32),
        vec1(DType::I64),
    ];
    let request = OpRequest {
        name: "sample".into(),
        device,
        dtypes: metas.iter().map(|m| m.dtype).collect(),
        pin: bc.selection.pins.get("sample").cloned(),
    };
    let sampler_error = |message: String| LoadError::Config(format!("device sampling on {device}: {message}"));
    let provider = registry.resolve(&request).map_err(|e| sampler_error(e.to_string()))?;
    create_with(provider, &metas, &Attrs::new()).map(Some).map_err(|e| sampler_error(e.to_string()))
}

/// Builds the graph through the registry and binds (converting where needed) its weights.
/// One rank only: a `tensor_parallel_size` above 1 is built rank by rank by `rtllm::parallel`.
pub fn build_parts(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: &Registry,
    bc: &BuildConfig,
) -> Result<BuiltParts, LoadError> {
    if bc.tensor_parallel_size > 1 {
        return Err(LoadError::Config(format!(
            "tensor_parallel_size {} builds one engine per rank (rtllm::parallel, or the Llm API); this path \
             builds a single engine",
            bc.tensor_parallel_size
        )));
    }
    build_rank_parts(definition, config, weights, registry, bc, &Parallel::single())
}

/// Checks `definition` can be built for `parallel` (more than one tensor-parallel rank needs
/// an architecture that shards itself, and heads the ranks divide).
pub fn check_rank_layout(
    definition: &ModelDefinition,
    config: &ModelConfig,
    parallel: &Parallel,
) -> Result<(), LoadError> {
    rank_kv_heads(definition, config, parallel).map(|_| ())
}

/// Checks `definition` can be built for `parallel` and returns the KV heads each rank caches.
fn rank_kv_heads(definition: &ModelDefinition, config: &ModelConfig, parallel: &Parallel) -> Result<usize, LoadError> {
    let parallel_error = |m: String| LoadError::Config(format!("tensor parallelism: {m}"));
    parallel.validate().map_err(|e| parallel_error(e.to_string()))?;
    if !parallel.is_tensor_parallel() {
        return Ok(config.num_key_value_heads);
    }
    match definition {
        ModelDefinition::Registered(a) if a.supports_tensor_parallel() => {}
        ModelDefinition::Registered(a) => {
            return Err(parallel_error(format!("architecture '{}' does not support tensor parallelism", a.name())))
        }
        ModelDefinition::Toml(t) => {
            return Err(parallel_error(format!(
                "the TOML-defined model '{}' cannot be split across ranks (tensor_parallel_size {}); use \
                 tensor_parallel_size 1 or a built-in architecture",
                t.name(),
                parallel.tp_size
            )))
        }
    }
    Ok(parallel.attention_split(config).map_err(|e| parallel_error(e.to_string()))?.kv_heads)
}

/// Builds rank `parallel` of a model split across ranks (`Parallel::single()`: the whole
/// model): its graph holds this rank's weight shards and collectives, its KV pool this rank's
/// KV heads. `bc.device_ordinal` is this rank's GPU.
pub fn build_rank_parts(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: &Registry,
    bc: &BuildConfig,
    parallel: &Parallel,
) -> Result<BuiltParts, LoadError> {
    let kv_heads = rank_kv_heads(definition, config, parallel)?;
    let kv_bytes_per_token =
        2 * config.num_hidden_layers * kv_heads * config.head_dim * bc.kv_cache_dtype.block_bytes();
    let limits = limits_for(config, bc, kv_bytes_per_token)?;
    let device = open_device(bc)?;
    let mut builder = EngineGraphBuilder::new(registry, weights.as_ref(), &bc.selection);
    let options = BuildOptions { kv_cache_dtype: bc.kv_cache_dtype, parallel: parallel.clone() };
    definition.build(config, &options, &mut builder)?;
    let graph = builder.finish()?;

    let mut bound = Vec::new();
    for (name, dtype) in graph.weight_uses() {
        if let Some((weight, spec)) = super::shard::ShardSpec::parse(&name) {
            bound.push(super::shard::bind_shard(weights.as_ref(), weight, spec, dtype)?);
            continue;
        }
        let meta = weights
            .weight_meta(&name)
            .ok_or_else(|| LoadError::Weight { name: name.clone(), message: "vanished".into() })?;
        if let (Some(device), Some(rule), true) = (&device, weights.weight_fill(&name), meta.dtype == dtype) {
            bound.push(fill_on_device(registry, bc, device, rule, &meta)?);
            continue;
        }
        let bytes = weights
            .weight_bytes(&name)
            .ok_or_else(|| LoadError::Weight { name: name.clone(), message: "no data".into() })?;
        if meta.dtype == dtype {
            bound.push(bind_weight(bytes, dtype));
        } else {
            let row_len = meta.dims.last().and_then(|d| d.known()).unwrap_or(1);
            bound.push(WeightBytes::Owned(convert(&name, bytes, meta.dtype, dtype, row_len)?));
        }
    }
    tracing::info!(
        nodes = graph.nodes.len(),
        max_num_tokens = limits.max_num_tokens,
        max_seq_len = limits.max_seq_len,
        kv_blocks = limits.num_kv_blocks,
        "engine built"
    );
    let logits_dtype = graph
        .output(rtllm_models::io::LOGITS)
        .map(|v| graph.meta(v).dtype)
        .ok_or_else(|| LoadError::Config("the graph has no 'logits' output".into()))?;
    let placement = Placement {
        free_gpu_memory_fraction: (device.is_some() && bc.num_kv_blocks.is_none())
            .then_some(bc.free_gpu_memory_fraction),
        cuda_graphs: bc.cuda_graphs,
        sampler: device_sampler(registry, bc, logits_dtype)?,
        blocking_collectives: parallel.is_tensor_parallel(),
        device,
    };
    Ok(BuiltParts { graph, weights, bound, limits, kv_cache_dtype: bc.kv_cache_dtype, placement })
}

/// Makes a generated weight directly in GPU memory with the `dummy_fill` op (no host bytes).
fn fill_on_device(
    registry: &Registry,
    bc: &BuildConfig,
    device: &Arc<CudaDevice>,
    rule: crate::weights::FillRule,
    meta: &TensorMeta,
) -> Result<WeightBytes, LoadError> {
    let shape: Vec<usize> = meta.dims.iter().map(|d| d.known().unwrap_or(0)).collect();
    let request = OpRequest {
        name: "dummy_fill".into(),
        device: DeviceKind::Cuda,
        dtypes: vec![meta.dtype],
        pin: bc.selection.pins.get("dummy_fill").cloned(),
    };
    let fill_error = |message: String| LoadError::Config(format!("generating dummy weights on the GPU: {message}"));
    let provider = registry.resolve(&request).map_err(|e| fill_error(e.to_string()))?;
    let (_, buffer) = crate::registry::generate_on_device(provider, &rule.op_attrs(meta.dtype, &shape), device)
        .map_err(|e| fill_error(e.to_string()))?;
    Ok(WeightBytes::Device(buffer))
}

/// Binds stored weight bytes of `dtype` without a copy when their address suits the dtype's
/// element (kernels view them as `&[T]`); a misaligned mmapped tensor (safetensors only aligns
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

impl From<BuildError> for LoadError {
    fn from(e: BuildError) -> Self {
        LoadError::Build(e)
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
