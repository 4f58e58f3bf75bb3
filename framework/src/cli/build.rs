//! `rtllm build`: builds a model's engine and writes it as an engine directory (plan.json,
//! model.safetensors, tokenizer) that `--model DIR`, `Llm::new` and `Model::load` accept; with
//! `--explain`, prints the planned graph instead (no device, no kernels, nothing written).
//! Also the model-selection flags `bench` shares (`ModelArgs`).

use crate::engine::serialize::{self, EngineDirInfo, TokenizerSource};
use crate::engine::{build_parts, explain, plan_graph, registered_definition, BuildConfig, WeightSource};
use crate::model::default_model_path;
use crate::registry::Registry;
use crate::weights::dummy::{dummy_model, DummySpec};
use crate::weights::load_model_source;
use anyhow::{bail, Context, Result};
use rtllm_models::toml::ModelDefinition;
use rtllm_plugin_api::DType;
use std::path::PathBuf;
use std::sync::Arc;

/// Which model to load and how to build it.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file, an HF model directory or an engine directory (default: the built-in model).
    #[arg(long, conflicts_with = "dummy_weights")]
    pub model: Option<PathBuf>,
    /// Random weights for a config: a built-in name (smollm2-135m, llama-3.2-1b,
    /// qwen2.5-0.5b, tiny-llama), an HF config.json or a directory holding one.
    #[arg(long, value_name = "CONFIG")]
    pub dummy_weights: Option<String>,
    /// dtype of dummy weights (f32 or bf16).
    #[arg(long, default_value = "f32", value_parser = parse_dummy_dtype)]
    pub dummy_dtype: DType,
    /// Seed of dummy weights.
    #[arg(long, default_value_t = 0)]
    pub dummy_seed: u64,
    /// Neither read nor write the engine cache.
    #[arg(long)]
    pub no_build_cache: bool,
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    #[arg(long)]
    pub max_num_tokens: Option<usize>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Host bytes reserved for the KV cache.
    #[arg(long)]
    pub kv_cache_bytes: Option<usize>,
    /// Convert quantized weights to f32 at load (the reference path).
    #[arg(long)]
    pub dequantize: bool,
    #[command(flatten)]
    pub device: super::device::DeviceArgs,
}

pub fn parse_dummy_dtype(s: &str) -> Result<DType, String> {
    match DType::parse(s) {
        Some(d @ (DType::F32 | DType::BF16)) => Ok(d),
        _ => Err(format!("dummy weights are f32 or bf16, not '{s}'")),
    }
}

impl ModelArgs {
    pub fn build_config(&self) -> BuildConfig {
        let mut b = BuildConfig::default();
        if let Some(v) = self.max_batch_size {
            b.max_batch_size = v;
        }
        if let Some(v) = self.max_num_tokens {
            b.max_num_tokens = v;
        }
        if self.max_seq_len.is_some() {
            b.max_seq_len = self.max_seq_len;
        }
        if let Some(v) = self.kv_cache_bytes {
            b.kv_cache_bytes = v;
        }
        b.selection.dequantize_weights = self.dequantize;
        b.use_engine_cache = !self.no_build_cache;
        self.device.apply(&mut b);
        b
    }

    pub fn dummy_spec(&self) -> Option<DummySpec> {
        self.dummy_weights.as_ref().map(|c| DummySpec {
            config: c.clone(),
            dtype: self.dummy_dtype,
            seed: self.dummy_seed,
        })
    }

    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model_path)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The engine directory to write (created; must not exist or be empty).
    #[arg(long, required_unless_present = "explain")]
    pub output: Option<PathBuf>,
    /// A model defined in TOML (e.g. models/configs/llama.toml) instead of the registered
    /// architecture; the weights come from --model or --dummy-weights.
    #[arg(long)]
    pub model_def: Option<PathBuf>,
    /// Print the planned graph (every node's scope, op, provider plugin, metas and attributes,
    /// then nodes per op) and exit: kernel selection, inference and the passes only, so it
    /// works for --device cuda without a GPU. With --tp N it shows rank 0.
    #[arg(long)]
    pub explain: bool,
    /// Treat this op as unregistered (repeatable; e.g. a fused op, to see or build the plan
    /// without it).
    #[arg(long = "disable-op", value_name = "OP")]
    pub disable_ops: Vec<String>,
}

