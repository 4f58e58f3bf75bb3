//! `rtllm serve`: loads a model into one shared `Llm` and serves the OpenAI-compatible API
//! (see `crate::serve`) until interrupted; prints `listening on http://ADDR` when ready.

use super::{Hooks, ModelArgs};
use crate::registry::Registry;
use crate::runtime::executor::ExecutorConfig;
use crate::serve::{bind, model_name_from_path, ServeConfig, API_KEY_ENV};
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
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
}

pub fn run(args: &ServeArgs, registry: Registry, hooks: &Hooks) -> Result<()> {
    let llm = Arc::new(args.model.start(registry, ExecutorConfig::default(), hooks)?);
    let name = args.served_model_name.clone().unwrap_or_else(|| model_name_from_path(&args.model.spec().label()));
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
