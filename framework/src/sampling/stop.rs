//! Stop handling for one output sequence: end-of-sequence ids (unless `ignore_eos`),
//! `stop_token_ids`, stop strings matched in the detokenized text across token boundaries, and
//! `max_tokens`; and [`FinishReason`], why a sequence ended, the one type the executor, the API
//! and the server report. Produces the streaming text deltas: text that could still turn out
//! to be the start of a stop string is held back, so the deltas never contain text later
//! trimmed, and they concatenate to exactly the final text. The executor runs one checker per
//! output sequence, so a stop string ends the sequence (and frees its KV blocks) in the step
//! that completed it.
//!
//! Semantics (vLLM's): nothing stops before `min_tokens` tokens were generated (a stop string
//! counts only if it ends in text produced by the `min_tokens`-th token or later); the text of
//! a stop or eos token is not part of the output; a stop string and anything after it is
//! trimmed (kept, and the rest trimmed, with `include_stop_str_in_output`). When several stop
//! strings match, the one that starts first wins (then the one listed first).

use super::SamplingParams;
use crate::tokenizer::{DecodeStream, Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What stopped a sequence that did not run into `max_tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// The model's end-of-sequence token.
    Eos(u32),
    /// One of `stop_token_ids`.
    StopTokenId(u32),
    /// One of `stop`.
    StopString(String),
}

/// Why a sequence finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token id or a stop string.
    Stop(StopKind),
    /// `max_tokens` were generated (or the sequence reached max_seq_len).
    Length,
    /// The request was stopped before it finished: cancelled by its client, or the executor
    /// shut down.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason`: "stop" (eos, stop ids, stop strings), "length", or vLLM's
    /// "abort" for a cancelled request.
    pub fn as_openai_str(&self) -> &'static str {
        match self {
            FinishReason::Stop(_) => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "abort",
        }
    }

    /// Whether this is a `Stop` (not a length limit or a cancellation).
    pub fn is_stop(&self) -> bool {
        matches!(self, FinishReason::Stop(_))
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinishReason::Stop(StopKind::Eos(id)) => write!(f, "stop (eos token {id})"),
            FinishReason::Stop(StopKind::StopTokenId(id)) => write!(f, "stop (stop token {id})"),
            FinishReason::Stop(StopKind::StopString(s)) => write!(f, "stop (stop string {s:?})"),
            FinishReason::Length => f.write_str("length"),
            FinishReason::Cancelled => f.write_str("cancelled"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("the sequence already finished ({0:?}); no more tokens can be added")]
    AlreadyFinished(FinishReason),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Stop-string matching and hold-back over a growing text (no tokenizer involved).
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    include_stop: bool,
    max_len: usize,
    /// All text so far (trimmed once a stop string matched).
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    /// A match must end after this byte offset (text before min_tokens cannot stop).
    floor: usize,
    matched: Option<usize>,
}

impl StopStrings {
    /// A matcher for `stops` (empty strings never match); `include_stop` keeps the matched
    /// stop string in the text.
    pub fn new(stops: &[String], include_stop: bool) -> StopStrings {
        let stops = stops.to_vec();
        let max_len = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        StopStrings { stops, include_stop, max_len, ..Default::default() }
    }

    /// All text so far: the final text once finished.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Index (in the given list) of the stop string that matched, if one did.
    pub fn matched(&self) -> Option<usize> {
        self.matched
    }

    /// Appends `delta` and returns the text now safe to emit, and the index of a stop string
    /// that matched (the text is then final). With `can_stop` false, matches ending in this
    /// delta do not count. After a match, further pushes are ignored.
    pub fn push(&mut self, delta: &str, can_stop: bool) -> (String, Option<usize>) {
        if self.matched.is_some() {
            return (String::new(), self.matched);
        }
        self.text.push_str(delta);
        if !can_stop {
            self.floor = self.text.len();
        }
        if let Some((start, idx)) = self.find_match() {
            let end = if self.include_stop { start + self.stops[idx].len() } else { start };
            self.text.truncate(end);
            self.matched = Some(idx);
            return (self.take_until(end), Some(idx));
        }
        let hold = self.hold_point();
        (self.take_until(hold), None)
    }

    /// Releases the held text (generation ended without a stop string).
    pub fn flush(&mut self) -> String {
        self.take_until(self.text.len())
    }

    fn take_until(&mut self, end: usize) -> String {
        let end = end.max(self.emitted);
        let out = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        out
    }

    /// The earliest (start, stop index) match starting in the unemitted text and ending past
    /// the floor. Earlier starts cannot match: emitted text was no prefix of any stop string.
    fn find_match(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (idx, stop) in self.stops.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let mut from = self.emitted;
            while let Some(pos) = self.text[from..].find(stop.as_str()) {
                let start = from + pos;
                if start + stop.len() > self.floor {
                    if best.is_none_or(|(b, _)| start < b) {
                        best = Some((start, idx));
                    }
                    break;
                }
                from = start + self.text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        best
    }

    /// The first char boundary from which the rest of the text is a proper prefix of some stop
    /// string (that text must be held back); the text length if none.
    fn hold_point(&self) -> usize {
        let len = self.text.len();
        let lowest = self.emitted.max(len.saturating_sub(self.max_len.saturating_sub(1)));
        (lowest..len)
            .filter(|&j| self.text.is_char_boundary(j))
            .find(|&j| self.stops.iter().any(|s| s.starts_with(&self.text[j..])))
            .unwrap_or(len)
    }
}

/// What one generated token did to the output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StopUpdate {
    /// New text to stream (possibly empty).
    pub text_diff: String,
    /// Set when the sequence finished with this token.
    pub finish_reason: Option<FinishReason>,
}

