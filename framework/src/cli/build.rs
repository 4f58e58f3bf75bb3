//! `rtllm build`: builds a model's engine and writes it as an engine directory (plan.json,
//! model.safetensors, tokenizer) that `--model DIR`, `Llm::new` and `Model::load` accept. The
//! model comes from the same flags and the same loader as every other subcommand's.

use super::ModelArgs;
use crate::model::write_engine_dir;
use crate::registry::Registry;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The engine directory to write (created; must not exist or be empty).
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: &BuildArgs, registry: &Registry) -> Result<()> {
    let out = &args.output;
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not an empty directory", out.display());
    }
    let start = std::time::Instant::now();
    let spec = args.model.spec();
    let engine = write_engine_dir(&spec, registry, &args.model.build_config(), out)?;
    let plan = engine.memory_plan();
    eprintln!(
        "built {} in {:.2}s: {} nodes, arena {:.1} MiB, {} KV blocks -> {}",
        spec.label().display(),
        start.elapsed().as_secs_f64(),
        engine.graph().nodes.len(),
        plan.arena_bytes as f64 / (1 << 20) as f64,
        engine.limits().num_kv_blocks,
        out.display()
    );
    Ok(())
}
