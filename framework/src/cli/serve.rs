//! `rtllm serve`: loads a model into one shared `Llm` and serves the OpenAI-compatible API
//! (see `crate::serve`) until interrupted; prints `listening on http://ADDR` when ready.

use crate::api::Llm;
use crate::engine::BuildConfig;
use crate::model::default_model_path;
use crate::registry::Registry;
use crate::serve::{bind, model_name_from_path, ServeConfig, API_KEY_ENV};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// A GGUF file or an HF model directory (default: the built-in SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A TOML model definition to build instead of the registered architecture (weights from
    /// --model).
    #[arg(long)]
    pub model_def: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer <KEY>` on every route but /health (default: $RTLLM_API_KEY).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model name clients use (default: the model's file or directory name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Most sequences per executor step (the engine's build limit).
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    /// Most tokens one forward pass takes.
    #[arg(long)]
    pub max_num_tokens: Option<usize>,
    /// Host bytes reserved for the KV cache.
    #[arg(long)]
    pub kv_cache_bytes: Option<usize>,
    #[command(flatten)]
    pub device: super::device::DeviceArgs,
}

pub fn run(args: &ServeArgs, registry: Registry) -> Result<()> {
    let mut build = BuildConfig::default();
    if let Some(n) = args.max_batch_size {
        build.max_batch_size = n;
    }
    if let Some(n) = args.max_num_tokens {
        build.max_num_tokens = n;
    }
    if let Some(bytes) = args.kv_cache_bytes {
        build.kv_cache_bytes = bytes;
    }
    args.device.apply(&mut build);
    let mut builder = Llm::builder().registry(Arc::new(registry)).build_config(build);
    if let Some(model) = &args.model {
        builder = builder.model(model);
    }
    if let Some(def) = &args.model_def {
        builder = builder.model_definition(def);
    }
    let llm = Arc::new(builder.build().context("loading the model")?);
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| model_name_from_path(args.model.as_deref().unwrap_or(&default_model_path())));
    let key = args.api_key.clone().or_else(|| std::env::var(API_KEY_ENV).ok());
    let config = ServeConfig::new(name).with_api_key(key);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let addr = if args.host.contains(':') {
            format!("[{}]:{}", args.host, args.port)
        } else {
            format!("{}:{}", args.host, args.port)
        };
        let server = bind(&addr, llm, config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", server.local_addr())?;
        out.flush()?;
        drop(out);
        server
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok::<(), anyhow::Error>(())
    })
}
