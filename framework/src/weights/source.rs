//! `load_model_source`: a `.gguf` file or an HF directory (config.json, *.safetensors with an
//! optional index, tokenizer files) → config + weights + tokenizer.

use super::fp8;
use super::gguf::{model, tokenizer, GgufFile, GGUF_MAGIC};
use super::safetensors::{load_safetensors, safetensors_files};
use super::store::{WeightFile, WeightStore};
use super::WeightError;
use crate::input_file;
use crate::tokenizer::spec::TokenizerSpec;
use rtllm_models::ModelConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A model source, loaded.
#[derive(Debug)]
pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: WeightStore,
    /// The tokenizer from GGUF metadata (HF directories give `tokenizer_json` instead).
    pub tokenizer: Option<TokenizerSpec>,
    pub tokenizer_json: Option<PathBuf>,
    pub tokenizer_config_json: Option<PathBuf>,
}

/// Loads a `.gguf` file, an HF model directory, or the directory of a given `config.json`.
pub fn load_model_source(path: &Path) -> Result<LoadedModel, WeightError> {
    if path.is_dir() {
        return load_hf_dir(path);
    }
    if !path.exists() {
        return Err(WeightError::NotAModel { path: path.into(), message: "no such file or directory".into() });
    }
    // A FIFO or device would block or stream forever: refused before anything opens it.
    input_file::check_regular(path).map_err(|e| WeightError::NotAModel {
        path: path.into(),
        message: format!("{e}; expected a .gguf file or a directory with config.json and *.safetensors"),
    })?;
    if path.file_name().is_some_and(|n| n == "config.json") {
        if let Some(dir) = path.parent() {
            return load_hf_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
        }
    }
    if has_gguf_magic(path)? {
        return load_gguf(path);
    }
    Err(WeightError::NotAModel {
        path: path.into(),
        message: "expected a .gguf file or a directory with config.json and *.safetensors".into(),
    })
}

fn has_gguf_magic(path: &Path) -> Result<bool, WeightError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let (mut file, _) = input_file::open_regular(path).map_err(|e| WeightError::io(path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(u32::from_le_bytes(magic) == GGUF_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(WeightError::io(path, e)),
    }
}

/// Loads a GGUF file: config from its metadata, tensors under HF names (Llama Q/K rows
/// un-permuted), the tokenizer spec.
pub fn load_gguf(path: &Path) -> Result<LoadedModel, WeightError> {
    gguf_model(WeightFile::read(path)?)
}

/// A GGUF file already in memory → config, weights (over `map`) and tokenizer spec.
pub fn gguf_model(map: Arc<WeightFile>) -> Result<LoadedModel, WeightError> {
    let path = map.path.as_path();
    let file = GgufFile::parse(map.bytes()).map_err(|source| WeightError::Gguf { path: path.into(), source })?;
    let config = model::config_from_gguf(&file, path)?;
    let weights = model::weights_from_gguf(&file, &map, &config)?;
    let tokenizer =
        tokenizer::tokenizer_spec(&file.metadata).map_err(|source| WeightError::Gguf { path: path.into(), source })?;
    tracing::info!(
        "loaded {} ({}, {} tensors, {:.1} MiB)",
        path.display(),
        config.architecture,
        weights.len(),
        weights.total_bytes() as f64 / (1 << 20) as f64
    );
    Ok(LoadedModel { config, weights, tokenizer, tokenizer_json: None, tokenizer_config_json: None })
}

/// Loads an HF directory: `config.json`, the safetensors shards, and the paths of
/// `tokenizer.json` / `tokenizer_config.json` when present.
pub fn load_hf_dir(dir: &Path) -> Result<LoadedModel, WeightError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(WeightError::NotAModel { path: dir.into(), message: "no config.json in this directory".into() });
    }
    let text = input_file::read_regular_string(&config_path, input_file::TEXT_LIMIT)
        .map_err(|e| WeightError::io(&config_path, e))?;
    let config =
        ModelConfig::from_hf_json(&text).map_err(|source| WeightError::Config { path: config_path.clone(), source })?;

    let (files, weight_map) = safetensors_files(dir)?;
    if files.is_empty() {
        return Err(WeightError::NotAModel { path: dir.into(), message: "no *.safetensors weight files".into() });
    }
    let mut weights = WeightStore::new();
    for file in &files {
        if !file.is_file() {
            return Err(WeightError::NotAModel {
                path: file.clone(),
                message: "named by model.safetensors.index.json but missing".into(),
            });
        }
        load_safetensors(file, &mut weights)?;
    }
    if let Some(weight_map) = weight_map {
        if let Some((tensor, file)) = weight_map.iter().find(|(t, _)| !weights.contains(t)) {
            return Err(WeightError::tensor(
                dir.join(file),
                tensor,
                "listed in model.safetensors.index.json but not in the file",
            ));
        }
    }
    quantization(dir, &text, &config_path, &mut weights)?;
    let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    Ok(LoadedModel {
        config,
        weights,
        tokenizer: None,
        tokenizer_json: optional("tokenizer.json"),
        tokenizer_config_json: optional("tokenizer_config.json"),
    })
}

/// Applies the checkpoint's quantization (`config.json`'s `quantization_config`, ModelOpt's
/// `hf_quant_config.json`) to the loaded tensors. F8_E4M3 tensors with no quantization config
/// are refused: their values mean nothing without the scheme.
fn quantization(
    dir: &Path,
    config_text: &str,
    config_path: &Path,
    weights: &mut WeightStore,
) -> Result<(), WeightError> {
    let not_model = |path: &Path, message: String| WeightError::NotAModel { path: path.into(), message };
    let config: serde_json::Value =
        serde_json::from_str(config_text).map_err(|e| not_model(config_path, format!("config.json: {e}")))?;
    let hf_quant_path = dir.join("hf_quant_config.json");
    let hf_quant = if hf_quant_path.is_file() {
        let text = input_file::read_regular_string(&hf_quant_path, input_file::TEXT_LIMIT)
            .map_err(|e| WeightError::io(&hf_quant_path, e))?;
        Some(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| not_model(&hf_quant_path, e.to_string()))?)
    } else {
        None
    };
    let declared = config.get("quantization_config").filter(|v| !v.is_null());
    let format = fp8::parse(declared, hf_quant.as_ref()).map_err(|m| not_model(config_path, m))?;
    match format {
        Some(format) => fp8::apply(&format, weights, dir),
        None => match weights.iter().find(|(_, t)| t.dtype == rtllm_plugin_api::DType::F8_E4M3) {
            Some((name, _)) => Err(WeightError::tensor(
                dir,
                name,
                "F8_E4M3 weights but config.json has no quantization_config saying how to read them",
            )),
            None => Ok(()),
        },
    }
}
