//! `rtllm plugins list` (which file serves which op, plus load errors) and `rtllm plugins
//! check` (every provider against a reference on random inputs; non-zero exit on failure).

use super::GlobalArgs;
use crate::host_pool::HostPool;
use crate::registry::check::{check, CheckOptions, CheckReport, Outcome};
use crate::registry::{dtype_list, Registry};
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Every registered op: provider plugin, file, device, dtypes, priority; then load errors.
    List,
    /// Run every provider (or the selected ones) on its examples with random inputs and
    /// compare with a reference. Exits non-zero if a kernel fails, or if a plugin failed to
    /// load and no --op/--plugin filter was given.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Only this op.
    #[arg(long)]
    pub op: Option<String>,
    /// Only providers from this plugin (repeatable).
    #[arg(long)]
    pub plugin: Vec<String>,
    /// Seed of the random inputs (default: a fresh one, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Only providers for this device (cpu or cuda); CUDA providers run on GPU 0.
    #[arg(long, value_parser = |s: &str| rtllm_plugin_api::DeviceKind::parse(s).ok_or_else(|| format!("unknown device '{s}'")))]
    pub device: Option<rtllm_plugin_api::DeviceKind>,
}

pub fn run(global: &GlobalArgs, cmd: PluginsCommand) -> anyhow::Result<ExitCode> {
    let registry = global.registry();
    match cmd {
        PluginsCommand::List => {
            print!("{}", render_list(&registry));
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Check(args) => {
            for name in &args.plugin {
                if !registry.plugins().iter().any(|p| &p.name == name) {
                    let loaded: Vec<_> = registry.plugins().iter().map(|p| p.name.as_str()).collect();
                    anyhow::bail!("no plugin named '{name}' is loaded; loaded: {}", loaded.join(", "));
                }
            }
            if let Some(op) = &args.op {
                if registry.providers(op).is_empty() {
                    anyhow::bail!("no plugin provides op '{op}'; closest: {}", registry.closest_names(op).join(", "));
                }
            }
            let opts = CheckOptions {
                op: args.op.clone(),
                plugins: args.plugin.clone(),
                seed: args.seed,
                device: args.device,
            };
            let report = check(&registry, &opts, HostPool::global());
            print!("{}", render_check(&report));
            let filtered = args.op.is_some() || !args.plugin.is_empty();
            let ok = report.passed() && (filtered || report.load_errors.is_empty());
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// Left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The `plugins list` text.
pub fn render_list(registry: &Registry) -> String {
    let mut rows = Vec::new();
    for (op, providers) in registry.ops() {
        for p in providers {
            rows.push(vec![
                op.to_string(),
                format!("{} {}", p.plugin, p.plugin_version),
                p.path.display().to_string(),
                p.device().to_string(),
                dtype_list(p.dtypes()),
                p.priority().to_string(),
                p.decl.version.to_string(),
            ]);
        }
    }
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no ops registered (no plugins found; build them or set RTLLM_PLUGIN_PATH / --plugin-path)\n");
    } else {
        out.push_str(&table(&["OP", "PROVIDER", "FILE", "DEVICE", "DTYPES", "PRIORITY", "OP VERSION"], &rows));
    }
    let _ = writeln!(out, "\n{} plugins loaded, {} ops", registry.plugins().len(), registry.op_names().len());
    out.push_str(&render_load_errors(registry.load_errors()));
    out
}

fn render_load_errors(errors: &[crate::registry::LoadError]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let mut out = format!("\nLOAD ERRORS ({}):\n", errors.len());
    for e in errors {
        let _ = writeln!(out, "  {e}");
    }
    out
}

/// The `plugins check` text.
pub fn render_check(report: &CheckReport) -> String {
    let mut rows = Vec::new();
    for k in &report.kernels {
        let (abs, rel, verdict) = match &k.outcome {
            Outcome::Compared { max_abs, max_rel, tolerance, passed, reference, worst } => (
                format!("{max_abs:.3e}"),
                format!("{max_rel:.3e}"),
                if *passed {
                    format!("PASS (tol {tolerance:.0e}, vs {reference})")
                } else {
                    format!("FAIL (tol {tolerance:.0e}, vs {reference}; worst {worst}; attrs {})", k.attrs)
                },
            ),
            Outcome::Unverified { finite: true } => {
                ("-".into(), "-".into(), "PASS (no reference: ran, output finite)".into())
            }
            Outcome::Unverified { finite: false } => {
                ("-".into(), "-".into(), "FAIL (no reference: ran, output NOT finite)".into())
            }
            Outcome::Failed(msg) => ("-".into(), "-".into(), format!("FAIL: {msg} (attrs {})", k.attrs)),
            Outcome::Skipped(why) => ("-".into(), "-".into(), format!("SKIP: {why}")),
        };
        let example = k.example.map(|i| format!("#{i} {}", k.shapes)).unwrap_or_default();
        rows.push(vec![k.op.clone(), format!("{} {}", k.plugin, k.plugin_version), example, abs, rel, verdict]);
    }
    let mut out = table(&["OP", "PLUGIN", "EXAMPLE", "MAX ABS", "MAX REL", "RESULT"], &rows);
    let failed = report.failures().count();
    let _ = writeln!(
        out,
        "\n{} checks, {} failed (seed {}; rerun with --seed {})",
        report.kernels.len(),
        failed,
        report.seed,
        report.seed
    );
    out.push_str(&render_load_errors(&report.load_errors));
    out
}
