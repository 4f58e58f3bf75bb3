//! `rtllm eval`: a model's quality as numbers, printed as a table or, with `--json`, as one JSON
//! object on stdout. `eval perplexity FILE` scores a text in sliding windows; `eval compare
//! --model A --model B` loads both models at once and compares B with the reference A (see
//! `crate::eval`). Both raise the engine's `max_batch_size` to 128 unless it is given: a scored
//! prompt position takes one logits row, and a step returns at most `max_batch_size` rows.

use super::{EngineArgs, GlobalArgs, Hooks, ModelArgs};
use crate::api::Llm;
use crate::eval::{self, CompareReport, PerplexityReport};
use crate::runtime::executor::ExecutorConfig;
use anyhow::{bail, Context, Result};
use rtllm_plugin_api::DeviceKind;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sequences, and so logits rows, per step when `--max-batch-size` is not given.
pub const EVAL_MAX_BATCH_SIZE: usize = 128;
/// On a GPU, the share of free memory each of the two compared models' KV cache takes when
/// `--free-gpu-memory-fraction` is not given (the second model loads into what the first left).
pub const COMPARE_GPU_KV_FRACTION: f64 = 0.45;

#[derive(clap::Subcommand, Debug)]
pub enum EvalCommand {
    /// Perplexity of a model over a text file, in sliding windows (Hugging Face's perplexity guide).
    Perplexity(PerplexityArgs),
    /// Compare model B with the reference model A: greedy agreement, then top-1 agreement and
    /// KL(A||B) of next-token distributions teacher-forced on A's continuation.
    Compare(CompareArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PerplexityArgs {
    /// The text file (UTF-8), e.g. from scripts/fetch-eval-text.sh.
    pub file: PathBuf,
    /// Tokens per window (default: the model's max_position_embeddings, at most 2048).
    #[arg(long)]
    pub context_len: Option<usize>,
    /// Tokens from one window's start to the next's (default: half the context); each window
    /// scores only the tokens no earlier window scored.
    #[arg(long)]
    pub stride: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The reference model A, then the model B compared with it: a GGUF file, an HF or an
    /// engine directory (give --model twice).
    #[arg(long = "model", value_name = "PATH", required = true, num_args = 1, action = clap::ArgAction::Append)]
    pub models: Vec<PathBuf>,
    /// A TOML model definition both models are built from, over their weights.
    #[arg(long, value_name = "TOML")]
    pub model_def: Option<PathBuf>,
    /// Prompts, one per line (`\n` in a line is a newline; default: 16 built-in prompts).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Most greedy tokens per prompt.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(global: &GlobalArgs, cmd: EvalCommand, hooks: &Hooks) -> Result<()> {
    match cmd {
        EvalCommand::Perplexity(args) => perplexity(global, &args, hooks),
        EvalCommand::Compare(args) => compare(global, &args, hooks),
    }
}

/// Eval's engine settings: the flags, with [`EVAL_MAX_BATCH_SIZE`] where none is given.
fn eval_engine(engine: &EngineArgs) -> EngineArgs {
    let mut e = engine.clone();
    if e.max_batch_size.is_none() {
        e.max_batch_size = Some(EVAL_MAX_BATCH_SIZE.min(e.max_num_tokens.unwrap_or(usize::MAX)));
    }
    e
}

fn perplexity(global: &GlobalArgs, args: &PerplexityArgs, hooks: &Hooks) -> Result<()> {
    // Bad input is refused before a model is loaded.
    let text = eval::read_text(&args.file)?;
    if let Some(c) = args.context_len {
        eval::plan(2, c, args.stride.unwrap_or((c / 2).max(1)))?;
    }
    let mut model = args.model.clone();
    model.engine = eval_engine(&model.engine);
    if let (Some(c), None) = (args.context_len, model.engine.max_seq_len) {
        model.engine.max_seq_len = Some(c + 1);
    }
    let registry = global.registry_for(model.engine.device.device);
    let llm = model.start(registry, ExecutorConfig::default(), hooks)?;
    let ids = llm.tokenizer().encode(&text, true).context("tokenizing the text")?;
    let context = args.context_len.unwrap_or_else(|| eval::default_context(&llm));
    let stride = args.stride.unwrap_or((context / 2).max(1));
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = eval::perplexity(&llm, &ids, context, stride, progress)?;
    print_perplexity(&llm, &args.file, &report, args.json)?;
    llm.shutdown()?;
    Ok(())
}

#[derive(Serialize)]
struct PerplexityJson<'a> {
    model: String,
    file: &'a Path,
    #[serde(flatten)]
    report: &'a PerplexityReport,
}

fn print_perplexity(llm: &Llm, file: &Path, r: &PerplexityReport, json: bool) -> Result<()> {
    let model = llm.model_path().display().to_string();
    if json {
        println!("{}", serde_json::to_string(&PerplexityJson { model, file, report: r })?);
        return Ok(());
    }
    let rows = [
        ("model", model),
        ("file", file.display().to_string()),
        ("text tokens", r.text_tokens.to_string()),
        ("context length", r.context_len.to_string()),
        ("stride", r.stride.to_string()),
        ("windows", r.windows.to_string()),
        ("tokens scored", r.tokens_scored.to_string()),
        ("mean NLL (nats)", format!("{:.6}", r.mean_nll)),
        ("perplexity", format!("{:.4}", r.perplexity)),
    ];
    print_rows(&rows);
    Ok(())
}

fn print_rows(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:width$}  {v}");
    }
}

