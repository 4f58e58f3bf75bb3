//! Starting a model split across ranks over weights read once (shared by every rank): checks
//! the layout before any worker starts (the architecture shards itself, the heads divide, a
//! GPU per rank), then starts one worker per rank that builds its own engine. Reading the
//! source is the model loader's (`crate::model::load`); engine directories and the engine
//! cache hold single-rank engines and are not used here.

use super::engine::{new_group_id, TensorParallelEngine};
use super::rank::RankBuild;
use crate::engine::{BuildConfig, LoadError, WeightSource};
use crate::registry::Registry;
use rtllm_models::toml::ModelDefinition;
use rtllm_models::{ModelConfig, Parallel};
use rtllm_plugin_api::DeviceKind;
use std::sync::Arc;

/// The parallel coordinates of every rank of a `tp`-way group with a fresh communicator id.
pub fn tensor_parallel_ranks(tp: usize) -> Result<Vec<Parallel>, LoadError> {
    let group = new_group_id();
    (0..tp.max(1))
        .map(|r| {
            Parallel::tensor(r, tp, group.clone()).map_err(|e| LoadError::Config(format!("tensor parallelism: {e}")))
        })
        .collect()
}

/// Checks a `build.tensor_parallel_size`-way split of `config` can be built before any rank
/// starts: the definition shards itself, the heads and MLP divide, and on a GPU every rank
/// has its device.
pub fn check_layout(definition: &ModelDefinition, config: &ModelConfig, build: &BuildConfig) -> Result<(), LoadError> {
    let tp = build.tensor_parallel_size;
    if tp == 0 {
        return Err(LoadError::Config("tensor_parallel_size must be >= 1, got 0".into()));
    }
    for parallel in tensor_parallel_ranks(tp)? {
        crate::engine::check_rank_layout(definition, config, &parallel)?;
    }
    if config.intermediate_size % tp != 0 {
        return Err(LoadError::Config(format!(
            "tensor parallelism: tensor_parallel_size {tp} must divide intermediate_size ({})",
            config.intermediate_size
        )));
    }
    if build.selection.device == DeviceKind::Cuda {
        let visible = crate::device::cuda::device_count();
        let last = build.device_ordinal + tp - 1;
        if last >= visible {
            return Err(LoadError::Config(format!(
                "tensor_parallel_size {tp} from device ordinal {} needs GPUs {}..={last}, but {visible} GPU(s) are \
                 visible",
                build.device_ordinal, build.device_ordinal
            )));
        }
    }
    Ok(())
}

/// Starts the ranks of a model over `weights`: rank r builds with `device_ordinal + r`.
pub fn start_engine(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: Arc<Registry>,
    build: &BuildConfig,
) -> Result<TensorParallelEngine, LoadError> {
    check_layout(definition, config, build)?;
    let builds = tensor_parallel_ranks(build.tensor_parallel_size)?
        .into_iter()
        .map(|parallel| {
            let mut bc = build.clone();
            bc.device_ordinal = build.device_ordinal + parallel.tp_rank;
            bc.use_engine_cache = false;
            RankBuild {
                definition: definition.clone(),
                config: config.clone(),
                weights: weights.clone(),
                registry: registry.clone(),
                build: bc,
                parallel,
            }
        })
        .collect();
    TensorParallelEngine::start(builds)
}
