//! The model flags every model-running subcommand shares (generate, serve, bench, build, eval):
//! which model ([`ModelSpec`]: --model, --model-def, --dummy-weights), how its engine is built
//! ([`EngineArgs`]), and loading it into an `Llm` through the one loader.

use super::engine_args::EngineArgs;
use super::Hooks;
use crate::api::Llm;
use crate::engine::BuildConfig;
use crate::model::ModelSpec;
use crate::registry::Registry;
use crate::runtime::executor::ExecutorConfig;
use crate::weights::dummy::DummySpec;
use anyhow::{Context, Result};
use rtllm_plugin_api::DType;
use std::path::PathBuf;
use std::sync::Arc;

/// Which model to load and how to build it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file, an HF model directory or an engine directory from `rtllm build` (default:
    /// the built-in SmolLM2-135M-Instruct); the weights of --model-def.
    #[arg(long, visible_alias = "weights", conflicts_with = "dummy_weights")]
    pub model: Option<PathBuf>,
    /// A TOML model definition (e.g. models/configs/llama.toml) to build instead of the
    /// registered architecture, over the weights of --model (or --dummy-weights).
    #[arg(long, value_name = "TOML")]
    pub model_def: Option<PathBuf>,
    /// Random weights for a config: a built-in name (smollm2-135m, llama-3.2-1b,
    /// qwen2.5-0.5b, tiny-llama), an HF config.json or a directory holding one.
    #[arg(long, value_name = "CONFIG")]
    pub dummy_weights: Option<String>,
    /// dtype of dummy weights: f32, bf16, or fp8 (E4M3 linears with per-channel scales and
    /// dynamic per-token activations, the rest bf16).
    #[arg(long, default_value = "f32", value_parser = parse_dummy_dtype)]
    pub dummy_dtype: DType,
    /// Seed of dummy weights.
    #[arg(long, default_value_t = 0)]
    pub dummy_seed: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl Default for ModelArgs {
    fn default() -> Self {
        ModelArgs {
            model: None,
            model_def: None,
            dummy_weights: None,
            dummy_dtype: DType::F32,
            dummy_seed: 0,
            engine: EngineArgs::default(),
        }
    }
}

pub fn parse_dummy_dtype(s: &str) -> Result<DType, String> {
    match (s, DType::parse(s)) {
        ("fp8", _) | (_, Some(DType::F8_E4M3)) => Ok(DType::F8_E4M3),
        (_, Some(d @ (DType::F32 | DType::BF16))) => Ok(d),
        _ => Err(format!("dummy weights are f32, bf16 or fp8, not '{s}'")),
    }
}

impl ModelArgs {
    /// The engine build config these flags ask for.
    pub fn build_config(&self) -> BuildConfig {
        self.engine.build_config()
    }

    pub fn dummy_spec(&self) -> Option<DummySpec> {
        self.dummy_weights.as_ref().map(|c| DummySpec {
            config: c.clone(),
            dtype: self.dummy_dtype,
            seed: self.dummy_seed,
        })
    }

    /// The model these flags name.
    pub fn spec(&self) -> ModelSpec {
        let spec = match (self.dummy_spec(), &self.model) {
            (Some(dummy), _) => ModelSpec::dummy(dummy),
            (None, Some(path)) => ModelSpec::path(path),
            (None, None) => ModelSpec::default_model(),
        };
        match &self.model_def {
            Some(def) => spec.with_definition_file(def),
            None => spec,
        }
    }

    /// Loads the model into an `Llm` with `executor` (its build config is replaced by these
    /// flags'), then runs the binary's after-load hook.
    pub fn start(&self, registry: Registry, executor: ExecutorConfig, hooks: &Hooks) -> Result<Llm> {
        self.start_shared(Arc::new(registry), executor, hooks)
    }

    /// [`ModelArgs::start`] over a registry other models share.
    pub fn start_shared(&self, registry: Arc<Registry>, executor: ExecutorConfig, hooks: &Hooks) -> Result<Llm> {
        let executor = ExecutorConfig { build: self.build_config(), ..executor };
        let llm = Llm::builder()
            .registry(registry)
            .executor_config(executor)
            .model_spec(self.spec())
            .build()
            .context("loading the model")?;
        (hooks.after_model_load)();
        Ok(llm)
    }
}
