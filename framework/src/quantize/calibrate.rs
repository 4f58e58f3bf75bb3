//! Calibration for static FP8 input scales: the calibration text is tokenized and cut into
//! sequences (each led by BOS when the tokenizer adds one, as prompts are), and each sequence is
//! prefilled through a calibration build of the model's own engine
//! (`BuildConfig::observe_matmul_inputs`: the unfused graph, every weight matmul's input amax
//! recorded). No second forward implementation: the engine's kernels produce the activations.

use super::QuantizeError;
use crate::engine::{build_parts, ActivationStats, BuildConfig, StepBatch, WeightSource};
use crate::registry::Registry;
use crate::tokenizer::Tokenizer;
use rtllm_models::toml::ModelDefinition;
use rtllm_models::ModelConfig;
use std::path::Path;
use std::sync::Arc;

/// The most bytes of calibration text read.
pub const CALIBRATION_TEXT_LIMIT: u64 = 256 << 20;

/// How much text to run, and how.
#[derive(Clone, Debug)]
pub struct CalibrationConfig {
    /// Tokens of text to run (fewer when the text is shorter).
    pub tokens: usize,
    /// Tokens per sequence, BOS included.
    pub seq_len: usize,
    /// The engine settings (device, threads) the calibration build starts from.
    pub build: BuildConfig,
}

/// Reads a calibration text file (a regular UTF-8 file).
pub fn read_text(path: &Path) -> Result<String, QuantizeError> {
    let text = crate::input_file::read_regular_string(path, CALIBRATION_TEXT_LIMIT)
        .map_err(|e| QuantizeError::Calibration(format!("{}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(QuantizeError::Calibration(format!(
            "{}: the calibration text is empty; static input scales need text to observe",
            path.display()
        )));
    }
    Ok(text)
}

/// The calibration sequences of `text`: up to `total` text tokens in sequences of at most
/// `seq_len` tokens, each starting with BOS when the tokenizer adds one.
pub fn sequences(
    tokenizer: &Tokenizer,
    text: &str,
    total: usize,
    seq_len: usize,
) -> Result<Vec<Vec<u32>>, QuantizeError> {
    let bos = tokenizer.bos_token_id().filter(|_| tokenizer.adds_bos_token());
    let body = seq_len.saturating_sub(usize::from(bos.is_some()));
    if total == 0 || body == 0 {
        return Err(QuantizeError::Calibration(format!(
            "calibration needs at least one text token per sequence (--calib-tokens {total}, sequences of {seq_len})"
        )));
    }
    let ids = tokenizer.encode_at_most(text, false, usize::MAX)?;
    if ids.is_empty() {
        return Err(QuantizeError::Calibration("the calibration text encodes to no tokens".into()));
    }
    if ids.len() < total {
        tracing::warn!("the calibration text has {} tokens; --calib-tokens asked for {total}", ids.len());
    }
    let used = &ids[..ids.len().min(total)];
    Ok(used.chunks(body).map(|chunk| bos.into_iter().chain(chunk.iter().copied()).collect()).collect())
}

/// Runs `seqs` through a calibration build of the model and returns what each weight matmul saw.
pub fn calibrate(
    definition: &ModelDefinition,
    config: &ModelConfig,
    weights: Arc<dyn WeightSource>,
    registry: &Registry,
    calib: &CalibrationConfig,
    seqs: &[Vec<u32>],
) -> Result<ActivationStats, QuantizeError> {
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut bc = calib.build.clone();
    bc.observe_matmul_inputs = true;
    bc.max_batch_size = 1;
    bc.max_num_tokens = longest;
    bc.max_seq_len = Some(longest);
    bc.num_kv_blocks = Some(longest.div_ceil(bc.tokens_per_block.max(1)));
    bc.use_engine_cache = false;
    bc.device_sampling = Some(false);
    bc.cuda_graphs = false;
    let mut engine = build_parts(definition, config, weights, registry, &bc)?.into_engine()?;
    let progress = indicatif::ProgressBar::new(seqs.len() as u64).with_message("calibrating");
    let mut batch = StepBatch::default();
    for seq in seqs {
        batch.clear();
        let blocks: Vec<u32> = (0..seq.len().div_ceil(bc.tokens_per_block.max(1)) as u32).collect();
        batch.push_sequence(seq, 0, &blocks, true);
        engine.forward(&batch)?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    engine
        .activation_stats()
        .cloned()
        .ok_or_else(|| QuantizeError::Calibration("the calibration engine observed nothing".into()))
}
