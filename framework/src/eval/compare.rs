//! Two models side by side on the same prompts, so a quantized model's distance from its
//! reference is a number: greedy agreement (each model continues each prompt greedily: the
//! share of prompts continued identically, and the mean share of tokens identical up to the
//! first divergence), then, teacher-forced on A's greedy continuation, how often the two
//! models' most likely next tokens agree and the mean KL(A || B) of their next-token
//! distributions. Both models are loaded at once and run side by side; only one prompt's
//! distributions (continuation length × vocabulary, per model) are held at a time.

use super::EvalError;
use crate::api::{Llm, OutputStream, Prompt};
use crate::sampling::{argmax, PromptLogprob, PromptLogprobs, SamplingParams};
use indicatif::ProgressBar;
use serde::Serialize;

/// The prompts `eval compare` uses without `--prompts`: short, varied openings (facts,
/// narrative, code, arithmetic, lists, instructions) that small models continue sensibly.
pub const DEFAULT_PROMPTS: &[&str] = &[
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "To make a cup of tea, first",
    "1, 2, 3, 4, 5,",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "Photosynthesis is the process by which",
    "import numpy as np\n\ndef mean(values):",
    "The largest planet in our solar system is",
    "Dear Sir or Madam, I am writing to",
    "In 1492, Christopher Columbus",
    "The recipe calls for two cups of flour,",
    "Question: What is 12 times 12?\nAnswer:",
    "A haiku about the autumn moon:\n",
];

/// One prompt's comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptComparison {
    pub prompt_tokens: usize,
    /// Greedy tokens each model generated.
    pub tokens_a: usize,
    pub tokens_b: usize,
    /// Leading greedy tokens the two continuations share.
    pub common_prefix: usize,
    pub exact_match: bool,
    /// Positions of A's continuation compared teacher-forced.
    pub positions: usize,
    pub top1_agreement: f64,
    pub mean_kl: f64,
    pub max_kl: f64,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompareReport {
    pub prompts: usize,
    pub max_tokens: usize,
    /// Share of prompts whose greedy continuations are identical.
    pub exact_match_rate: f64,
    /// Mean over prompts of common_prefix / max(tokens_a, tokens_b).
    pub mean_prefix_fraction: f64,
    /// Teacher-forced positions over all prompts.
    pub positions: usize,
    /// Share of those positions where both models' most likely token is the same.
    pub top1_agreement: f64,
    /// Mean over those positions of KL(A || B), in nats.
    pub mean_kl: f64,
    pub max_kl: f64,
    pub per_prompt: Vec<PromptComparison>,
}

