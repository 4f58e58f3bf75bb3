//! Per-sequence sampling state: the sequence's own random stream (seeded per request and
//! output index, so results do not depend on how sequences are batched), the token history the
//! penalties need, and the cumulative log-probability.
//!
//! Log-probabilities are those of the *raw* model distribution — the log-softmax of the logits
//! as the model produced them, before penalties, masks, temperature or top-k/p — as OpenAI and
//! vLLM (its default `raw_logprobs` mode) report them.

use super::processors::{self, Candidate};
use super::{SamplingError, SamplingParams};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    pub id: u32,
    /// Log-probability of `id` under the raw logits.
    pub logprob: f32,
    /// The `params.logprobs` most likely tokens under the raw logits, most likely first (ties
    /// by lower id); empty when `logprobs` is None.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// splitmix64: a well-mixed 64-bit seed for output `index` of a request seeded `seed`.
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sampling state of one output sequence of one request.
#[derive(Clone, Debug)]
pub struct SequenceSampler {
    params: SamplingParams,
    rng: StdRng,
    /// Distinct ids of prompt + generated tokens (repetition penalty), and their set.
    seen: Vec<u32>,
    seen_set: HashSet<u32>,
    /// Generated-token counts (presence/frequency penalties) and each id's slot in `counts`.
    counts: Vec<(u32, u32)>,
    count_slot: HashMap<u32, usize>,
    /// Ids masked until `min_tokens` were generated: eos (unless ignore_eos) and stop ids.
    min_tokens_mask: Vec<u32>,
    generated: usize,
    cumulative_logprob: f64,
    raw: Vec<f32>,
    candidates: Vec<Candidate>,
}

impl SequenceSampler {
    /// State for the first (or only) output of a request; `eos_ids` are the model's
    /// end-of-sequence ids. Validates `params`.
    pub fn new(params: &SamplingParams, prompt: &[u32], eos_ids: &[u32]) -> Result<Self, SamplingError> {
        SequenceSampler::for_output(params, prompt, eos_ids, 0)
    }

