//! Tests of the CPU `sample` provider: greedy rules, the threshold select against brute force,
//! the kept set, seeded reproducibility, and the empirical distribution over many seeds.

use super::*;
use crate::testutil::{rand_f32, run, Buf};

fn params(temperature: f32, top_k: i32, top_p: f32, seed: i64) -> RowParams {
    RowParams { temperature, top_k, top_p, seed }
}

/// The threshold by brute force: the largest w_j whose count/mass predicate holds.
fn brute_threshold(w: &[f32], k: Option<usize>, target: Option<f64>) -> f32 {
    if k.is_none() && target.is_none() {
        return 0.0;
    }
    let mut vals: Vec<f32> = w.to_vec();
    vals.sort_by(|a, b| b.total_cmp(a));
    vals.dedup();
    for v in vals {
        let count = w.iter().filter(|&&x| x >= v).count();
        let mass: f64 = w.iter().filter(|&&x| x >= v).map(|&x| x as f64).sum();
        if k.is_some_and(|k| count >= k) || target.is_some_and(|t| mass >= t) {
            return v;
        }
    }
    0.0
}

/// The kept set and its probabilities (f64), as the op's rules define them.
fn kept_distribution(logits: &[f32], p: RowParams) -> Vec<(usize, f64)> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f32> =
        logits.iter().map(|&l| if l.is_finite() { ((l - m) / p.temperature).exp() } else { 0.0 }).collect();
    let k = (p.top_k > 0 && (p.top_k as usize) < w.len()).then_some(p.top_k as usize);
    let target = (p.top_p < 1.0).then(|| p.top_p as f64 * w.iter().map(|&x| x as f64).sum::<f64>());
    let t = brute_threshold(&w, k, target);
    let kept: Vec<(usize, f64)> =
        w.iter().enumerate().filter(|(_, &x)| x >= t && x > 0.0).map(|(i, &x)| (i, x as f64)).collect();
    let total: f64 = kept.iter().map(|k| k.1).sum();
    kept.into_iter().map(|(i, x)| (i, x / total)).collect()
}

#[test]
fn threshold_by_hand_and_against_brute_force() {
    let w = [0.5f32, 1.0, 0.25, 1.0, 0.125];
    assert_eq!(threshold(&w, Some(2), None), 1.0);
    assert_eq!(threshold(&w, Some(3), None), 0.5, "ties at 1.0 count twice");
    assert_eq!(threshold(&w, None, Some(2.0)), 1.0);
    assert_eq!(threshold(&w, None, Some(2.1)), 0.5);
    assert_eq!(threshold(&w, Some(3), Some(2.0)), 1.0, "the larger threshold wins");
    assert_eq!(threshold(&w, None, None), 0.0);
    for seed in 0..200u64 {
        let n = 1 + (seed as usize * 37) % 300;
        // Weights in (0, 1] with many ties (quantized) and some zeros.
        let w: Vec<f32> = rand_f32(n, seed)
            .iter()
            .map(|&r| if r < -0.8 { 0.0 } else { ((r * 8.0).round() / 8.0 - 1.0).exp() })
            .collect();
        let total: f64 = w.iter().map(|&x| x as f64).sum();
        let k = (seed % 3 != 0).then_some(1 + (seed as usize) % n);
        let target = (seed % 2 == 0).then_some(total * (seed % 10) as f64 / 10.0);
        assert_eq!(threshold(&w, k, target), brute_threshold(&w, k, target), "seed {seed}: k {k:?} target {target:?}");
    }
}

#[test]
fn greedy_rows_are_the_argmax() {
    let mut w = Vec::new();
    for seed in 0..50u64 {
        let logits = rand_f32(257, seed);
        let want = argmax_row(&logits);
        for temp in [0.0, -1.0, f32::NAN] {
            assert_eq!(sample_row(&logits, params(temp, 0, 1.0, seed as i64), &mut w), want);
        }
        for temp in [0.1, 1.0, 7.0] {
            assert_eq!(sample_row(&logits, params(temp, 1, 1.0, seed as i64), &mut w), want, "top_k 1");
        }
    }
    assert_eq!(sample_row(&[f32::NAN, f32::NAN], params(1.0, 0, 1.0, 3), &mut w), 0);
    assert_eq!(sample_row(&[1.0, f32::INFINITY, 2.0], params(1.0, 0, 1.0, 3), &mut w), 1);
    assert_eq!(sample_row(&[f32::NEG_INFINITY; 4], params(1.0, 0, 1.0, 3), &mut w), 0);
}