impl BuildArgs {
    fn build_config(&self) -> BuildConfig {
        let mut bc = self.model.build_config();
        bc.selection.disabled_ops.extend(self.disable_ops.iter().cloned());
        bc
    }
}

pub fn run(args: &BuildArgs, registry: &Registry) -> Result<()> {
    if args.explain {
        return run_explain(args, registry);
    }
    let Some(out) = &args.output else { bail!("--output is required (or --explain)") };
    let tp = args.model.device.tensor_parallel_size;
    if tp != 1 {
        bail!(
            "rtllm build writes a single-rank engine; --tensor-parallel-size {tp} applies when a model is loaded \
             (generate, serve and bench build each rank from the weights)"
        );
    }
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not an empty directory", out.display());
    }
    let start = std::time::Instant::now();
    let (loaded, name) = load_source(&args.model)?;
    let tokenizer = match (&loaded.tokenizer_json, &loaded.tokenizer) {
        (Some(json), _) => {
            TokenizerSource::HfFiles { json: json.clone(), config: loaded.tokenizer_config_json.clone() }
        }
        (None, Some(spec)) => TokenizerSource::Spec(spec.clone()),
        (None, None) => bail!("{}: no tokenizer found", name.display()),
    };
    let bc = args.build_config();
    let definition = definition_of(args, &loaded.config)?;
    let weights: Arc<dyn WeightSource> = Arc::new(loaded.weights);
    let parts = build_parts(&definition, &loaded.config, weights, registry, &bc)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let info =
        EngineDirInfo { definition: definition.name(), config: &loaded.config, build: &bc, tokenizer: &tokenizer };
    let (engine, written) = serialize::write_engine_dir(out, parts, &info);
    let engine = engine?;
    written?;
    let plan = engine.memory_plan();
    eprintln!(
        "built {} in {:.2}s: {} nodes, arena {:.1} MiB, {} KV blocks -> {}",
        name.display(),
        start.elapsed().as_secs_f64(),
        engine.graph().nodes.len(),
        plan.arena_bytes as f64 / (1 << 20) as f64,
        engine.limits().num_kv_blocks,
        out.display()
    );
    Ok(())
}

/// The weights (and config, tokenizer) `--model` or `--dummy-weights` name, and a label.
fn load_source(args: &ModelArgs) -> Result<(crate::weights::LoadedModel, PathBuf)> {
    Ok(match args.dummy_spec() {
        Some(spec) => (dummy_model(&spec)?, spec.label()),
        None => {
            let path = args.model_path();
            if serialize::is_engine_dir(&path) {
                bail!("{} is already an engine directory", path.display());
            }
            (load_model_source(&path).with_context(|| format!("loading {}", path.display()))?, path)
        }
    })
}

/// `--model-def`'s TOML definition, else the architecture registered for the config.
fn definition_of(args: &BuildArgs, config: &rtllm_models::ModelConfig) -> Result<ModelDefinition> {
    Ok(match &args.model_def {
        Some(path) => ModelDefinition::from_toml_file(path)?,
        None => registered_definition(config)?,
    })
}

/// `rtllm build --explain`: plans the graph (rank 0 of `--tp N`) and prints it.
fn run_explain(args: &BuildArgs, registry: &Registry) -> Result<()> {
    let (loaded, name) = load_source(&args.model)?;
    let bc = args.build_config();
    let definition = definition_of(args, &loaded.config)?;
    let tp = args.model.device.tensor_parallel_size;
    let parallel = crate::parallel::tensor_parallel_ranks(tp)?.into_iter().next().unwrap_or_default();
    let graph = plan_graph(&definition, &loaded.config, &loaded.weights, registry, &bc, &parallel)?;
    let rank = if tp > 1 { format!(", rank 0 of {tp}") } else { String::new() };
    let title = format!("{} ({}) on {}{rank}", name.display(), definition.name(), bc.selection.device);
    print!("{}", explain::explain(&graph, &title));
    Ok(())
}
