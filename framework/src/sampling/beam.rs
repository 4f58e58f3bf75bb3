//! Beam search, model-agnostic and pure: [`BeamSearch::step`] takes the running beams'
//! next-token log-probability rows and returns the next beams, each naming its parent beam so
//! the executor can fork KV-cache blocks. It follows Hugging Face's `num_beams` search: the
//! best `max(2, 1 + #eos) × W` continuations are ranked; an end-of-sequence continuation
//! ranked within the first W becomes a finished hypothesis (scored
//! `cum_logprob / len^length_penalty`, len counting generated tokens including the eos), the
//! rest fill the W running beams; at most W finished hypotheses are kept; early stopping as
//! [`EarlyStopping`] says; at `max_tokens` the running beams join the finished ones.
//! [`beam_search`] drives a whole search over a logits function (tests, reference).

use super::params::EarlyStopping;
use super::processors::log_softmax_in_place;
use super::SamplingParams;
use std::cmp::Ordering;

/// A running beam: the tokens generated so far and the sum of their log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct Beam {
    pub tokens: Vec<u32>,
    pub cum_logprob: f64,
}

/// A finished sequence (ending in eos, or cut at max_tokens) and its length-penalised score.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    pub tokens: Vec<u32>,
    pub cum_logprob: f64,
    pub score: f64,
}

/// Next beam `i` continues beam `parent` of the previous step with `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeamChild {
    pub parent: usize,
    pub token: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BeamConfig {
    pub beam_width: usize,
    pub max_tokens: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// Ids that finish a beam (eos unless ignore_eos, plus stop_token_ids).
    pub eos_ids: Vec<u32>,
}

