//! `rtllm serve`: loads a model into one shared `Llm` and serves the OpenAI-compatible API
//! (see `crate::serve`) until SIGINT or SIGTERM, then drains (within --shutdown-timeout) and
//! exits 0; prints `listening on http://ADDR` when ready. Refuses an empty API key and warns
//! when a non-loopback address is served without one.

use super::{Hooks, ModelArgs};
use crate::registry::Registry;
use crate::runtime::executor::{ExecutorConfig, QueueLimits};
use crate::serve::{bind, model_name_from_path, signal, ConnectionLimits, ServeConfig, API_KEY_ENV};
use crate::tokenizer::ContentSpecialTokens;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// Require `Authorization: Bearer <KEY>` on every route but /health (default:
    /// $RTLLM_API_KEY). An empty key is an error.
    #[arg(long, conflicts_with = "no_api_key")]
    pub api_key: Option<String>,
    /// Serve without an API key, on purpose ($RTLLM_API_KEY is then ignored).
    #[arg(long)]
    pub no_api_key: bool,
    /// The model name clients use (default: the model's file or directory name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Most prompts in one /v1/completions request.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_prompts_per_request: u64,
    /// Most requests waiting for the executor (beyond: 429 with Retry-After).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_requests: u64,
    /// Most prompt tokens waiting for the executor (beyond: 429 with Retry-After).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_tokens: u64,
    /// Most open connections; beyond it the longest-idle one is closed, or the new one is
    /// answered 503 when all are busy.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Seconds a request's headers may take to arrive.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: Duration,
    /// Seconds an idle connection stays open.
    #[arg(long, default_value = "5", value_parser = parse_seconds)]
    pub keep_alive_timeout: Duration,
    /// Seconds running requests may finish after SIGINT or SIGTERM; streams still running then
    /// end with an error event and [DONE].
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,
    /// Parse special-token text typed inside chat messages (e.g. `<|im_end|>`) as the control
    /// tokens it spells (default: it is encoded as plain text, so users cannot forge turns).
    #[arg(long)]
    pub allow_special_tokens_in_content: bool,
    /// Requests parsed, templated and tokenized at once (default: half the cores, 1..=8).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub preprocess_threads: Option<u64>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("expected seconds in (0, 86400], not '{s}'")),
    }
}

/// The API key to require: `--api-key`, else $RTLLM_API_KEY, unless `--no-api-key`.
fn api_key(args: &ServeArgs) -> Result<Option<String>> {
    if args.no_api_key {
        return Ok(None);
    }
    let (key, source) = match &args.api_key {
        Some(k) => (Some(k.clone()), "--api-key"),
        None => (std::env::var(API_KEY_ENV).ok(), API_KEY_ENV),
    };
    match key {
        Some(k) if k.trim().is_empty() => {
            bail!("{source} is empty: pass a key, or --no-api-key to serve without authentication")
        }
        key => Ok(key),
    }
}

/// Whether `host` only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ServeArgs {
    fn config(&self, name: String, key: Option<String>) -> ServeConfig {
        let mut config = ServeConfig::new(name).with_api_key(key);
        config.max_prompts_per_request = self.max_prompts_per_request as usize;
        config.connections = ConnectionLimits {
            max_connections: self.max_connections as usize,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            shutdown_timeout: self.shutdown_timeout,
        };
        if self.allow_special_tokens_in_content {
            config.content_special_tokens = ContentSpecialTokens::Control;
        }
        if let Some(n) = self.preprocess_threads {
            config.preprocess_threads = n as usize;
        }
        config
    }
}

pub fn run(args: &ServeArgs, registry: Registry, hooks: &Hooks) -> Result<()> {
    let key = api_key(args)?;
    if key.is_none() && !is_loopback(&args.host) {
        eprintln!(
            "WARNING: serving on {} WITHOUT AN API KEY: anyone who can reach this address can use the model.\n\
             WARNING: pass --api-key (or set {API_KEY_ENV}), or bind 127.0.0.1.",
            args.host
        );
    }
    let queue = QueueLimits {
        max_queued_requests: args.max_queued_requests as usize,
        max_queued_tokens: args.max_queued_tokens as usize,
    };
    let llm = Arc::new(args.model.start(registry, ExecutorConfig { queue, ..Default::default() }, hooks)?);
    let name = args.served_model_name.clone().unwrap_or_else(|| model_name_from_path(&args.model.spec().label()));
    let config = args.config(name, key);
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
        // The first signal drains; a second one ends the process at once.
        let (first, drain) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            signal().await;
            eprintln!("shutting down: draining running requests (a second signal exits at once)");
            let _ = first.send(());
            signal().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
        server
            .run_until(async {
                let _ = drain.await;
            })
            .await?;
        eprintln!("shut down");
        Ok::<(), anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "localhost", "::1", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "::", "192.168.1.2", "example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert!(parse_seconds("0").is_err() && parse_seconds("nan").is_err() && parse_seconds("0.5").is_ok());
    }
}
