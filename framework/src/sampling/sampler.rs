//! `Sampler`: a stateless-per-token picker for callers that keep no token history: one
//! random stream, and temperature / top-k / top-p / min-p over a row of logits. Penalties,
//! min_tokens and log-probabilities need the history: use [`super::SequenceSampler`].

use super::processors::{self, Candidate};
use super::SamplingParams;
use rand::{rngs::StdRng, Rng, SeedableRng};

pub use super::processors::argmax;

/// A random stream plus scratch space; one per sequence.
pub struct Sampler {
    rng: StdRng,
    scratch: Vec<Candidate>,
}

impl Sampler {
    /// A stream seeded with `seed` (None = from entropy).
    pub fn new(seed: Option<u64>) -> Sampler {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Sampler { rng, scratch: Vec::new() }
    }

    /// Picks a token from `logits` (one vocabulary row). Penalties are not applied here.
    pub fn sample(&mut self, logits: &[f32], p: &SamplingParams) -> u32 {
        processors::filter_candidates(logits, p, &mut self.scratch);
        match self.scratch.len() {
            0 => argmax(logits),
            1 => self.scratch[0].id,
            _ => {
                let u: f64 = self.rng.gen();
                processors::draw(&self.scratch, u).unwrap_or(self.scratch[0].id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_max() {
        let mut s = Sampler::new(Some(1));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &SamplingParams::greedy(1)), 1);
        assert_eq!(s.sample(&[f32::NAN, 3.0, 3.0], &SamplingParams::greedy(1)), 1, "ties go to the lower id");
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