fn compare(global: &GlobalArgs, args: &CompareArgs, hooks: &Hooks) -> Result<()> {
    let [a, b] = args.models.as_slice() else {
        bail!("eval compare takes exactly two --model flags (the reference A, then B); got {}", args.models.len());
    };
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let prompts: Vec<String> = match &args.prompts {
        Some(path) => eval::read_prompts(path)?,
        None => eval::DEFAULT_PROMPTS.iter().map(|p| p.to_string()).collect(),
    };
    let mut engine = eval_engine(&args.engine);
    if engine.device.device == DeviceKind::Cuda && engine.device.free_gpu_memory_fraction.is_none() {
        engine.device.free_gpu_memory_fraction = Some(COMPARE_GPU_KV_FRACTION);
    }
    let registry = Arc::new(global.registry_for(engine.device.device));
    let side = |path: &PathBuf| ModelArgs {
        model: Some(path.clone()),
        model_def: args.model_def.clone(),
        engine: engine.clone(),
        ..ModelArgs::default()
    };
    let llm_a = side(a).start_shared(registry.clone(), ExecutorConfig::default(), hooks).context("model A")?;
    let llm_b = side(b).start_shared(registry, ExecutorConfig::default(), hooks).context("model B")?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = eval::compare(&llm_a, &llm_b, &prompts, args.max_tokens, progress)?;
    print_compare(&llm_a, &llm_b, &report, args.json)?;
    llm_a.shutdown()?;
    llm_b.shutdown()?;
    Ok(())
}

#[derive(Serialize)]
struct CompareJson<'a> {
    model_a: String,
    model_b: String,
    #[serde(flatten)]
    report: &'a CompareReport,
}

fn print_compare(a: &Llm, b: &Llm, r: &CompareReport, json: bool) -> Result<()> {
    let (model_a, model_b) = (a.model_path().display().to_string(), b.model_path().display().to_string());
    if json {
        println!("{}", serde_json::to_string(&CompareJson { model_a, model_b, report: r })?);
        return Ok(());
    }
    let exact = r.per_prompt.iter().filter(|p| p.exact_match).count();
    let rows = [
        ("model A (reference)", model_a),
        ("model B", model_b),
        ("prompts", format!("{} (greedy, at most {} tokens each)", r.prompts, r.max_tokens)),
        ("greedy exact match", format!("{:.4} ({exact}/{})", r.exact_match_rate, r.prompts)),
        ("greedy prefix agreement", format!("{:.4}", r.mean_prefix_fraction)),
        ("teacher-forced positions", r.positions.to_string()),
        ("top-1 agreement", format!("{:.4}", r.top1_agreement)),
        ("mean KL(A||B) (nats)", format!("{:.6}", r.mean_kl)),
        ("max KL(A||B) (nats)", format!("{:.6}", r.max_kl)),
    ];
    print_rows(&rows);
    println!();
    println!("{:>6} {:>8} {:>6} {:>6} {:>7} {:>7} {:>10}", "prompt", "tokens", "A", "B", "prefix", "top-1", "mean KL");
    for (i, p) in r.per_prompt.iter().enumerate() {
        println!(
            "{:>6} {:>8} {:>6} {:>6} {:>7} {:>7.4} {:>10.6}",
            i + 1,
            p.prompt_tokens,
            p.tokens_a,
            p.tokens_b,
            p.common_prefix,
            p.top1_agreement,
            p.mean_kl
        );
    }
    Ok(())
}
