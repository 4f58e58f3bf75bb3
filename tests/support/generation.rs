//! Generating in tests the way every front end does (a loaded `Model` started as an `Llm`, the
//! executor behind it), and the logits reference: [`LogitsProbe`] feeds one sequence through an
//! engine directly (no executor, no sampling) to read the logits after its last token.

use rtllm::api::{Llm, Prompt};
use rtllm::engine::StepBatch;
use rtllm::model::Model;
use rtllm::parallel::ModelRunner;
use rtllm::runtime::ExecutorConfig;
use rtllm::sampling::SamplingParams;

/// Greedy decoding of exactly `max_tokens` tokens (eos ignored).
pub fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_tokens) }
}

/// Starts the model's executor with the default config.
pub fn start(model: Model) -> Llm {
    Llm::start(model, ExecutorConfig::default()).unwrap_or_else(|e| panic!("the executor starts: {e}"))
}

/// The tokens `llm` generates for each prompt with `params` (prompts batched together).
pub fn greedy_ids(llm: &Llm, prompts: &[Vec<u32>], params: &SamplingParams) -> Vec<Vec<u32>> {
    let prompts = prompts.iter().map(|p| Prompt::Tokens(p.clone()));
    let outputs = llm.generate(prompts, params).unwrap_or_else(|e| panic!("generates: {e}"));
    outputs.into_iter().map(|mut o| o.outputs.remove(0).token_ids).collect()
}

/// One sequence fed through an engine, in KV blocks `0..` (the engine must be otherwise idle).
#[derive(Debug, Default)]
pub struct LogitsProbe {
    len: usize,
    batch: StepBatch,
}

impl LogitsProbe {
    pub fn new() -> LogitsProbe {
        LogitsProbe::default()
    }

    /// Feeds `tokens` after those fed so far (in chunks of the engine's max_num_tokens) and
    /// returns the logits after the last one.
    pub fn feed(&mut self, engine: &mut dyn ModelRunner, tokens: &[u32]) -> Vec<f32> {
        assert!(!tokens.is_empty(), "feed at least one token");
        let lim = engine.limits().clone();
        let end = self.len + tokens.len();
        assert!(end <= lim.max_seq_len, "{end} tokens exceed max_seq_len {}", lim.max_seq_len);
        let blocks: Vec<u32> = (0..end.div_ceil(lim.tokens_per_block) as u32).collect();
        assert!(blocks.len() <= lim.num_kv_blocks, "{end} tokens need more than {} KV blocks", lim.num_kv_blocks);
        let mut logits = Vec::new();
        for (i, part) in tokens.chunks(lim.max_num_tokens).enumerate() {
            let last = (i + 1) * lim.max_num_tokens >= tokens.len();
            self.batch.clear();
            self.batch.push_sequence(part, self.len, &blocks, last);
            if !last {
                // The graph always computes one logits row; this one is discarded.
                self.batch.logits_indices.push(0);
            }
            let out = engine.forward(&self.batch).unwrap_or_else(|e| panic!("forward pass: {e}"));
            if last {
                logits = out.to_vec();
            }
            self.len += part.len();
        }
        logits
    }
}

/// The logits after `tokens` fed as a fresh sequence.
pub fn last_logits(engine: &mut dyn ModelRunner, tokens: &[u32]) -> Vec<f32> {
    LogitsProbe::new().feed(engine, tokens)
}
