//! `rtllm quantize --format fp8 --model SRC --output DIR`: converts a bf16/f16/f32 model (an HF
//! directory, or a GGUF file, dequantized) into an FP8 HF directory in the compressed-tensors
//! layout (see `rtllm::quantize`). Static input scales, and with `--kv-cache-dtype fp8` the FP8
//! KV cache's per-layer scales, come from a calibration pass over a text (default: the text
//! `scripts/fetch-eval-text.sh persuasion` fetches).

use super::device::{parse_device, parse_kv_dtype, DeviceArgs};
use crate::engine::BuildConfig;
use crate::quantize::{
    default_calibration_file, quantize, read_text, ActivationScheme, Calibration, CalibrationConfig, QuantizeOptions,
    WeightScheme, SHARD_BYTES,
};
use crate::registry::Registry;
use anyhow::{bail, Result};
use rtllm_plugin_api::{DType, DeviceKind};
use std::path::PathBuf;

/// Output formats `rtllm quantize` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantFormat {
    /// FP8 E4M3 weights (and static or dynamic FP8 activations), compressed-tensors layout.
    Fp8,
}

#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// The target format.
    #[arg(long, value_enum)]
    pub format: QuantFormat,
    /// The source model: an HF directory (f32/bf16/f16 safetensors) or a GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// The HF directory to write (must not exist or be empty, unless --force).
    #[arg(long)]
    pub output: PathBuf,
    /// Replace the output directory if it exists and is not empty.
    #[arg(long)]
    pub force: bool,
    /// Weight scales: one per output channel (default: an outlier row no longer costs every
    /// other row its precision, and FP8 GEMMs apply a per-channel scale in the epilogue at no
    /// cost), or one per tensor.
    #[arg(long, value_enum, default_value = "per-channel")]
    pub weight_scheme: WeightScheme,
    /// Activation scales: static (one per layer from calibration, stored as input_scale) or
    /// dynamic (per token at run time, no calibration).
    #[arg(long, value_enum, default_value = "static")]
    pub activation_scheme: ActivationScheme,
    /// fp8: also calibrate the FP8 KV cache's per-layer k_scale / v_scale (amax / 448 of k and
    /// v over the calibration text) and declare its kv_cache_scheme, so the output runs with an
    /// FP8 KV cache by default (in rtllm and vLLM).
    #[arg(long, value_name = "DTYPE", value_parser = parse_kv_dtype)]
    pub kv_cache_dtype: Option<DType>,
    /// The calibration text (default: the file scripts/fetch-eval-text.sh persuasion fetches).
    #[arg(long, value_name = "FILE")]
    pub calib_file: Option<PathBuf>,
    /// Tokens of calibration text to run.
    #[arg(long, default_value_t = 2048)]
    pub calib_tokens: usize,
    /// Tokens per calibration sequence (capped at the model's max_position_embeddings).
    #[arg(long, default_value_t = 512)]
    pub calib_seq_len: usize,
    /// The largest weight shard, in bytes.
    #[arg(long, default_value_t = SHARD_BYTES)]
    pub max_shard_bytes: usize,
    /// Where the calibration pass runs: cpu, or cuda for big models.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceKind,
    /// The GPU the calibration pass runs on (with --device cuda).
    #[arg(long, default_value_t = 0)]
    pub device_ordinal: usize,
}

impl QuantizeArgs {
    /// Whether the FP8 KV cache's scales are calibrated (`--kv-cache-dtype fp8`).
    fn kv_cache(&self) -> Result<bool> {
        match self.kv_cache_dtype {
            None => Ok(false),
            Some(DType::F8_E4M3) => Ok(true),
            Some(other) => bail!(
                "--kv-cache-dtype {other}: rtllm quantize writes the scales of an FP8 KV cache (--kv-cache-dtype fp8); \
                 a {other} cache needs none"
            ),
        }
    }

    fn calibration(&self, build: &BuildConfig) -> Result<Option<Calibration>> {
        if self.activation_scheme == ActivationScheme::Dynamic && !self.kv_cache()? {
            if self.calib_file.is_some() {
                bail!(
                    "--calib-file is for static activation scales (or --kv-cache-dtype fp8); --activation-scheme \
                     dynamic needs no calibration"
                );
            }
            return Ok(None);
        }
        let file = match &self.calib_file {
            Some(f) => f.clone(),
            None => {
                let f = default_calibration_file();
                if !f.is_file() {
                    bail!(
                        "no calibration text at {}: run scripts/fetch-eval-text.sh persuasion, or pass --calib-file FILE \
                         (or --activation-scheme dynamic)",
                        f.display()
                    );
                }
                f
            }
        };
        let text = read_text(&file)?;
        let config = CalibrationConfig { tokens: self.calib_tokens, seq_len: self.calib_seq_len, build: build.clone() };
        Ok(Some(Calibration::Text { text, config }))
    }
}

pub fn run(args: &QuantizeArgs, registry: &Registry) -> Result<()> {
    let mut build = BuildConfig::default();
    DeviceArgs { device: args.device, device_ordinal: args.device_ordinal, ..DeviceArgs::default() }.apply(&mut build);
    let opts = QuantizeOptions {
        source: args.model.clone(),
        output: args.output.clone(),
        weight_scheme: args.weight_scheme,
        activation_scheme: args.activation_scheme,
        force: args.force,
        calibration: args.calibration(&build)?,
        kv_cache: args.kv_cache()?,
        shard_bytes: args.max_shard_bytes,
    };
    let report = quantize(&opts, registry, &build)?;
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    eprintln!(
        "quantized {} linear weights to FP8 ({:?} weights, {:?} activations{}{}) in {:.2}s: {:.1} MiB -> {:.1} MiB, {} tensors -> {}",
        report.quantized,
        args.weight_scheme,
        args.activation_scheme,
        if opts.kv_cache { ", FP8 KV cache scales" } else { "" },
        if report.calibration_tokens > 0 { format!(", {} calibration tokens", report.calibration_tokens) } else { String::new() },
        report.seconds,
        mib(report.bytes_in),
        mib(report.bytes_out),
        report.tensors,
        report.output.display()
    );
    Ok(())
}
