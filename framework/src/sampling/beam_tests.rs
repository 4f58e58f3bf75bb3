//! Beam search against brute force over the full tree of a tiny deterministic "model", and
//! width 1 against greedy decoding.

use super::*;
use crate::sampling::processors::{argmax, log_softmax_in_place};

const VOCAB: usize = 5;
const EOS: u32 = 4;

/// Next-token logits as a deterministic function of the whole history.
fn model(history: &[u32]) -> Vec<f32> {
    model_with_eos_bias(history, -0.8)
}

fn model_with_eos_bias(history: &[u32], eos_bias: f32) -> Vec<f32> {
    let h = history.iter().fold(17u64, |acc, &t| acc.wrapping_mul(31).wrapping_add(t as u64 + 1));
    (0..VOCAB)
        .map(|v| {
            let x = h.wrapping_mul(2654435761).wrapping_add(v as u64 * 40503) % 1000;
            x as f32 / 250.0 + if v as u32 == EOS { eos_bias } else { 0.0 }
        })
        .collect()
}

fn logprobs(history: &[u32]) -> Vec<f32> {
    let mut row = model(history);
    log_softmax_in_place(&mut row);
    row
}

/// Every leaf of the tree (ends in eos or has max_tokens tokens) with its score, best first.
fn brute_force(prompt: &[u32], config: &BeamConfig) -> Vec<Hypothesis> {
    fn walk(prompt: &[u32], gen: &mut Vec<u32>, cum: f64, config: &BeamConfig, out: &mut Vec<Hypothesis>) {
        let mut hist = prompt.to_vec();
        hist.extend_from_slice(gen);
        let row = logprobs(&hist);
        for (t, &lp) in row.iter().enumerate() {
            gen.push(t as u32);
            let c = cum + lp as f64;
            if config.eos_ids.contains(&(t as u32)) || gen.len() == config.max_tokens {
                let score = c / (gen.len() as f64).powf(config.length_penalty as f64);
                out.push(Hypothesis { tokens: gen.clone(), cum_logprob: c, score });
            } else {
                walk(prompt, gen, c, config, out);
            }
            gen.pop();
        }
    }
    let mut out = Vec::new();
    walk(prompt, &mut Vec::new(), 0.0, config, &mut out);
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

fn config(beam_width: usize, max_tokens: usize, length_penalty: f32, early_stopping: EarlyStopping) -> BeamConfig {
    BeamConfig { beam_width, max_tokens, length_penalty, early_stopping, eos_ids: vec![EOS] }
}

#[test]
fn wide_beam_search_equals_brute_force() {
    for prompt in [vec![1u32], vec![2, 3], vec![0, 0, 1]] {
        for lp in [1.0f32, 0.0, 2.0, -0.5] {
            let cfg = config(VOCAB.pow(4), 4, lp, EarlyStopping::Never);
            let beams = beam_search(&prompt, model, &cfg).unwrap();
            let brute = brute_force(&prompt, &cfg);
            assert_eq!(beams.len(), brute.len(), "every leaf is a hypothesis");
            for (b, w) in beams.iter().zip(&brute).take(8) {
                assert!((b.score - w.score).abs() < 1e-9, "prompt {prompt:?} lp {lp}: {b:?} vs {w:?}");
                assert!((b.cum_logprob - w.cum_logprob).abs() < 1e-9);
            }
            assert_eq!(beams[0].tokens, brute[0].tokens, "prompt {prompt:?} lp {lp}");
        }
    }
}

#[test]
fn narrow_search_returns_width_hypotheses_sorted_and_bounded_by_the_best() {
    // A narrow search returns W hypotheses sorted by score, none better than the true best.
    let cfg = config(8, 4, 1.0, EarlyStopping::Never);
    let beams = beam_search(&[1], model, &cfg).unwrap();
    assert_eq!(beams.len(), 8);
    assert!(beams.windows(2).all(|w| w[0].score >= w[1].score));
    let brute = brute_force(&[1], &cfg);
    assert!(beams[0].score <= brute[0].score + 1e-12);
}

fn eager_eos_model(history: &[u32]) -> Vec<f32> {
    model_with_eos_bias(history, 0.6)
}

fn greedy(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut hist = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_tokens {
        let t = argmax(&eager_eos_model(&hist));
        out.push(t);
        hist.push(t);
        if t == EOS {
            break;
        }
    }
    out
}

#[test]
fn width_one_equals_greedy() {
    let mut ended_by_eos = 0;
    for seed in 0..40u32 {
        let prompt = vec![seed % 4, seed / 4 % 4, seed / 16];
        let beams = beam_search(&prompt, eager_eos_model, &config(1, 6, 1.0, EarlyStopping::Heuristic)).unwrap();
        let want = greedy(&prompt, 6);
        ended_by_eos += usize::from(want.last() == Some(&EOS));
        assert_eq!(beams[0].tokens, want, "prompt {prompt:?}");
    }
    assert!(ended_by_eos > 0, "some greedy paths end in eos");
}

#[test]
fn steps_report_parents_and_reject_bad_rows() {
    let mut s = BeamSearch::new(config(3, 3, 1.0, EarlyStopping::Heuristic)).unwrap();
    let r0 = [-0.1f32, -1.0, -2.0, -3.0, -5.0];
    let children = s.step(&[&r0]).unwrap();
    assert_eq!(
        children,
        vec![BeamChild { parent: 0, token: 0 }, BeamChild { parent: 0, token: 1 }, BeamChild { parent: 0, token: 2 }]
    );
    // Beam 1 (cum -1) has a near-certain continuation; beam 0 a spread one.
    let spread = [-1.5f32, -1.6, -1.7, -9.0, -9.0];
    let sure = [-0.01f32, -6.0, -6.0, -6.0, -9.0];
    let flat = [-1.6f32; 5];
    assert_eq!(s.step(&[&spread]), Err(BeamError::RowCount { got: 1, beams: 3 }));
    assert_eq!(s.step(&[&spread, &sure, &r0[..3]]), Err(BeamError::RowWidth { row: 2, got: 3, expected: 5 }));
    let children = s.step(&[&spread, &sure, &flat]).unwrap();
    // Scores: b1+0 = -1.01, b0+0 = -1.6, b0+1 = -1.7, b0+2 = -1.8.
    assert_eq!(
        children,
        vec![BeamChild { parent: 1, token: 0 }, BeamChild { parent: 0, token: 0 }, BeamChild { parent: 0, token: 1 }]
    );
    assert_eq!(s.beams()[0].tokens, vec![1, 0]);
    assert!(s.step(&[&r0, &r0, &r0]).unwrap().is_empty(), "max_tokens reached");
    assert!(s.is_done());
    assert_eq!(s.step(&[&r0]), Err(BeamError::Finished));
    let hyps = s.finalize();
    assert_eq!(hyps.len(), 3);
    assert_eq!(hyps[0].tokens, vec![1, 0, 0]);
    assert!(BeamSearch::new(config(0, 3, 1.0, EarlyStopping::Heuristic)).is_err());
}

#[test]
fn eager_early_stopping_ends_once_width_hypotheses_finished() {
    // Eos is always the best continuation: W = 2 hypotheses finish in the first two steps.
    let eos_first = |_: &[u32]| vec![0.0f32, 0.0, 0.0, 0.0, 3.0];
    let hyps = beam_search(&[0], eos_first, &config(2, 10, 1.0, EarlyStopping::Eager)).unwrap();
    assert_eq!(hyps.len(), 2);
    assert!(hyps.iter().all(|h| h.tokens.len() <= 2 && h.tokens.last() == Some(&EOS)));
}
