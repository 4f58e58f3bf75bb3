//! Tests of the logits processors on crafted rows: exact supports (checked both through
//! `support()` and by drawing many times) and exact penalty arithmetic.

use super::*;
use crate::sampling::{SamplingParams, SequenceSampler};
use std::collections::BTreeSet;

fn sampling(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams { temperature: 1.0, seed: Some(11), ..Default::default() };
    f(&mut p);
    p
}

/// The set of ids drawn in `draws` samples (fresh sampler state per draw: no penalties here).
fn drawn(logits: &[f32], p: &SamplingParams, draws: usize) -> Vec<u32> {
    let mut s = SequenceSampler::new(p, &[], &[]).unwrap();
    let mut set = BTreeSet::new();
    for _ in 0..draws {
        let mut row = logits.to_vec();
        set.insert(s.sample(&mut row).id);
    }
    set.into_iter().collect()
}

/// ln of probabilities, so that the softmax gives exactly these (up to rounding).
fn from_probs(p: &[f64]) -> Vec<f32> {
    p.iter().map(|&x| if x > 0.0 { x.ln() as f32 } else { f32::NEG_INFINITY }).collect()
}

#[test]
fn top_k_keeps_exactly_k_with_ties_to_the_lower_id() {
    // ids 1, 3, 4 tie at 2.0; top_k 3 keeps id 0 (3.0) then ids 1 and 3.
    let logits = [3.0, 2.0, -1.0, 2.0, 2.0, f32::NEG_INFINITY, 0.5];
    let p = sampling(|p| p.top_k = 3);
    assert_eq!(support(&logits, &p), vec![0, 1, 3]);
    assert_eq!(drawn(&logits, &p, 400), vec![0, 1, 3]);
    // k above the number of finite logits keeps every finite one.
    assert_eq!(support(&logits, &sampling(|p| p.top_k = 50)), vec![0, 1, 2, 3, 4, 6]);
    assert_eq!(drawn(&logits, &sampling(|p| p.top_k = 50), 4000), vec![0, 1, 2, 3, 4, 6]);
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    let probs = [0.05, 0.4, 0.1, 0.3, 0.15];
    let logits = from_probs(&probs);
    // Sorted: 1 (0.4), 3 (0.3), 4 (0.15), 2 (0.1), 0 (0.05). Cumulative 0.4, 0.7, 0.85, 0.95, 1.
    for (top_p, want) in [
        (0.3, vec![1]),
        (0.41, vec![1, 3]),
        (0.69, vec![1, 3]),
        (0.71, vec![1, 3, 4]),
        (0.9, vec![1, 2, 3, 4]),
        (0.96, vec![0, 1, 2, 3, 4]),
    ] {
        let p = sampling(|p| p.top_p = top_p);
        assert_eq!(support(&logits, &p), want, "top_p {top_p}");
        assert_eq!(drawn(&logits, &p, 3000), want, "draws under top_p {top_p}");
    }
    // After top-k 3 the kept probabilities renormalise to 0.4/0.85, 0.3/0.85, 0.15/0.85:
    // top_p 0.8 needs 0.47 + 0.35 = 0.82 -> two tokens.
    let p = sampling(|p| (p.top_k, p.top_p) = (3, 0.8));
    assert_eq!(support(&logits, &p), vec![1, 3]);
    // With temperature 2 the distribution flattens: sqrt-probs 0.632, 0.548, 0.387, 0.316,
    // 0.224 (sum 2.107): 0.3 + 0.26 = 0.56 reaches 0.5 with two tokens.
    let p = sampling(|p| (p.temperature, p.top_p) = (2.0, 0.5));
    assert_eq!(support(&logits, &p), vec![1, 3]);
}

#[test]
fn top_p_on_a_large_vocabulary_uses_partial_selection_correctly() {
    // 5000 tokens with distinct logits: the kept set must be the top-m by logit, m minimal.
    let logits: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 5000) as f32 * 0.002).collect();
    let p = sampling(|p| p.top_p = 0.9);
    let kept = support(&logits, &p);
    let mut order: Vec<u32> = (0..5000).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let lse = log_sum_exp(&logits);
    let prob = |i: u32| ((logits[i as usize] as f64) - lse).exp();
    let mut acc = 0.0;
    let mut m = 0;
    while acc < 0.9 {
        acc += prob(order[m]);
        m += 1;
    }
    let mut want = order[..m].to_vec();
    want.sort_unstable();
    assert!(m > 64 * 3, "the prefix spans several selection chunks ({m})");
    assert_eq!(kept, want);
}