    /// State for output `output_index` of a request (n > 1, best_of): each index has its own
    /// random stream derived from the request seed, so the outputs differ and reproduce.
    pub fn for_output(
        params: &SamplingParams,
        prompt: &[u32],
        eos_ids: &[u32],
        output_index: usize,
    ) -> Result<Self, SamplingError> {
        params.validate()?;
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(derive_seed(s, output_index as u64)),
            None => StdRng::from_entropy(),
        };
        let mut seen = Vec::new();
        let mut seen_set = HashSet::new();
        if params.repetition_penalty != 1.0 {
            for &id in prompt {
                if seen_set.insert(id) {
                    seen.push(id);
                }
            }
        }
        let mut min_tokens_mask = params.stop_token_ids.clone();
        if !params.ignore_eos {
            min_tokens_mask.extend_from_slice(eos_ids);
        }
        Ok(SequenceSampler {
            params: params.clone(),
            rng,
            seen,
            seen_set,
            counts: Vec::new(),
            count_slot: HashMap::new(),
            min_tokens_mask,
            generated: 0,
            cumulative_logprob: 0.0,
            raw: Vec::new(),
            candidates: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Tokens sampled so far.
    pub fn num_generated(&self) -> usize {
        self.generated
    }

    /// Sum of the raw log-probabilities of the tokens sampled so far.
    pub fn cumulative_logprob(&self) -> f64 {
        self.cumulative_logprob
    }

    /// How often `id` was generated so far.
    pub fn count(&self, id: u32) -> u32 {
        self.count_slot.get(&id).map_or(0, |&slot| self.counts[slot].1)
    }

    /// The in-place stage: repetition, presence and frequency penalties, then the min_tokens
    /// mask, as the next `sample` would apply them.
    pub fn process(&self, logits: &mut [f32]) {
        let p = &self.params;
        processors::apply_repetition_penalty(logits, &self.seen, p.repetition_penalty);
        processors::apply_presence_frequency_penalties(logits, &self.counts, p.presence_penalty, p.frequency_penalty);
        if self.generated < p.min_tokens {
            processors::mask_tokens(logits, &self.min_tokens_mask);
        }
    }

    /// The ids the next `sample` could return for `logits`, ascending.
    pub fn support(&self, logits: &[f32]) -> Vec<u32> {
        let mut row = logits.to_vec();
        self.process(&mut row);
        processors::support(&row, &self.params)
    }

    /// Picks the next token from one row of raw logits and records it. `logits` is left
    /// penalised and masked (the stage [`SequenceSampler::process`] applies). If no logit is
    /// finite after masking, the raw argmax is returned.
    pub fn sample(&mut self, logits: &mut [f32]) -> SampledToken {
        let lse = processors::log_sum_exp(logits);
        let logprob_of = |v: f32| {
            if v.is_finite() {
                (v as f64 - lse) as f32
            } else {
                f32::NEG_INFINITY
            }
        };
        let top_logprobs = match self.params.logprobs {
            Some(n) if n > 0 => processors::top_n(logits, n, &mut self.candidates)
                .into_iter()
                .map(|(id, v)| (id, logprob_of(v)))
                .collect(),
            _ => Vec::new(),
        };
        let modifies = self.params.has_penalties() || self.generated < self.params.min_tokens;
        if modifies {
            self.raw.clear();
            self.raw.extend_from_slice(logits);
            self.process(logits);
        }
        processors::filter_candidates(logits, &self.params, &mut self.candidates);
        let id = match self.candidates.len() {
            0 => processors::argmax(if modifies { &self.raw } else { logits }),
            1 => self.candidates[0].id,
            _ => {
                let u: f64 = self.rng.gen();
                processors::draw(&self.candidates, u).unwrap_or(self.candidates[0].id)
            }
        };
        let raw = if modifies { &self.raw[..] } else { &logits[..] };
        let logprob = raw.get(id as usize).map_or(f32::NEG_INFINITY, |&v| logprob_of(v));
        self.record(id, logprob);
        SampledToken { id, logprob, top_logprobs }
    }

    /// Parameters for picking the next token on the device (the engine's `sample` kernel), or
    /// None when this sequence needs what only the host sampler does: penalties, the
    /// min_tokens mask, min_p, or log-probabilities.
    pub fn device_eligible(&self) -> bool {
        let p = &self.params;
        !p.has_penalties() && self.generated >= p.min_tokens && p.min_p == 0.0 && p.logprobs.is_none()
    }

    /// The next token's device-sampling parameters (call only when `device_eligible`); draws
    /// the row's seed from this sequence's random stream, so seeded requests reproduce.
    pub fn device_params(&mut self) -> crate::engine::RowSampling {
        let p = &self.params;
        if p.is_greedy() {
            return crate::engine::RowSampling::greedy();
        }
        crate::engine::RowSampling {
            temperature: p.temperature,
            top_k: p.top_k.min(i32::MAX as usize) as i32,
            top_p: p.top_p,
            seed: self.rng.gen(),
        }
    }

    /// Records a token the device sampled. Its log-probability is not known on the host (the
    /// device path only runs for requests that asked for none): it reads NaN and the
    /// cumulative log-probability leaves it out.
    pub fn record_device_sample(&mut self, id: u32) -> SampledToken {
        let cumulative = self.cumulative_logprob;
        self.record(id, 0.0);
        self.cumulative_logprob = cumulative;
        SampledToken { id, logprob: f32::NAN, top_logprobs: Vec::new() }
    }

    fn record(&mut self, id: u32, logprob: f32) {
        self.generated += 1;
        self.cumulative_logprob += logprob as f64;
        if self.params.repetition_penalty != 1.0 && self.seen_set.insert(id) {
            self.seen.push(id);
        }
        match self.count_slot.get(&id) {
            Some(&slot) => self.counts[slot].1 += 1,
            None => {
                self.count_slot.insert(id, self.counts.len());
                self.counts.push((id, 1));
            }
        }
    }
}

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
