//! The logits processing pipeline, in vLLM / TensorRT-LLM order:
//! repetition penalty → presence/frequency penalties → min_tokens mask (all in place on the
//! logits row), then on a candidate list: temperature → top-k → top-p → min-p → draw.
//!
//! Support semantics (exact): tokens with a non-finite logit (−inf, NaN) are never candidates;
//! top-k keeps exactly k (ties at the boundary go to the lower id); top-p keeps the smallest
//! prefix of the candidates sorted by probability (descending, ties by lower id) whose
//! cumulative probability reaches p, the probabilities renormalised after top-k; min-p keeps
//! tokens with probability >= min_p × the largest probability. All passes are O(V); top-p
//! sorts only as long a prefix as it needs (partial selection in doubling chunks).

use super::SamplingParams;
use std::cmp::Ordering;

/// One token still in the running: its id and its (temperature-scaled) logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Higher logit first, then lower id: the one order every filter uses.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Index of the largest logit (the lowest id on ties; NaN is ignored; 0 when none is above −inf).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// log Σ exp(logits) over the finite entries (−inf when there are none).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = logits.iter().filter(|v| v.is_finite()).map(|&v| ((v - max) as f64).exp()).sum();
    max as f64 + sum.ln()
}

/// `logits` replaced by their log-softmax (non-finite entries become −inf).
pub fn log_softmax_in_place(logits: &mut [f32]) {
    let lse = log_sum_exp(logits);
    for v in logits.iter_mut() {
        *v = if v.is_finite() { (*v as f64 - lse) as f32 } else { f32::NEG_INFINITY };
    }
}

/// The `n` largest finite logits as (id, logit), largest first (ties by lower id).
pub fn top_n(logits: &[f32], n: usize, scratch: &mut Vec<Candidate>) -> Vec<(u32, f32)> {
    collect_candidates(logits, 1.0, scratch);
    top_k_filter(scratch, n);
    scratch.sort_unstable_by(by_logit_desc);
    scratch.iter().map(|c| (c.id, c.logit)).collect()
}

/// HF repetition penalty: for each distinct id in `seen` (prompt + generated), a positive
/// logit is divided by `penalty`, a negative one multiplied. Ids outside the row are ignored.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    for &id in seen {
        if let Some(v) = logits.get_mut(id as usize) {
            *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
        }
    }
}

/// OpenAI presence and frequency penalties over generated-token counts `(id, count)`:
/// `logit -= count * frequency + (count > 0) * presence`.
pub fn apply_presence_frequency_penalties(logits: &mut [f32], counts: &[(u32, u32)], presence: f32, frequency: f32) {
    if presence == 0.0 && frequency == 0.0 {
        return;
    }
    for &(id, count) in counts {
        if count == 0 {
            continue;
        }
        if let Some(v) = logits.get_mut(id as usize) {
            *v -= count as f32 * frequency + presence;
        }
    }
}

/// Sets the logits of `ids` to −inf (min_tokens: end-of-sequence and stop ids).
pub fn mask_tokens(logits: &mut [f32], ids: &[u32]) {
    for &id in ids {
        if let Some(v) = logits.get_mut(id as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// `out` = the finite logits divided by `temperature`, in id order.
pub fn collect_candidates(logits: &[f32], temperature: f32, out: &mut Vec<Candidate>) {
    out.clear();
    let inv = 1.0 / temperature;
    out.extend(
        logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| Candidate { id: i as u32, logit: v * inv }),
    );
}

/// Keeps exactly the `k` best candidates (all when `k` is 0 or >= their number).
pub fn top_k_filter(c: &mut Vec<Candidate>, k: usize) {
    if k == 0 || k >= c.len() {
        return;
    }
    c.select_nth_unstable_by(k - 1, by_logit_desc);
    c.truncate(k);
}

fn max_logit(c: &[Candidate]) -> f32 {
    c.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max)
}

/// Keeps the smallest prefix (by probability, descending) whose cumulative probability reaches
/// `p`; leaves the kept candidates sorted. `p >= 1` keeps all.
pub fn top_p_filter(c: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || c.len() <= 1 {
        return;
    }
    let max = max_logit(c);
    let weight = |c: &Candidate| ((c.logit - max) as f64).exp();
    let total: f64 = c.iter().map(weight).sum();
    let target = p as f64 * total;
    let (n, mut sorted, mut chunk, mut acc) = (c.len(), 0usize, 64usize, 0.0f64);
    while sorted < n {
        let end = (sorted + chunk).min(n);
        if end < n {
            c[sorted..].select_nth_unstable_by(end - sorted - 1, by_logit_desc);
        }
        c[sorted..end].sort_unstable_by(by_logit_desc);
        for i in sorted..end {
            acc += weight(&c[i]);
            if acc >= target {
                c.truncate(i + 1);
                return;
            }
        }
        sorted = end;
        chunk *= 2;
    }
}

/// Keeps candidates whose probability is >= `min_p` × the largest probability.
pub fn min_p_filter(c: &mut Vec<Candidate>, min_p: f32) {
    if min_p <= 0.0 || c.is_empty() {
        return;
    }
    let max = max_logit(c);
    let min_p = min_p as f64;
    c.retain(|c| ((c.logit - max) as f64).exp() >= min_p);
}

/// Temperature, top-k, top-p and min-p on an already penalised row: `out` is what may be drawn.
/// Greedy parameters leave the single argmax. Empty only when no logit is finite.
pub fn filter_candidates(logits: &[f32], params: &SamplingParams, out: &mut Vec<Candidate>) {
    if params.is_greedy() {
        out.clear();
        let id = argmax(logits);
        if logits.get(id as usize).is_some_and(|v| v.is_finite()) {
            out.push(Candidate { id, logit: 0.0 });
        }
        return;
    }
    collect_candidates(logits, params.temperature, out);
    top_k_filter(out, params.top_k);
    top_p_filter(out, params.top_p);
    min_p_filter(out, params.min_p);
}

/// The ids that can be drawn from `logits` (no penalties applied) under `params`, ascending.
pub fn support(logits: &[f32], params: &SamplingParams) -> Vec<u32> {
    let mut c = Vec::new();
    filter_candidates(logits, params, &mut c);
    let mut ids: Vec<u32> = c.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

/// Draws from the softmax of the candidates with `u` uniform in [0, 1). None when empty.
pub fn draw(c: &[Candidate], u: f64) -> Option<u32> {
    let max = max_logit(c);
    let total: f64 = c.iter().map(|c| ((c.logit - max) as f64).exp()).sum();
    let mut r = u * total;
    for c in c {
        r -= ((c.logit - max) as f64).exp();
        if r < 0.0 {
            return Some(c.id);
        }
    }
    c.last().map(|c| c.id)
}

#[cfg(test)]
#[path = "processors_tests.rs"]
mod tests;
