//! The `rtllm` command line: global flags (`--plugin-path`), logging from `RTLLM_LOG`, the
//! model flags the model-running subcommands share (`model_args`), the binary's [`Hooks`],
//! and one module per subcommand. Adding a subcommand: one `Command` variant, one arm in
//! `run`, one module.

pub mod bench;
pub mod build;
pub mod device;
pub mod engine_args;
pub mod eval;
pub mod generate;
pub mod model_args;
pub mod plugins;
pub mod quantize;
pub mod serve;

pub use engine_args::EngineArgs;
pub use model_args::ModelArgs;

use crate::registry::{DiscoveryOptions, Registry};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The environment variable holding the log filter (tracing-subscriber `EnvFilter` syntax).
pub const LOG_ENV: &str = "RTLLM_LOG";

#[derive(Debug, Parser)]
#[command(name = "rtllm", version, about = "rtllm: LLM inference with pluggable kernels")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// A plugin dylib or a directory of them, searched in addition to RTLLM_PLUGIN_PATH and the
    /// executable's directory (repeatable).
    #[arg(long = "plugin-path", value_name = "PATH", global = true)]
    pub plugin_paths: Vec<PathBuf>,
}

impl GlobalArgs {
    /// Where to look for plugins: the flags, then the default discovery.
    pub fn discovery(&self) -> DiscoveryOptions {
        DiscoveryOptions::default().with_paths(self.plugin_paths.iter().cloned())
    }

    /// Loads the plugin registry (load errors are kept in it and logged).
    pub fn registry(&self) -> Registry {
        Registry::load(&self.discovery())
    }

    /// Loads the plugins that may serve `device` (plugins declaring only other devices are not
    /// opened; see [`DiscoveryOptions::device`]).
    pub fn registry_for(&self, device: rtllm_plugin_api::DeviceKind) -> Registry {
        Registry::load(&self.discovery().for_device(device))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, inspect and check the kernel plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Generate text from a prompt (the built-in default model unless --model).
    Generate(generate::GenerateArgs),
    /// Serve the OpenAI-compatible HTTP API (completions, chat, models, health, metrics).
    Serve(serve::ServeArgs),
    /// Benchmark a model under load (throughput or latency), like trtllm-bench.
    Bench(bench::BenchArgs),
    /// Build a model's engine into a directory (plan.json + model.safetensors + tokenizer).
    Build(build::BuildArgs),
    /// Measure a model's quality: perplexity over a text, or agreement and KL with another model.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Convert a model to FP8 as an HF directory (compressed-tensors, as llm-compressor writes).
    Quantize(quantize::QuantizeArgs),
}

/// Installs the tracing subscriber: level from `RTLLM_LOG` (default `warn`), to stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second call (e.g. from tests) finds a subscriber already set; that is fine.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// What the binary does around the library's work (process-wide settings a library must not
/// make, such as allocator tuning).
#[derive(Clone, Copy, Debug)]
pub struct Hooks {
    /// Runs once a subcommand has loaded its model (before it generates or serves).
    pub after_model_load: fn(),
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { after_model_load: || {} }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli, hooks: &Hooks) -> anyhow::Result<ExitCode> {
    let device = |m: &ModelArgs| m.engine.device.device;
    match cli.command {
        Command::Plugins(cmd) => plugins::run(&cli.global, cmd),
        Command::Generate(args) => {
            generate::run(&args, cli.global.registry_for(device(&args.model)), hooks).map(|_| ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(&args, cli.global.registry(), hooks).map(|_| ExitCode::SUCCESS),
        Command::Build(args) => {
            build::run(&args, &cli.global.registry_for(device(&args.model))).map(|_| ExitCode::SUCCESS)
        }
        Command::Quantize(args) => {
            quantize::run(&args, &cli.global.registry_for(args.device)).map(|_| ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            serve::run(&args, cli.global.registry_for(device(&args.model)), hooks).map(|_| ExitCode::SUCCESS)
        }
        Command::Eval(cmd) => eval::run(&cli.global, cmd, hooks).map(|_| ExitCode::SUCCESS),
    }
}

/// The binary's entry point with no hooks.
pub fn main() -> ExitCode {
    main_with(Hooks::default())
}

/// The binary's entry point: parse, set up logging, run with `hooks`, report errors.
pub fn main_with(hooks: Hooks) -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli, &hooks) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid_and_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "rtllm",
            "plugins",
            "check",
            "--op",
            "add",
            "--plugin",
            "a",
            "--plugin",
            "b",
            "--seed",
            "3",
            "--plugin-path",
            "/x",
        ])
        .unwrap();
        assert_eq!(cli.global.plugin_paths, vec![PathBuf::from("/x")]);
        let Command::Plugins(plugins::PluginsCommand::Check(args)) = cli.command else { panic!("wrong command") };
        assert_eq!(args.op.as_deref(), Some("add"));
        assert_eq!(args.plugin, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(args.seed, Some(3));
    }
}