/// Compares `b` against the reference `a` on `prompts` with greedy continuations of at most
/// `max_tokens` tokens; `progress` shows a bar of prompts on stderr.
pub fn compare(
    a: &Llm,
    b: &Llm,
    prompts: &[String],
    max_tokens: usize,
    progress: bool,
) -> Result<CompareReport, EvalError> {
    if prompts.is_empty() {
        return Err(EvalError::NoPrompts);
    }
    let mut ids = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let (ia, ib) = (a.encode_prompt(&Prompt::Text(p.clone()))?, b.encode_prompt(&Prompt::Text(p.clone()))?);
        if ia != ib {
            return Err(EvalError::Mismatch(format!(
                "prompt {} tokenizes differently under the two models ({} and {} tokens): compare needs models that share a tokenizer",
                i + 1,
                ia.len(),
                ib.len()
            )));
        }
        ids.push(ia);
    }
    let greedy = SamplingParams::greedy(max_tokens);
    // Both executors run at once: every prompt is submitted to each before any is awaited.
    let streams_a: Vec<OutputStream> =
        ids.iter().map(|p| a.generate_stream(p.clone(), &greedy)).collect::<Result<_, _>>()?;
    let streams_b: Vec<OutputStream> =
        ids.iter().map(|p| b.generate_stream(p.clone(), &greedy)).collect::<Result<_, _>>()?;
    let conts_a = streams_a.into_iter().map(first_tokens).collect::<Result<Vec<_>, _>>()?;
    let conts_b = streams_b.into_iter().map(first_tokens).collect::<Result<Vec<_>, _>>()?;
    let bar = if progress { ProgressBar::new(prompts.len() as u64) } else { ProgressBar::hidden() };
    let max_seq_len = a.max_seq_len().min(b.max_seq_len());
    let mut per_prompt = Vec::with_capacity(prompts.len());
    for ((prompt, ca), cb) in ids.iter().zip(&conts_a).zip(&conts_b) {
        let common_prefix = ca.iter().zip(cb).take_while(|(x, y)| x == y).count();
        // The teacher-forced prompt and its one generated token must fit both engines.
        let keep = ca.len().min(max_seq_len.saturating_sub(prompt.len() + 1));
        let (top1, kls) = teacher_forced(a, b, prompt, &ca[..keep])?;
        per_prompt.push(PromptComparison {
            prompt_tokens: prompt.len(),
            tokens_a: ca.len(),
            tokens_b: cb.len(),
            common_prefix,
            exact_match: ca == cb,
            positions: kls.len(),
            top1_agreement: ratio(top1, kls.len()),
            mean_kl: ratio_f(kls.iter().sum(), kls.len()),
            max_kl: kls.iter().copied().fold(0.0, f64::max),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let n = per_prompt.len();
    let positions: usize = per_prompt.iter().map(|p| p.positions).sum();
    let weighted = |f: fn(&PromptComparison) -> f64| per_prompt.iter().map(|p| f(p) * p.positions as f64).sum::<f64>();
    Ok(CompareReport {
        prompts: n,
        max_tokens,
        exact_match_rate: ratio(per_prompt.iter().filter(|p| p.exact_match).count(), n),
        mean_prefix_fraction: ratio_f(
            per_prompt.iter().map(|p| ratio_f(p.common_prefix as f64, p.tokens_a.max(p.tokens_b))).sum(),
            n,
        ),
        positions,
        top1_agreement: ratio_f(weighted(|p| p.top1_agreement), positions),
        mean_kl: ratio_f(weighted(|p| p.mean_kl), positions),
        max_kl: per_prompt.iter().map(|p| p.max_kl).fold(0.0, f64::max),
        per_prompt,
    })
}

/// The first sample's generated tokens.
fn first_tokens(stream: OutputStream) -> Result<Vec<u32>, EvalError> {
    let out = stream.finish()?;
    Ok(out.outputs.into_iter().next().map(|o| o.token_ids).unwrap_or_default())
}

/// Runs `prompt + continuation` through both models, scoring the continuation with whole
/// distributions; returns how many positions agree on the top token, and KL(A || B) per position.
fn teacher_forced(a: &Llm, b: &Llm, prompt: &[u32], continuation: &[u32]) -> Result<(usize, Vec<f64>), EvalError> {
    if continuation.is_empty() {
        return Ok((0, Vec::new()));
    }
    let params = SamplingParams {
        max_tokens: 1,
        prompt_logprobs: Some(PromptLogprobs { top: 0, start: prompt.len(), full_distribution: true }),
        ..SamplingParams::default()
    };
    let seq: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
    let (sa, sb) = (a.generate_stream(seq.clone(), &params)?, b.generate_stream(seq, &params)?);
    let (da, db) = (distributions(sa, continuation.len())?, distributions(sb, continuation.len())?);
    let mut top1 = 0;
    let mut kls = Vec::with_capacity(da.len());
    for (pa, pb) in da.iter().zip(&db) {
        let (pa, pb) = (dist(pa)?, dist(pb)?);
        if pa.len() != pb.len() {
            return Err(EvalError::Mismatch(format!(
                "the models' vocabularies differ ({} and {} tokens)",
                pa.len(),
                pb.len()
            )));
        }
        top1 += usize::from(argmax(pa) == argmax(pb));
        kls.push(kl_divergence(pa, pb));
    }
    Ok((top1, kls))
}

/// The `expected` scored positions of a teacher-forced request.
fn distributions(stream: OutputStream, expected: usize) -> Result<Vec<PromptLogprob>, EvalError> {
    let scored = stream.finish()?.prompt_logprobs.unwrap_or_default();
    if scored.len() != expected {
        return Err(EvalError::Internal(format!("{} scored positions came back, expected {expected}", scored.len())));
    }
    Ok(scored)
}

fn dist(p: &PromptLogprob) -> Result<&[f32], EvalError> {
    p.distribution
        .as_deref()
        .ok_or_else(|| EvalError::Internal("a scored position came without its distribution".into()))
}

/// KL(P || Q) in nats from two log-probability rows (f64 accumulation; tokens P gives no mass
/// add nothing).
pub fn kl_divergence(log_p: &[f32], log_q: &[f32]) -> f64 {
    log_p
        .iter()
        .zip(log_q)
        .filter(|(&lp, _)| lp > f32::NEG_INFINITY)
        .map(|(&lp, &lq)| (lp as f64).exp() * (lp as f64 - lq as f64))
        .sum()
}

fn ratio(part: usize, whole: usize) -> f64 {
    ratio_f(part as f64, whole)
}

/// part / whole, 1 when there is nothing to compare (no disagreement was seen).
fn ratio_f(part: f64, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_log_probability_rows() {
        let p = [0.5f64.ln() as f32, 0.25f64.ln() as f32, 0.25f64.ln() as f32];
        assert_eq!(kl_divergence(&p, &p), 0.0);
        let q = [0.25f64.ln() as f32, 0.25f64.ln() as f32, 0.5f64.ln() as f32];
        let want = 0.5 * 2f64.ln() + 0.25 * 0.5f64.ln();
        assert!((kl_divergence(&p, &q) - want).abs() < 1e-6);
        // Zero mass in P adds nothing, even where Q has none either.
        let p0 = [0.0f32, f32::NEG_INFINITY];
        assert_eq!(kl_divergence(&p0, &[0.0, f32::NEG_INFINITY]), 0.0);
    }
}
