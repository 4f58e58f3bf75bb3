//! `SamplingParams` with TensorRT-LLM's field names (serde for the OpenAI server), and their
//! validation: every invalid value is a [`SamplingError`] naming the field and the allowed range.

use super::prompt_logprobs::PromptLogprobs;
use serde::{Deserialize, Deserializer, Serialize};

/// Most top log-probabilities that can be asked for per generated token (OpenAI's limit).
pub const MAX_LOGPROBS: usize = 20;

/// Temperatures below this are treated as greedy (dividing by them would overflow).
pub const GREEDY_EPSILON: f32 = 1e-5;

/// When beam search stops (Hugging Face's `early_stopping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStopping {
    /// HF `early_stopping=False` (the default): stop once no running beam can still beat the
    /// worst finished hypothesis, judged at the current length.
    #[default]
    Heuristic,
    /// HF `early_stopping=True`: stop as soon as `beam_width` hypotheses have finished.
    Eager,
    /// HF `early_stopping="never"`: stop only when no running beam can beat the worst finished
    /// hypothesis under any future length (the exact, canonical beam search).
    Never,
}

/// How to pick tokens and when to stop. Build with struct update syntax over
/// `SamplingParams::default()` and call [`SamplingParams::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate (>= 1).
    pub max_tokens: usize,
    /// End-of-sequence and stop tokens/strings are suppressed until this many were generated.
    pub min_tokens: usize,
    /// 0 = greedy; otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all). JSON `-1` also means all.
    #[serde(deserialize_with = "top_k_from_json")]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Keep tokens whose probability is at least `min_p` times the most likely one's (0 = all).
    pub min_p: f32,
    /// Seed of this request's random streams (reproducible per request); None = from entropy.
    pub seed: Option<u64>,
    /// HF repetition penalty over prompt + generated tokens (1 = off, > 1 discourages).
    pub repetition_penalty: f32,
    /// OpenAI presence penalty over generated tokens, in [-2, 2].
    pub presence_penalty: f32,
    /// OpenAI frequency penalty over generated tokens, in [-2, 2].
    pub frequency_penalty: f32,
    /// Strings that end generation; matched across token boundaries and trimmed from the text.
    pub stop: Vec<String>,
    /// Token ids that end generation (their text is not part of the output).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Keep the matched stop string at the end of the text.
    pub include_stop_str_in_output: bool,
    /// Outputs to return.
    pub n: usize,
    /// Candidates to generate, of which the best `n` are returned (None = `n`; >= n).
    pub best_of: Option<usize>,
    /// Beam search instead of sampling.
    pub use_beam_search: bool,
    /// Beams kept at each step when `use_beam_search` (>= n).
    pub beam_width: usize,
    /// Beam scores are `cumulative_logprob / length^length_penalty` (HF; 1.0 default).
    pub length_penalty: f32,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
    /// Top log-probabilities to return per generated token (None = none; at most 20).
    pub logprobs: Option<usize>,
    /// Log-probabilities of the prompt's tokens, computed as it is prefilled (vLLM's
    /// `prompt_logprobs`; None = none). Positions scored this way are never served from the
    /// prefix cache.
    pub prompt_logprobs: Option<PromptLogprobs>,
    /// Leave special tokens out of the detokenized text.
    pub skip_special_tokens: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 64,
            min_tokens: 0,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            include_stop_str_in_output: false,
            n: 1,
            best_of: None,
            use_beam_search: false,
            beam_width: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            logprobs: None,
            prompt_logprobs: None,
            skip_special_tokens: true,
        }
    }
}

/// An invalid sampling parameter: which field, its value, and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid sampling parameter {field} = {value}: must be {allowed}")]
pub struct SamplingError {
    pub field: &'static str,
    pub value: String,
    pub allowed: String,
}

fn check(ok: bool, field: &'static str, value: impl ToString, allowed: impl Into<String>) -> Result<(), SamplingError> {
    if ok {
        Ok(())
    } else {
        Err(SamplingError { field, value: value.to_string(), allowed: allowed.into() })
    }
}