#[test]
fn draws_stay_in_the_kept_set_and_follow_its_distribution() {
    let logits = [2.0f32, 1.5, f32::NAN, 1.0, 0.5, 0.0, -0.5, f32::NEG_INFINITY, -1.0, -3.0];
    let mut w = Vec::new();
    for p in [params(0.8, 6, 0.9, 0), params(1.0, 0, 0.7, 0), params(1.3, 4, 1.0, 0), params(2.0, 0, 1.0, 0)] {
        let dist = kept_distribution(&logits, p);
        let n = 40_000usize;
        let mut counts = vec![0usize; logits.len()];
        for seed in 0..n as i64 {
            counts[sample_row(&logits, RowParams { seed, ..p }, &mut w)] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            assert!(c == 0 || dist.iter().any(|d| d.0 == i), "{p:?}: token {i} is outside the kept set");
        }
        // Pearson's chi-square over the kept tokens (at most 7 degrees of freedom here; the
        // 99.99% quantile of chi2(7) is about 29).
        let chi2: f64 = dist
            .iter()
            .map(|&(i, q)| {
                let e = q * n as f64;
                (counts[i] as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 29.0, "{p:?}: chi-square {chi2} for {} kept tokens, counts {counts:?}", dist.len());
    }
}

#[test]
fn ties_at_the_threshold_are_kept_and_seeds_reproduce() {
    let logits = [3.0f32, 2.0, 2.0, 2.0, -1.0];
    let mut w = Vec::new();
    let p = params(1.0, 2, 1.0, 0);
    let draws: Vec<usize> = (0..2000).map(|s| sample_row(&logits, RowParams { seed: s, ..p }, &mut w)).collect();
    for tok in 0..4 {
        assert!(draws.contains(&tok), "token {tok} tied at the top-2 threshold is kept");
    }
    assert!(!draws.contains(&4));
    let again: Vec<usize> = (0..2000).map(|s| sample_row(&logits, RowParams { seed: s, ..p }, &mut w)).collect();
    assert_eq!(draws, again, "same seed, same token");
    // top_p <= 0 keeps only the largest weights.
    assert_eq!(sample_row(&logits, params(1.0, 0, 0.0, 9), &mut w), 0);
}

#[test]
fn rows_through_the_kernel_match_the_row_sampler() {
    let (l, v) = (6usize, 3001usize);
    let logits: Vec<f32> = rand_f32(l * v, 5).iter().map(|x| x * 6.0).collect();
    let halves: Vec<half::bf16> = logits.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let temps = [0.0f32, 0.7, 1.0, 1.5, 1.0, 0.9];
    let top_k = [0i32, 0, 40, 5, 1, 0];
    let top_p = [1.0f32, 0.9, 1.0, 0.8, 1.0, 0.5];
    let seeds = [1i64, -7, 99, 1 << 40, 5, i64::MIN];
    let mut ins = [
        Buf::from_slice(&[l, v], &halves),
        Buf::from_slice(&[l], &temps),
        Buf::from_slice(&[l], &top_k),
        Buf::from_slice(&[l], &top_p),
        Buf::from_slice(&[l], &seeds),
    ];
    let got = run::<Sample>(&Attrs::new(), &mut ins).unwrap()[0].to_vec::<i32>();
    let mut w = Vec::new();
    for r in 0..l {
        let row: Vec<f32> = halves[r * v..(r + 1) * v].iter().map(|x| x.to_f32()).collect();
        let want = sample_row(&row, params(temps[r], top_k[r], top_p[r], seeds[r]), &mut w);
        assert_eq!(got[r] as usize, want, "row {r}");
    }
    assert_eq!(got[0] as usize, argmax_row(&halves[..v].iter().map(|x| x.to_f32()).collect::<Vec<_>>()));
}

#[test]
fn bad_launches_are_errors() {
    let mut ins = [
        Buf::from_slice(&[2, 3], &[0f32; 6]),
        Buf::from_slice(&[2], &[1f32; 2]),
        Buf::from_slice(&[2], &[0i32; 2]),
        Buf::from_slice(&[3], &[1f32; 3]),
        Buf::from_slice(&[2], &[0i64; 2]),
    ];
    let e = run::<Sample>(&Attrs::new(), &mut ins).unwrap_err();
    assert!(e.message().contains("top_p"), "{e}");
}