#[test]
fn min_p_keeps_tokens_above_the_scaled_maximum() {
    let probs = [0.5, 0.2, 0.1, 0.09, 0.06, 0.05];
    let logits = from_probs(&probs);
    // min_p 0.19 -> threshold 0.095: ids 0, 1, 2 (0.1 >= 0.095), not 3 (0.09).
    let p = sampling(|p| p.min_p = 0.19);
    assert_eq!(support(&logits, &p), vec![0, 1, 2]);
    assert_eq!(drawn(&logits, &p, 3000), vec![0, 1, 2]);
    assert_eq!(support(&logits, &sampling(|p| p.min_p = 1.0)), vec![0]);
    assert_eq!(support(&logits, &sampling(|p| p.min_p = 0.0)), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn greedy_support_is_the_argmax() {
    let logits = [1.0, 4.0, 4.0, f32::NAN, 2.0];
    assert_eq!(support(&logits, &SamplingParams::greedy(4)), vec![1]);
    assert_eq!(support(&[f32::NEG_INFINITY; 3], &sampling(|_| ())), Vec::<u32>::new());
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let mut logits = [2.0, -1.0, 0.0, 3.0, -4.0];
    apply_repetition_penalty(&mut logits, &[0, 1, 2, 4, 99], 2.0);
    assert_eq!(logits, [1.0, -2.0, 0.0, 3.0, -8.0]);
    let mut logits = [2.0, -1.0];
    apply_repetition_penalty(&mut logits, &[0, 1], 0.5);
    assert_eq!(logits, [4.0, -0.5]);
}

#[test]
fn presence_and_frequency_penalties_follow_openai() {
    let mut logits = [1.0, 1.0, 1.0, 1.0];
    apply_presence_frequency_penalties(&mut logits, &[(1, 1), (2, 3), (7, 2)], 0.5, 0.25);
    assert_eq!(logits, [1.0, 1.0 - 0.25 - 0.5, 1.0 - 0.75 - 0.5, 1.0]);
}

#[test]
fn sequence_sampler_applies_each_penalty_over_the_right_history() {
    // Repetition covers prompt + generated; presence/frequency only generated tokens.
    let p = SamplingParams {
        repetition_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        max_tokens: 8,
        ..Default::default()
    };
    let mut s = SequenceSampler::new(&p, &[0, 0, 3], &[]).unwrap();
    let mut row = vec![4.0, -2.0, 1.0, 6.0, 0.5, 9.0];
    assert_eq!(s.sample(&mut row).id, 5);
    // Prompt ids 0 and 3 are penalised by repetition only.
    assert_eq!(row, vec![2.0, -2.0, 1.0, 3.0, 0.5, 9.0]);
    let mut row = vec![4.0, -2.0, 1.0, 6.0, 0.5, 9.0];
    assert_eq!(s.sample(&mut row).id, 5);
    // Id 5 was generated once: 9 / 2 - 0.5 - 0.25.
    assert_eq!(row, vec![2.0, -2.0, 1.0, 3.0, 0.5, 3.75]);
    let mut row = vec![4.0, -2.0, 1.0, 6.0, 0.5, 9.0];
    s.sample(&mut row);
    // Twice now: 9 / 2 - 0.5 - 0.5.
    assert_eq!(row[5], 3.5);
    assert_eq!(s.count(5), 3);
    assert_eq!(s.count(0), 0, "prompt tokens are not counted");
}

#[test]
fn min_tokens_masks_eos_and_stop_ids_until_reached() {
    let p = SamplingParams { min_tokens: 2, stop_token_ids: vec![3], max_tokens: 5, ..Default::default() };
    let mut s = SequenceSampler::new(&p, &[], &[0]).unwrap();
    let row = [9.0, 1.0, 2.0, 8.0];
    assert_eq!(s.support(&row), vec![2]);
    let mut r = row.to_vec();
    assert_eq!(s.sample(&mut r).id, 2);
    assert_eq!(r, vec![f32::NEG_INFINITY, 1.0, 2.0, f32::NEG_INFINITY]);
    assert_eq!(s.sample(&mut row.to_vec()).id, 2);
    assert_eq!(s.sample(&mut row.to_vec()).id, 0, "min_tokens reached: eos allowed");
    // ignore_eos leaves eos unmasked (it does not stop anyway).
    let p = SamplingParams { ignore_eos: true, ..p };
    assert_eq!(SequenceSampler::new(&p, &[], &[0]).unwrap().support(&row), vec![0]);
}