fn in_range(v: f32, lo: f32, hi: f32) -> bool {
    v.is_finite() && v >= lo && v <= hi
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams { max_tokens, ..Default::default() }
    }

    /// Whether tokens are picked by argmax (temperature 0, or top_k 1).
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_EPSILON || self.top_k == 1
    }

    /// Candidates generated per request: `beam_width` under beam search, else `best_of` or `n`.
    pub fn num_candidates(&self) -> usize {
        if self.use_beam_search {
            self.beam_width
        } else {
            self.best_of.unwrap_or(self.n)
        }
    }

    /// Whether any penalty changes the logits.
    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Checks every field; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, ">= 1")?;
        check(
            self.min_tokens <= self.max_tokens,
            "min_tokens",
            self.min_tokens,
            format!("<= max_tokens ({})", self.max_tokens),
        )?;
        check(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "temperature",
            self.temperature,
            "a finite number >= 0",
        )?;
        check(self.top_p > 0.0 && self.top_p <= 1.0, "top_p", self.top_p, "in (0, 1]")?;
        check(in_range(self.min_p, 0.0, 1.0), "min_p", self.min_p, "in [0, 1]")?;
        check(
            self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0,
            "repetition_penalty",
            self.repetition_penalty,
            "a finite number > 0 (1 = off)",
        )?;
        check(in_range(self.presence_penalty, -2.0, 2.0), "presence_penalty", self.presence_penalty, "in [-2, 2]")?;
        check(in_range(self.frequency_penalty, -2.0, 2.0), "frequency_penalty", self.frequency_penalty, "in [-2, 2]")?;
        if let Some(i) = self.stop.iter().position(|s| s.is_empty()) {
            check(false, "stop", format!("[{i}] = \"\""), "non-empty strings")?;
        }
        check(self.n >= 1, "n", self.n, ">= 1")?;
        if let Some(best_of) = self.best_of {
            check(best_of >= self.n, "best_of", best_of, format!(">= n ({})", self.n))?;
        }
        if self.use_beam_search {
            check(self.beam_width >= 1, "beam_width", self.beam_width, ">= 1 when use_beam_search")?;
            check(
                self.n <= self.beam_width,
                "n",
                self.n,
                format!("<= beam_width ({}) when use_beam_search", self.beam_width),
            )?;
            check(self.length_penalty.is_finite(), "length_penalty", self.length_penalty, "a finite number")?;
        } else {
            check(
                self.beam_width == 1,
                "beam_width",
                self.beam_width,
                "1 unless use_beam_search (set use_beam_search = true for beam search)",
            )?;
            check(
                self.num_candidates() == 1 || !self.is_greedy(),
                "n",
                self.num_candidates(),
                "1 when sampling is greedy (temperature 0 or top_k 1): samples would be identical",
            )?;
        }
        if let Some(k) = self.logprobs {
            check(k <= MAX_LOGPROBS, "logprobs", k, format!("<= {MAX_LOGPROBS}"))?;
        }
        if let Some(p) = &self.prompt_logprobs {
            p.validate()?;
        }
        Ok(())
    }
}

/// `top_k` from JSON: a non-negative integer, or -1 (vLLM's "all", stored as 0).
fn top_k_from_json<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = i64::deserialize(d)?;
    match v {
        -1 => Ok(0),
        v if v >= 0 => usize::try_from(v).map_err(serde::de::Error::custom),
        v => Err(serde::de::Error::custom(format!("top_k = {v}: must be >= 0 (or -1 for all)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(p: SamplingParams) -> &'static str {
        p.validate().unwrap_err().field
    }

    #[test]
    fn validation_names_the_field() {
        let bad = SamplingParams { temperature: -1.0, ..Default::default() };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.field, "temperature");
        assert!(e.to_string().contains(">= 0"), "{e}");
        let d = SamplingParams::default;
        assert_eq!(field_of(SamplingParams { top_p: 0.0, ..d() }), "top_p");
        assert_eq!(field_of(SamplingParams { top_p: 1.5, ..d() }), "top_p");
        assert_eq!(field_of(SamplingParams { max_tokens: 0, ..d() }), "max_tokens");
        assert_eq!(field_of(SamplingParams { min_tokens: 65, ..d() }), "min_tokens");
        assert_eq!(field_of(SamplingParams { min_p: 1.5, ..d() }), "min_p");
        assert_eq!(field_of(SamplingParams { min_p: f32::NAN, ..d() }), "min_p");
        assert_eq!(field_of(SamplingParams { repetition_penalty: 0.0, ..d() }), "repetition_penalty");
        assert_eq!(field_of(SamplingParams { presence_penalty: 2.5, ..d() }), "presence_penalty");
        assert_eq!(field_of(SamplingParams { frequency_penalty: -3.0, ..d() }), "frequency_penalty");
        assert_eq!(field_of(SamplingParams { stop: vec!["a".into(), String::new()], ..d() }), "stop");
        assert_eq!(field_of(SamplingParams { n: 0, ..d() }), "n");
        assert_eq!(field_of(SamplingParams { n: 3, best_of: Some(2), temperature: 1.0, ..d() }), "best_of");
        assert_eq!(field_of(SamplingParams { n: 2, ..d() }), "n", "greedy n > 1");
        assert_eq!(field_of(SamplingParams { use_beam_search: true, beam_width: 0, ..d() }), "beam_width");
        assert_eq!(field_of(SamplingParams { use_beam_search: true, beam_width: 2, n: 3, ..d() }), "n");
        assert_eq!(field_of(SamplingParams { beam_width: 4, ..d() }), "beam_width");
        let e = SamplingParams { logprobs: Some(21), ..d() }.validate().unwrap_err();
        assert_eq!((e.field, e.allowed.as_str()), ("logprobs", "<= 20"));
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams { use_beam_search: true, beam_width: 4, n: 2, ..d() }.validate().is_ok());
        assert!(SamplingParams { temperature: 0.8, n: 4, best_of: Some(6), logprobs: Some(20), ..d() }
            .validate()
            .is_ok());
    }

    #[test]
    fn serde_round_trip_and_partial_json() {
        let p = SamplingParams { stop: vec!["\n\n".into()], logprobs: Some(3), seed: Some(9), ..Default::default() };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SamplingParams>(&json).unwrap(), p);
        let p: SamplingParams =
            serde_json::from_str(r#"{"temperature": 0.7, "top_k": -1, "early_stopping": "never"}"#).unwrap();
        assert_eq!((p.temperature, p.top_k, p.max_tokens), (0.7, 0, 64));
        assert_eq!(p.early_stopping, EarlyStopping::Never);
        assert!(serde_json::from_str::<SamplingParams>(r#"{"top_k": -2}"#).is_err());
    }
}
