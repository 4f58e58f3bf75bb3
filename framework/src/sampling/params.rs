//! `SamplingParams` with TensorRT-LLM's field names, and their validation.

/// How to pick tokens and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 = greedy; otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Seed of this request's random stream (reproducible per request).
    pub seed: Option<u64>,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Extra token ids that end generation.
    pub stop_token_ids: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { max_tokens: 64, temperature: 0.0, top_k: 0, top_p: 1.0, seed: None, ignore_eos: false, stop_token_ids: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid sampling parameter {field} = {value}: must be {allowed}")]
pub struct SamplingError {
    pub field: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl SamplingParams {
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams { max_tokens, ..Default::default() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Checks every field; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let err = |field, value: String, allowed| Err(SamplingError { field, value, allowed });
        if self.max_tokens == 0 {
            return err("max_tokens", "0".into(), ">= 1");
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return err("temperature", self.temperature.to_string(), "a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return err("top_p", self.top_p.to_string(), "in (0, 1]");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let bad = SamplingParams { temperature: -1.0, ..Default::default() };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.field, "temperature");
        assert!(e.to_string().contains(">= 0"));
        assert_eq!(SamplingParams { top_p: 0.0, ..Default::default() }.validate().unwrap_err().field, "top_p");
        assert_eq!(SamplingParams { max_tokens: 0, ..Default::default() }.validate().unwrap_err().field, "max_tokens");
        assert!(SamplingParams::default().validate().is_ok());
    }
}
