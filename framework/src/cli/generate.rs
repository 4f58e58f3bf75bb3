//! `rtllm generate`: runs a model (the built-in default unless `--model`) on a prompt and
//! streams the text to the terminal as tokens come.

use crate::engine::BuildConfig;
use crate::model::{default_model_path, Model, ModelError};
use crate::parallel::{self, ModelRunner, ModelSource};
use crate::registry::Registry;
use crate::runtime::generate;
use crate::sampling::SamplingParams;
use crate::tokenizer::{ChatMessage, DecodeStream};
use anyhow::{Context, Result};
use rtllm_models::toml::ModelDefinition;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The prompt.
    pub prompt: String,
    /// A GGUF file or an HF model directory (default: the built-in SmolLM2-135M-Instruct).
    #[arg(long, conflicts_with = "weights")]
    pub model: Option<PathBuf>,
    /// A TOML model definition (e.g. models/configs/llama.toml) to build instead of the
    /// registered architecture; needs --weights.
    #[arg(long, requires = "weights")]
    pub model_def: Option<PathBuf>,
    /// The weights (a GGUF file or an HF directory) for --model-def.
    #[arg(long, requires = "model_def")]
    pub weights: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Apply the model's chat template to the prompt as a user message.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print load time and tokens/s to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Host bytes reserved for the KV cache (default: the build config's).
    #[arg(long)]
    pub kv_cache_bytes: Option<usize>,
    /// Most tokens one forward pass takes (sizes the activation arena; longer prompts are
    /// prefilled in chunks). Default: the build config's.
    #[arg(long)]
    pub max_num_tokens: Option<usize>,
    /// Random weights for a config (built-in name, config.json or its directory) instead of a model.
    #[arg(long, value_name = "CONFIG", conflicts_with_all = ["model", "model_def"])]
    pub dummy_weights: Option<String>,
    /// Neither read nor write the engine cache.
    #[arg(long)]
    pub no_build_cache: bool,
    #[command(flatten)]
    pub device: super::device::DeviceArgs,
}

pub fn run(args: &GenerateArgs, registry: Registry) -> Result<()> {
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        ignore_eos: args.ignore_eos,
        ..Default::default()
    };
    params.validate()?;
    let mut build = BuildConfig::default();
    if let Some(bytes) = args.kv_cache_bytes {
        build.kv_cache_bytes = bytes;
    }
    if let Some(tokens) = args.max_num_tokens {
        build.max_num_tokens = tokens;
    }
    build.use_engine_cache = !args.no_build_cache;
    args.device.apply(&mut build);
    if build.tensor_parallel_size != 1 {
        let mut model = load_tensor_parallel(args, Arc::new(registry), &build)?;
        return stream_generation(args, &params, &mut model);
    }
    let registry = &registry;
    let mut model = match (&args.model_def, &args.weights, &args.model) {
        _ if args.dummy_weights.is_some() => {
            let spec = crate::weights::dummy::DummySpec::new(args.dummy_weights.clone().unwrap_or_default());
            Model::load_dummy(&spec, registry, &build)?
        }
        (Some(def), Some(weights), _) => {
            let definition = ModelDefinition::from_toml_file(def)?;
            Model::load_with_definition(weights, &definition, registry, &build)?
        }
        (_, _, Some(path)) => Model::load(path, registry, &build)?,
        _ => Model::load_default(registry, &build)?,
    };
    stream_generation(args, &params, &mut model)
}

/// Loads the model of `args` split across `build.tensor_parallel_size` ranks.
fn load_tensor_parallel(
    args: &GenerateArgs,
    registry: Arc<Registry>,
    build: &BuildConfig,
) -> Result<Model<parallel::TensorParallelEngine>> {
    let spec = args.dummy_weights.as_ref().map(|c| crate::weights::dummy::DummySpec::new(c.clone()));
    let default = default_model_path();
    let source = match (&spec, &args.weights, &args.model) {
        (Some(spec), _, _) => ModelSource::Dummy(spec),
        (None, Some(weights), _) => ModelSource::Path(weights),
        (None, None, Some(path)) => ModelSource::Path(path),
        (None, None, None) if default.exists() => ModelSource::Path(&default),
        (None, None, None) => return Err(ModelError::NoDefaultModel(default).into()),
    };
    let definition = args.model_def.as_deref().map(ModelDefinition::from_toml_file).transpose()?;
    Ok(parallel::load_model(source, definition.as_ref(), registry, build)?)
}

/// Generates from the prompt of `args`, streaming the text to stdout.
fn stream_generation<R: ModelRunner>(args: &GenerateArgs, params: &SamplingParams, model: &mut Model<R>) -> Result<()> {
    let prompt_ids = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        let text = model.tokenizer.apply_chat_template(&messages, true).context("applying the chat template")?;
        model.tokenizer.encode(&text, false)?
    } else {
        model.tokenizer.encode(&args.prompt, true)?
    };
    let mut stream = DecodeStream::new(&model.tokenizer, true);
    let mut out = std::io::stdout().lock();
    if !args.chat {
        write!(out, "{}", args.prompt)?;
    }
    out.flush()?;
    let start = std::time::Instant::now();
    let mut first_token = None;
    let mut write_err = None;
    let eos = model.eos_ids();
    let Model { tokenizer, engine, blocks, .. } = &mut *model;
    let generation = generate(engine, blocks, &prompt_ids, params, &eos, |id| {
        first_token.get_or_insert_with(|| start.elapsed());
        let written = match stream.step(tokenizer, id) {
            Ok(Some(text)) => write!(out, "{text}").and_then(|_| out.flush()).map_err(anyhow::Error::from),
            Ok(None) => Ok(()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            write_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e);
    }
    writeln!(out)?;
    if args.stats {
        let total = start.elapsed();
        let prefill = first_token.unwrap_or(total);
        let decode_tokens = generation.tokens.len().saturating_sub(1);
        let decode_secs = (total - prefill).as_secs_f64();
        eprintln!(
            "load {:.2}s | prompt {} tokens in {:.3}s ({:.1} tok/s) | {} tokens decoded at {:.1} tok/s | finish: {:?}",
            model.load_time.as_secs_f64(),
            prompt_ids.len(),
            prefill.as_secs_f64(),
            prompt_ids.len() as f64 / prefill.as_secs_f64().max(1e-9),
            decode_tokens,
            decode_tokens as f64 / decode_secs.max(1e-9),
            generation.finish_reason
        );
    }
    Ok(())
}
