//! Picks one token from a row of logits under `SamplingParams`, with a per-request RNG.

use super::SamplingParams;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Per-request sampling state (the random stream).
pub struct Sampler {
    rng: StdRng,
    scratch: Vec<(f32, u32)>,
}

/// Index of the largest finite logit (the first on ties).
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

impl Sampler {
    pub fn new(seed: Option<u64>) -> Sampler {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Sampler { rng, scratch: Vec::new() }
    }

    /// Picks a token from `logits` (one vocabulary row).
    pub fn sample(&mut self, logits: &[f32], p: &SamplingParams) -> u32 {
        if p.is_greedy() {
            return argmax(logits);
        }
        let cand = &mut self.scratch;
        cand.clear();
        cand.extend(logits.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (v / p.temperature, i as u32)));
        if cand.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit_desc);
        let max = cand[0].0;
        let mut total = 0.0f64;
        for c in cand.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0 as f64;
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0f64;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += c.0 as f64 / total;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
            total = cand.iter().map(|c| c.0 as f64).sum();
        }
        let mut r = self.rng.gen::<f64>() * total;
        for c in cand.iter() {
            r -= c.0 as f64;
            if r <= 0.0 {
                return c.1;
            }
        }
        cand[cand.len() - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_max() {
        let mut s = Sampler::new(Some(1));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &SamplingParams::greedy(1)), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let logits = [5.0, 4.9, 1.0, 0.5, -2.0];
        let p = SamplingParams { temperature: 1.0, top_k: 2, ..Default::default() };
        let mut s = Sampler::new(Some(7));
        for _ in 0..200 {
            assert!(s.sample(&logits, &p) < 2);
        }
        // probs ≈ [0.51, 0.46, 0.01, ...]: top_p 0.5 keeps only the first.
        let p = SamplingParams { temperature: 1.0, top_p: 0.5, ..Default::default() };
        for _ in 0..200 {
            assert_eq!(s.sample(&logits, &p), 0);
        }
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams { temperature: 1.0, ..Default::default() };
        let draw = |seed| {
            let mut s = Sampler::new(Some(seed));
            (0..32).map(|_| s.sample(&logits, &p)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
