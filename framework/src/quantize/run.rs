//! The conversion end to end: refuse what cannot be converted (an already quantized source, an
//! unregistered architecture), find the linear layers in the model's graph, calibrate input
//! scales (static) and KV-cache scales (an FP8 KV cache) through the engine, then write config.json (+ `quantization_config`), the
//! tokenizer and generation files, and the FP8 weights into a staged directory renamed into
//! place when complete.

use super::calibrate::{calibrate, sequences, CalibrationConfig};
use super::config::quantization_config;
use super::fp8::{ActivationScheme, WeightScheme};
use super::output::{pretty, shard, write_shards, StagedDir};
use super::targets::linear_weights;
use super::tensors::TensorPlan;
use super::QuantizeError;
use crate::engine::{plan_graph, registered_definition, ActivationStats, BuildConfig, WeightSource};
use crate::model::{cache_dir, tokenizer_of};
use crate::registry::Registry;
use crate::weights::{hf_export, load_model_source, LoadedModel};
use rtllm_models::Parallel;
use rtllm_plugin_api::DType;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Files of an HF directory carried over unchanged (tokenizer, generation settings, license).
const CARRIED_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "LICENSE",
    "LICENSE.txt",
    "LICENSE.md",
    "NOTICE",
];

/// Where the static input scales (and the KV-cache scales) come from.
#[derive(Clone, Debug)]
pub enum Calibration {
    /// A calibration pass over this text.
    Text { text: String, config: CalibrationConfig },
    /// Activation maxima already measured (e.g. by an earlier pass); the engine is not run.
    Stats(ActivationStats),
}

/// What to convert, and how.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub source: PathBuf,
    pub output: PathBuf,
    pub weight_scheme: WeightScheme,
    pub activation_scheme: ActivationScheme,
    /// Replace a non-empty output directory.
    pub force: bool,
    /// Required for static activations or an FP8 KV cache, unused otherwise.
    pub calibration: Option<Calibration>,
    /// Calibrate and write the FP8 KV cache's per-layer k_scale / v_scale (amax / 448 of the
    /// rotated k and the v over the calibration text) and declare its `kv_cache_scheme`.
    pub kv_cache: bool,
    /// The largest weight shard in bytes (`SHARD_BYTES` by default).
    pub shard_bytes: usize,
}

/// What a conversion did.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub output: PathBuf,
    /// Linear weights now FP8.
    pub quantized: usize,
    /// Tensors written in total (scales included).
    pub tensors: usize,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// Calibration tokens run (0 without a calibration pass).
    pub calibration_tokens: usize,
    /// What calibration observed (static activations).
    pub stats: Option<ActivationStats>,
    pub seconds: f64,
}

/// The default calibration text: Jane Austen's *Persuasion*, fetched by
/// `scripts/fetch-eval-text.sh persuasion` (not the evaluation default, Pride and Prejudice,
/// so scales are never fitted to the text perplexity is measured on).
pub fn default_calibration_file() -> PathBuf {
    cache_dir().join("eval").join("persuasion.txt")
}

/// Refuses a source whose config.json already declares a quantization.
fn source_config_json(source: &Path) -> Result<Option<serde_json::Map<String, Value>>, QuantizeError> {
    if !source.is_dir() {
        return Ok(None);
    }
    let path = source.join("config.json");
    let text = crate::input_file::read_regular_string(&path, crate::input_file::TEXT_LIMIT)
        .map_err(QuantizeError::io(&path))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| QuantizeError::Unsupported(format!("{}: not valid JSON: {e}", path.display())))?;
    let Value::Object(map) = json else {
        return Err(QuantizeError::Unsupported(format!("{}: not a JSON object", path.display())));
    };
    if let Some(q) = map.get("quantization_config") {
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("unknown");
        return Err(QuantizeError::AlreadyQuantized {
            path,
            message: format!(
                "the model is already quantized (quantization_config.quant_method = {method:?}); quantize its \
                 unquantized original"
            ),
        });
    }
    Ok(Some(map))
}

