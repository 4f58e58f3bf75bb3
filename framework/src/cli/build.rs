//! `rtllm build`: builds a model's engine and writes it as an engine directory (plan.json,
//! model.safetensors, tokenizer) that `--model DIR`, `Llm::new` and `Model::load` accept; with
//! `--explain`, prints the planned graph instead (no device, no kernels, nothing written). The
//! model comes from the same flags and the same loader as every other subcommand's.

use super::ModelArgs;
use crate::engine::{explain, BuildConfig};
use crate::model::{plan_model, write_engine_dir};
use crate::registry::Registry;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The engine directory to write (created; must not exist or be empty).
    #[arg(long, required_unless_present = "explain")]
    pub output: Option<PathBuf>,
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
    let spec = args.model.spec();
    let bc = args.build_config();
    if args.explain {
        let (graph, title) = plan_model(&spec, registry, &bc)?;
        print!("{}", explain::explain(&graph, &title));
        return Ok(());
    }
    let Some(out) = &args.output else { bail!("--output is required (or --explain)") };
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not an empty directory", out.display());
    }
    let start = std::time::Instant::now();
    let engine = write_engine_dir(&spec, registry, &bc, out)?;
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
