//! From a model config and its weights to a running `Engine`: pick the architecture, size the
//! limits and KV pool, plan the graph (the architecture's plain graph, then the passes), create
//! its kernels, bind (and convert) its weights.

use super::bind::bind_weights;
use super::build::EngineGraphBuilder;
use super::engine::{BuiltParts, Engine, Placement};
use super::error::LoadError;
use super::graph::Graph;
use super::limits::EngineLimits;
use super::select::{SelectionConfig, Selector};
use super::source::{WeightMetas, WeightSource};
use crate::device::CudaDevice;
use crate::registry::{create_with, OpRequest, Registry};
use rtllm_models::toml::ModelDefinition;
use rtllm_models::{find_architecture, known_architecture_names, BuildOptions, ModelConfig, Parallel};
use rtllm_plugin_api::{Attrs, DType, DeviceKind, TensorMeta};
use std::sync::Arc;

/// How to build an engine (TensorRT-LLM's names where they exist).
#[derive(Clone, Debug)]
pub struct BuildConfig {
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    /// Defaults to the model's max_position_embeddings, capped at 4096.
    pub max_seq_len: Option<usize>,
    pub tokens_per_block: usize,
    /// f32/bf16/f16, or F8_E4M3 (the FP8 cache: per-layer k/v scales, docs/quantization.md).
    pub kv_cache_dtype: DType,
    /// A checkpoint that declares an FP8 KV-cache scheme selects the F8_E4M3 cache (the
    /// default, "auto"); off when the user names the dtype.
    pub kv_cache_dtype_from_checkpoint: bool,
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
    /// A calibration build (`rtllm quantize`): the plain graph, unfused, so each linear layer is
    /// its own `matmul` node, and every step records the largest |activation| entering each
    /// weight matmul (`Engine::activation_stats`). Steps run eagerly (no CUDA graphs) and
    /// such an engine is never cached.
    pub observe_matmul_inputs: bool,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            max_batch_size: 8,
            max_num_tokens: 2048,
            max_seq_len: None,
            tokens_per_block: 32,
            kv_cache_dtype: DType::F32,
            kv_cache_dtype_from_checkpoint: true,
            kv_cache_bytes: 512 << 20,
            num_kv_blocks: None,
            selection: SelectionConfig::default(),
            use_engine_cache: true,
            device_ordinal: 0,
            free_gpu_memory_fraction: 0.9,
            cuda_graphs: true,
            device_sampling: None,
            tensor_parallel_size: 1,
            observe_matmul_inputs: false,
        }
    }
}

pub(crate) fn limits_for(
    config: &ModelConfig,
    bc: &BuildConfig,
    kv_bytes_per_token: usize,
) -> Result<EngineLimits, LoadError> {
    let bad = |m: String| Err(LoadError::Config(m));
    let max_seq_len = bc.max_seq_len.unwrap_or_else(|| config.max_position_embeddings.clamp(1, 4096));
    // Checked with a placeholder block count first, so the arithmetic below is on sane values.
    let mut limits = EngineLimits {
        max_batch_size: bc.max_batch_size,
        max_num_tokens: bc.max_num_tokens,
        max_seq_len,
        tokens_per_block: bc.tokens_per_block,
        num_kv_blocks: bc.num_kv_blocks.unwrap_or(1),
    };
    limits.check().map_err(LoadError::Config)?;
    if bc.num_kv_blocks.is_none() {
        let per_block = kv_bytes_per_token.max(1).saturating_mul(bc.tokens_per_block);
        let most = limits.max_blocks_per_seq().saturating_mul(bc.max_batch_size);
        limits.num_kv_blocks = (bc.kv_cache_bytes / per_block).min(most).min(super::limits::MAX_LIMIT);
    }
    if limits.num_kv_blocks == 0 {
        return bad(format!(
            "the KV cache budget of {} bytes holds no block of {} tokens ({} bytes per token)",
            bc.kv_cache_bytes, bc.tokens_per_block, kv_bytes_per_token
        ));
    }
    Ok(limits)
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

/// The finished graph of rank `parallel` of `definition`: the architecture writes the plain
/// graph (ops selected and inferred), then the passes rewrite it (fusion, dead values; a
/// calibration build, `observe_matmul_inputs`, stays unfused). No device is touched and no
/// kernel created: what `rtllm build --explain` prints.
pub fn plan_graph(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: &dyn WeightMetas,
    registry: &Registry,
    bc: &BuildConfig,
    parallel: &Parallel,
) -> Result<Graph, LoadError> {
    rank_kv_heads(definition, config, parallel)?;
    let mut builder = EngineGraphBuilder::new(registry, weights, &bc.selection);
    let options = BuildOptions { kv_cache_dtype: bc.kv_cache_dtype, parallel: parallel.clone() };
    definition.build(config, &options, &mut builder)?;
    let graph = builder.finish()?;
    if bc.observe_matmul_inputs {
        return Ok(graph);
    }
    super::passes::run(graph, Selector::new(registry, &bc.selection))
}

/// Builds rank `parallel` of a model split across ranks (`Parallel::single()`: the whole
/// model): its graph holds this rank's weight shards and collectives, its KV pool this rank's
/// KV heads. `bc.device_ordinal` is this rank's GPU. The graph is planned (`plan_graph`), then
/// its kernels are created and its weights bound.
pub fn build_rank_parts(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: &Registry,
    bc: &BuildConfig,
    parallel: &Parallel,
) -> Result<BuiltParts, LoadError> {
    let kv_heads = rank_kv_heads(definition, config, parallel)?;
    let kv_bytes_per_token = [config.num_hidden_layers, kv_heads, config.head_dim, bc.kv_cache_dtype.block_bytes()]
        .into_iter()
        .try_fold(2usize, usize::checked_mul)
        .ok_or_else(|| {
            LoadError::Config("the KV cache's bytes per token overflow (layers x heads x head_dim)".into())
        })?;
    let limits = limits_for(config, bc, kv_bytes_per_token)?;
    let device = open_device(bc)?;
    let graph = plan_graph(definition, config, weights.as_ref(), registry, bc, parallel)?;
    let kernels = super::kernels::create_kernels(&graph, registry, bc.selection.device)?;
    let bound = bind_weights(&graph, weights.as_ref(), registry, &bc.selection, device.as_ref())?;
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
        observe_matmul_inputs: bc.observe_matmul_inputs,
        device,
    };
    Ok(BuiltParts { graph, kernels, weights, bound, limits, kv_cache_dtype: bc.kv_cache_dtype, placement })
}