/// Converts `opts.source` into an FP8 HF directory at `opts.output`.
pub fn quantize(
    opts: &QuantizeOptions,
    registry: &Registry,
    build: &BuildConfig,
) -> Result<QuantizeReport, QuantizeError> {
    let start = Instant::now();
    // An HF directory may be named by its config.json.
    let source = match opts.source.file_name() {
        Some(n) if n == "config.json" && opts.source.is_file() => {
            opts.source.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
        }
        _ => opts.source.clone(),
    };
    let opts = &QuantizeOptions { source, ..opts.clone() };
    let raw_config = source_config_json(&opts.source)?;
    let from_gguf = raw_config.is_none();
    let staged = StagedDir::create(&opts.output, &opts.source, opts.force)?;
    let loaded = load_model_source(&opts.source)
        .map_err(|error| QuantizeError::Weights { path: opts.source.clone(), error: Box::new(error) })?;
    let quantized = |d: DType| d.is_quantized() || d.is_scaled_storage();
    if let Some((name, t)) = loaded.weights.iter().find(|(_, t)| !from_gguf && quantized(t.dtype)) {
        return Err(QuantizeError::AlreadyQuantized {
            path: opts.source.clone(),
            message: format!("tensor `{name}` is already quantized ({})", t.dtype),
        });
    }
    let config = &loaded.config;
    let definition = registered_definition(config).map_err(|e| {
        QuantizeError::Unsupported(format!(
            "{}: {e}; rtllm quantize converts the registered architectures",
            opts.source.display()
        ))
    })?;
    let mut calib_bc = build.clone();
    calib_bc.observe_matmul_inputs = true;
    let graph = plan_graph(&definition, config, &loaded.weights, registry, &calib_bc, &Parallel::single())?;
    let targets = linear_weights(&graph)?;

    let needs_calibration = opts.activation_scheme == ActivationScheme::Static || opts.kv_cache;
    let (stats, calibration_tokens) = match (needs_calibration, &opts.calibration) {
        (false, _) => (None, 0),
        (true, None) => {
            let what = if opts.kv_cache { "the FP8 KV cache's scales" } else { "static input scales" };
            return Err(QuantizeError::Calibration(format!("{what} need a calibration text")));
        }
        (true, Some(Calibration::Stats(s))) => (Some(s.clone()), 0),
        (true, Some(Calibration::Text { text, config: cc })) => {
            let (tokenizer, _) = tokenizer_of(&opts.source, &loaded)?;
            let seq_len = cc.seq_len.min(config.max_position_embeddings);
            let seqs = sequences(&tokenizer, text, cc.tokens, seq_len)?;
            let weights: Arc<dyn WeightSource> = Arc::new(loaded.weights.clone());
            let stats = calibrate(&definition, config, weights, registry, cc, &seqs)?;
            (Some(stats), seqs.iter().map(Vec::len).sum())
        }
    };
    let input_stats = stats.as_ref().filter(|_| opts.activation_scheme == ActivationScheme::Static);
    let kv = stats.as_ref().filter(|_| opts.kv_cache).map(|s| (s, config.num_hidden_layers));

    let plan = TensorPlan::new(&loaded.weights, &targets, opts.weight_scheme, input_stats, kv, from_gguf)?;
    let planned = plan.planned(&loaded.weights)?;
    let tensors = planned.len();
    let shards = shard(planned, opts.shard_bytes.max(1));
    let progress = indicatif::ProgressBar::new(tensors as u64).with_message("quantizing");
    let bytes_out = write_shards(&staged, &shards, |t| {
        progress.inc(1);
        plan.make(&loaded.weights, &t.name)
    })?;
    progress.finish_and_clear();

    let qconfig = quantization_config(opts.weight_scheme, opts.activation_scheme, opts.kv_cache);
    write_metadata(&staged, &opts.source, raw_config, &loaded, qconfig)?;
    let output = staged.commit()?;
    Ok(QuantizeReport {
        output,
        quantized: targets.len(),
        tensors,
        bytes_in: loaded.weights.total_bytes(),
        bytes_out,
        calibration_tokens,
        stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// config.json (the source's, or one made from GGUF metadata) with `qconfig`, and the
/// tokenizer and generation files.
fn write_metadata(
    staged: &StagedDir,
    source: &Path,
    raw_config: Option<serde_json::Map<String, Value>>,
    loaded: &LoadedModel,
    qconfig: Value,
) -> Result<(), QuantizeError> {
    let mut config = match raw_config {
        Some(map) => Value::Object(map),
        None => hf_export::config_json(&loaded.config, dtype_name(DType::BF16)),
    };
    config["quantization_config"] = qconfig;
    staged.write("config.json", pretty(&config).as_bytes())?;
    if source.is_dir() {
        for name in CARRIED_FILES {
            let from = source.join(name);
            if from.is_file() {
                std::fs::copy(&from, staged.path().join(name)).map_err(QuantizeError::io(&from))?;
            }
        }
        return Ok(());
    }
    staged.write("generation_config.json", pretty(&hf_export::generation_config_json(&loaded.config)).as_bytes())?;
    let spec = loaded.tokenizer.as_ref().ok_or_else(|| {
        QuantizeError::Unsupported(format!("{}: the GGUF file carries no tokenizer", source.display()))
    })?;
    let (tokenizer, tokenizer_config) = hf_export::tokenizer_files(spec, loaded.config.max_position_embeddings)
        .map_err(|m| QuantizeError::Unsupported(format!("{}: {m}", source.display())))?;
    staged.write("tokenizer.json", pretty(&tokenizer).as_bytes())?;
    staged.write("tokenizer_config.json", pretty(&tokenizer_config).as_bytes())
}

/// The `torch_dtype` name of a float dtype.
fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}