/// Detokenizes one output sequence incrementally and decides when it stops. Without a
/// tokenizer it produces no text and checks only token ids and lengths (stop strings need the
/// text: `SamplingParams::stop` is then ignored, so callers refuse it).
#[derive(Clone, Debug)]
pub struct StopChecker {
    strings: StopStrings,
    /// The detokenizer and its tokenizer, when there is one.
    text: Option<(DecodeStream, Arc<Tokenizer>)>,
    stop_token_ids: Vec<u32>,
    eos_ids: Vec<u32>,
    max_tokens: usize,
    min_tokens: usize,
    generated: usize,
    finished: Option<FinishReason>,
}

impl StopChecker {
    /// A checker for `params` (its stop, stop_token_ids, ignore_eos, min/max_tokens,
    /// skip_special_tokens, include_stop_str_in_output) and the model's `eos_ids`; with no
    /// tokenizer, token ids and lengths only.
    pub fn new(params: &SamplingParams, eos_ids: &[u32], tok: Option<Arc<Tokenizer>>) -> StopChecker {
        let stops = if tok.is_some() { params.stop.as_slice() } else { &[] };
        StopChecker {
            strings: StopStrings::new(stops, params.include_stop_str_in_output),
            text: tok.map(|t| (t.decode_stream(params.skip_special_tokens), t)),
            stop_token_ids: params.stop_token_ids.clone(),
            eos_ids: if params.ignore_eos { Vec::new() } else { eos_ids.to_vec() },
            max_tokens: params.max_tokens,
            min_tokens: params.min_tokens,
            generated: 0,
            finished: None,
        }
    }

    /// The output text so far (final once finished).
    pub fn text(&self) -> &str {
        self.strings.text()
    }

    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finished.as_ref()
    }

    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// Adds the next generated token.
    pub fn step(&mut self, token: u32) -> Result<StopUpdate, StopError> {
        if let Some(reason) = &self.finished {
            return Err(StopError::AlreadyFinished(reason.clone()));
        }
        let can_stop = self.generated + 1 >= self.min_tokens;
        let token_stop = if !can_stop {
            None
        } else if self.stop_token_ids.contains(&token) {
            Some(StopKind::StopTokenId(token))
        } else if self.eos_ids.contains(&token) {
            Some(StopKind::Eos(token))
        } else {
            None
        };
        let mut text_diff = String::new();
        if token_stop.is_none() {
            let delta = match &mut self.text {
                Some((stream, tok)) => stream.step(tok, token)?.unwrap_or_default(),
                None => String::new(),
            };
            let (out, matched) = self.strings.push(&delta, can_stop);
            text_diff = out;
            if let Some(idx) = matched {
                return Ok(self.finish_with(text_diff, FinishReason::Stop(self.stop_string(idx))));
            }
        }
        self.generated += 1;
        let reason = match token_stop {
            Some(kind) => FinishReason::Stop(kind),
            None if self.generated >= self.max_tokens => FinishReason::Length,
            None => return Ok(StopUpdate { text_diff, finish_reason: None }),
        };
        let end = self.finish(reason);
        text_diff.push_str(&end.text_diff);
        Ok(StopUpdate { text_diff, finish_reason: end.finish_reason })
    }

    /// Ends the sequence with `reason` (from outside: cancelled, out of context, or a step
    /// that ended it): releases the held text. The decoder's held bytes may still complete a
    /// stop string (once `min_tokens` were generated): the text is then trimmed and the reason
    /// is that stop string. Finishing twice returns nothing new.
    pub fn finish(&mut self, reason: FinishReason) -> StopUpdate {
        if let Some(done) = &self.finished {
            return StopUpdate { text_diff: String::new(), finish_reason: Some(done.clone()) };
        }
        let tail = match &mut self.text {
            Some((stream, tok)) => stream.finish(tok).unwrap_or_default(),
            None => String::new(),
        };
        let can_stop = self.generated >= self.min_tokens;
        let (mut text_diff, matched) = self.strings.push(&tail, can_stop);
        let reason = match matched {
            Some(idx) => FinishReason::Stop(self.stop_string(idx)),
            None => {
                text_diff.push_str(&self.strings.flush());
                reason
            }
        };
        self.finish_with(text_diff, reason)
    }

    fn stop_string(&self, idx: usize) -> StopKind {
        StopKind::StopString(self.strings.stops[idx].clone())
    }

    fn finish_with(&mut self, text_diff: String, reason: FinishReason) -> StopUpdate {
        self.finished = Some(reason.clone());
        StopUpdate { text_diff, finish_reason: Some(reason) }
    }
}

#[cfg(test)]
#[path = "stop_tests.rs"]
mod tests;
