//! `rtllm generate`: runs a model (the built-in default unless `--model`) on a prompt through
//! the `Llm` API (the executor every front end uses: chunked prefill, prefix reuse, device
//! sampling on a GPU) and streams the text to the terminal as tokens come. `--stats` prints
//! load time, prefill and decode speed, measured from the stream's arrival times.

use super::{Hooks, ModelArgs};
use crate::api::{Prompt, RequestOutput};
use crate::registry::Registry;
use crate::runtime::executor::ExecutorConfig;
use crate::sampling::{FinishReason, SamplingParams};
use crate::tokenizer::ChatMessage;
use anyhow::{Context, Result};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// The prompt.
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Apply the model's chat template to the prompt as a user message.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print load time and tokens/s to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: &GenerateArgs, registry: Registry, hooks: &Hooks) -> Result<()> {
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        ignore_eos: args.ignore_eos,
        ..Default::default()
    };
    params.validate()?;
    let llm = args.model.start(registry, ExecutorConfig::default(), hooks)?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        llm.chat_prompt(&messages).context("applying the chat template")?
    } else {
        Prompt::Text(args.prompt.clone())
    };
    let prompt_ids = llm.encode_prompt(&prompt)?;
    let mut out = std::io::stdout().lock();
    if !args.chat {
        write!(out, "{}", args.prompt)?;
    }
    out.flush()?;
    let start = Instant::now();
    let mut arrivals = Arrivals::default();
    let mut last = None;
    for output in llm.generate_stream(prompt_ids, &params)? {
        let output = output?;
        arrivals.record(&output, start.elapsed());
        if let Some(sample) = output.outputs.first() {
            write!(out, "{}", sample.text_diff)?;
            out.flush()?;
        }
        last = Some(output);
    }
    writeln!(out)?;
    drop(out);
    if args.stats {
        let finish = last.as_ref().and_then(|o| o.outputs.first()).and_then(|s| s.finish_reason.clone());
        eprintln!("{}", arrivals.stats_line(llm.load_time(), finish.as_ref()));
    }
    llm.shutdown()?;
    Ok(())
}

/// When the stream's outputs arrived (since the request was submitted).
#[derive(Debug, Default)]
struct Arrivals {
    prompt_tokens: usize,
    tokens: usize,
    /// The first generated token: the end of prefill.
    first: Option<Duration>,
    last: Duration,
}

impl Arrivals {
    fn record(&mut self, output: &RequestOutput, at: Duration) {
        self.prompt_tokens = output.prompt_token_ids.len();
        if let Some(sample) = output.outputs.first() {
            self.tokens = sample.token_ids.len();
            if !sample.token_ids_diff.is_empty() {
                self.first.get_or_insert(at);
            }
        }
        self.last = at;
    }

    /// `load 0.06s | prompt 6 tokens in 0.054s (110.4 tok/s) | 63 tokens decoded at 28.2 tok/s | finish: length`
    fn stats_line(&self, load: Duration, finish: Option<&FinishReason>) -> String {
        let prefill = self.first.unwrap_or(self.last);
        let decoded = self.tokens.saturating_sub(1);
        let decode_secs = self.last.saturating_sub(prefill).as_secs_f64();
        let finish = finish.map_or_else(|| "none".to_string(), |f| f.to_string());
        format!(
            "load {:.2}s | prompt {} tokens in {:.3}s ({:.1} tok/s) | {} tokens decoded at {:.1} tok/s | finish: {finish}",
            load.as_secs_f64(),
            self.prompt_tokens,
            prefill.as_secs_f64(),
            self.prompt_tokens as f64 / prefill.as_secs_f64().max(1e-9),
            decoded,
            decoded as f64 / decode_secs.max(1e-9),
        )
    }
}