impl BeamConfig {
    /// The beam settings of `params` with the model's `eos_ids`.
    pub fn from_params(params: &SamplingParams, eos_ids: &[u32]) -> BeamConfig {
        let mut ids = params.stop_token_ids.clone();
        if !params.ignore_eos {
            ids.extend_from_slice(eos_ids);
        }
        BeamConfig {
            beam_width: params.beam_width,
            max_tokens: params.max_tokens,
            length_penalty: params.length_penalty,
            early_stopping: params.early_stopping,
            eos_ids: ids,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BeamError {
    #[error("beam search needs beam_width >= 1 and max_tokens >= 1 (got {beam_width} and {max_tokens})")]
    Config { beam_width: usize, max_tokens: usize },
    #[error("beam step got {got} log-probability rows for {beams} running beams")]
    RowCount { got: usize, beams: usize },
    #[error("beam step: row {row} has {got} entries, row 0 has {expected}")]
    RowWidth { row: usize, got: usize, expected: usize },
    #[error("beam search already finished")]
    Finished,
}

/// The state of one request's beam search.
#[derive(Clone, Debug)]
pub struct BeamSearch {
    config: BeamConfig,
    beams: Vec<Beam>,
    finished: Vec<Hypothesis>,
    done: bool,
}

#[derive(Clone, Copy)]
struct Cand {
    score: f64,
    beam: usize,
    token: u32,
}

fn by_score_desc(a: &Cand, b: &Cand) -> Ordering {
    b.score.total_cmp(&a.score).then(a.beam.cmp(&b.beam)).then(a.token.cmp(&b.token))
}

impl BeamSearch {
    /// A search starting from one empty beam (the prompt's continuation).
    pub fn new(config: BeamConfig) -> Result<BeamSearch, BeamError> {
        if config.beam_width == 0 || config.max_tokens == 0 {
            return Err(BeamError::Config { beam_width: config.beam_width, max_tokens: config.max_tokens });
        }
        Ok(BeamSearch {
            config,
            beams: vec![Beam { tokens: Vec::new(), cum_logprob: 0.0 }],
            finished: Vec::new(),
            done: false,
        })
    }

    /// The running beams; `step` wants one log-probability row per beam, in this order.
    pub fn beams(&self) -> &[Beam] {
        &self.beams
    }

    /// Whether the search is over (call [`BeamSearch::finalize`]).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn score(&self, cum_logprob: f64, len: usize) -> f64 {
        cum_logprob / (len as f64).powf(self.config.length_penalty as f64)
    }

    fn add_hypothesis(&mut self, tokens: Vec<u32>, cum_logprob: f64) {
        let score = self.score(cum_logprob, tokens.len());
        let w = self.config.beam_width;
        if self.finished.len() >= w && self.worst_finished().is_some_and(|worst| score <= worst) {
            return;
        }
        self.finished.push(Hypothesis { tokens, cum_logprob, score });
        if self.finished.len() > w {
            if let Some(i) =
                (0..self.finished.len()).min_by(|&a, &b| self.finished[a].score.total_cmp(&self.finished[b].score))
            {
                self.finished.remove(i);
            }
        }
    }

    fn worst_finished(&self) -> Option<f64> {
        self.finished.iter().map(|h| h.score).min_by(f64::total_cmp)
    }

    /// Advances every running beam by one token. `rows[i]` holds beam i's next-token
    /// log-probabilities (log-softmax of its processed logits). Returns the new beams' parents
    /// and tokens, in the order of the new [`BeamSearch::beams`] (empty when the search ended).
    pub fn step(&mut self, rows: &[&[f32]]) -> Result<Vec<BeamChild>, BeamError> {
        if self.done {
            return Err(BeamError::Finished);
        }
        if rows.len() != self.beams.len() {
            return Err(BeamError::RowCount { got: rows.len(), beams: self.beams.len() });
        }
        let width = rows.first().map_or(0, |r| r.len());
        if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            return Err(BeamError::RowWidth { row, got: r.len(), expected: width });
        }
        let w = self.config.beam_width;
        let mut cands: Vec<Cand> = Vec::with_capacity(rows.len() * width);
        for (beam, row) in rows.iter().enumerate() {
            let base = self.beams[beam].cum_logprob;
            cands.extend(row.iter().enumerate().filter(|(_, lp)| lp.is_finite()).map(|(t, &lp)| Cand {
                score: base + lp as f64,
                beam,
                token: t as u32,
            }));
        }
        let top = (2usize.max(1 + self.config.eos_ids.len())).saturating_mul(w);
        if top < cands.len() {
            cands.select_nth_unstable_by(top - 1, by_score_desc);
            cands.truncate(top);
        }
        cands.sort_unstable_by(by_score_desc);
        let mut next = Vec::with_capacity(w);
        let mut children = Vec::with_capacity(w);
        for (rank, c) in cands.iter().enumerate() {
            if next.len() == w {
                break;
            }
            let mut tokens = self.beams[c.beam].tokens.clone();
            tokens.push(c.token);
            if self.config.eos_ids.contains(&c.token) {
                if rank < w {
                    self.add_hypothesis(tokens, c.score);
                }
            } else {
                next.push(Beam { tokens, cum_logprob: c.score });
                children.push(BeamChild { parent: c.beam, token: c.token });
            }
        }
        self.beams = next;
        let cur_len = self.beams.first().map_or(0, |b| b.tokens.len());
        if self.beams.is_empty() || self.finished_early(cur_len) {
            self.beams.clear();
            self.done = true;
            return Ok(Vec::new());
        }
        if cur_len >= self.config.max_tokens {
            for b in std::mem::take(&mut self.beams) {
                self.add_hypothesis(b.tokens, b.cum_logprob);
            }
            self.done = true;
            return Ok(Vec::new());
        }
        Ok(children)
    }

    /// HF's `BeamHypotheses.is_done` for the running beams at `cur_len` generated tokens.
    fn finished_early(&self, cur_len: usize) -> bool {
        if self.finished.len() < self.config.beam_width {
            return false;
        }
        let (Some(worst), Some(best_running)) =
            (self.worst_finished(), self.beams.iter().map(|b| b.cum_logprob).max_by(f64::total_cmp))
        else {
            return true;
        };
        let lp = self.config.length_penalty;
        let highest = match self.config.early_stopping {
            EarlyStopping::Eager => return true,
            EarlyStopping::Heuristic => self.score(best_running, cur_len),
            EarlyStopping::Never if lp > 0.0 => self.score(best_running, self.config.max_tokens),
            EarlyStopping::Never => self.score(best_running, cur_len),
        };
        worst >= highest
    }

    /// The finished hypotheses, best first (ties keep their finishing order). Running beams,
    /// if any (the search was cut short), join them first.
    pub fn finalize(mut self) -> Vec<Hypothesis> {
        for b in std::mem::take(&mut self.beams) {
            if !b.tokens.is_empty() {
                self.add_hypothesis(b.tokens, b.cum_logprob);
            }
        }
        self.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        self.finished
    }
}

/// Runs a whole beam search: `logits_fn(prompt + generated)` gives the next-token logits of a
/// sequence (log-softmax is applied here). Returns the hypotheses, best first.
pub fn beam_search(
    prompt: &[u32],
    mut logits_fn: impl FnMut(&[u32]) -> Vec<f32>,
    config: &BeamConfig,
) -> Result<Vec<Hypothesis>, BeamError> {
    let mut search = BeamSearch::new(config.clone())?;
    let mut history = prompt.to_vec();
    while !search.is_done() {
        let rows: Vec<Vec<f32>> = search
            .beams()
            .iter()
            .map(|b| {
                history.truncate(prompt.len());
                history.extend_from_slice(&b.tokens);
                let mut row = logits_fn(&history);
                log_softmax_in_place(&mut row);
                row
            })
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        search.step(&refs)?;
    }
    Ok(search.finalize())
}

#[cfg(test)]
#[path = "beam_tests.rs"]
mod tests;
