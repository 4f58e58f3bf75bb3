//! Turns an OpenAI request's sampling fields into validated [`SamplingParams`] for one prompt:
//! OpenAI/vLLM defaults (temperature 1, max_tokens up to the room left in `max_seq_len`), the
//! length checks against `max_seq_len`, and 400s that name the request field at fault.

use super::config::MAX_MODEL_NAME_BYTES;
use super::error::{capped, ApiError};
use super::protocol::{CommonFields, StopInput};
use crate::sampling::SamplingParams;

/// The sampling-related parts of one request, before a prompt's length is known.
#[derive(Clone, Debug)]
pub struct ParamsSpec<'a> {
    pub common: &'a CommonFields,
    /// `max_tokens` (or chat's `max_completion_tokens`) and the field it came from.
    pub max_tokens: Option<(usize, &'static str)>,
    /// Top log-probabilities per token, when log-probabilities were asked.
    pub logprobs: Option<usize>,
    /// The field that asked for them (`logprobs` or chat's `top_logprobs`).
    pub logprobs_param: &'static str,
    pub best_of: Option<usize>,
    /// `prompt` or `messages`.
    pub prompt_param: &'static str,
}

/// The server's default temperature (vLLM's and OpenAI's).
pub const DEFAULT_TEMPERATURE: f32 = 1.0;

impl ParamsSpec<'_> {
    /// The parameters for a prompt of `prompt_len` tokens under `max_seq_len`.
    pub fn build(&self, prompt_len: usize, max_seq_len: usize) -> Result<SamplingParams, ApiError> {
        let c = self.common;
        if prompt_len == 0 {
            return Err(ApiError::bad_request("the prompt is empty", Some(self.prompt_param)));
        }
        if prompt_len >= max_seq_len {
            return Err(ApiError::bad_request(
                format!(
                    "the prompt is {prompt_len} tokens, but this model's max_seq_len is {max_seq_len} \
                     (prompt plus at least one generated token)"
                ),
                Some(self.prompt_param),
            )
            .with_code("context_length_exceeded"));
        }
        let room = max_seq_len - prompt_len;
        let max_tokens = match self.max_tokens {
            None => room,
            Some((0, field)) => return Err(ApiError::bad_request(format!("{field} = 0: must be >= 1"), Some(field))),
            Some((m, field)) if m > room => {
                return Err(ApiError::bad_request(
                    format!(
                        "{field} = {m} with a prompt of {prompt_len} tokens exceeds max_seq_len {max_seq_len} \
                         (at most {room})"
                    ),
                    Some(field),
                )
                .with_code("context_length_exceeded"))
            }
            Some((m, _)) => m,
        };
        let top_k = match c.top_k {
            None | Some(-1) => 0,
            Some(k) => usize::try_from(k).map_err(|_| {
                ApiError::bad_request(format!("top_k = {k}: must be >= 0 (or -1 for all)"), Some("top_k"))
            })?,
        };
        let d = SamplingParams::default();
        let params = SamplingParams {
            max_tokens,
            min_tokens: c.min_tokens.unwrap_or(0),
            temperature: c.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            top_k,
            top_p: c.top_p.unwrap_or(1.0),
            min_p: c.min_p.unwrap_or(0.0),
            seed: c.seed,
            repetition_penalty: c.repetition_penalty.unwrap_or(1.0),
            presence_penalty: c.presence_penalty.unwrap_or(0.0),
            frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
            stop: c.stop.clone().map(StopInput::into_vec).unwrap_or_default(),
            stop_token_ids: c.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: c.ignore_eos.unwrap_or(false),
            include_stop_str_in_output: c.include_stop_str_in_output.unwrap_or(false),
            n: c.n.unwrap_or(1),
            best_of: self.best_of,
            logprobs: self.logprobs,
            skip_special_tokens: c.skip_special_tokens.unwrap_or(true),
            ..d
        };
        params.validate().map_err(|e| {
            let param = match e.field {
                "logprobs" => self.logprobs_param,
                "max_tokens" => self.max_tokens.map_or("max_tokens", |(_, f)| f),
                f => f,
            };
            ApiError::bad_request(e.to_string(), Some(param))
        })?;
        if c.stream == Some(true) && params.best_of.is_some_and(|b| b > params.n) {
            return Err(ApiError::bad_request("best_of > n cannot be streamed", Some("best_of")));
        }
        Ok(params)
    }
}

/// Checks the request's `model` against the served name (absent = the served model); an
/// absurdly long name is refused without being echoed.
pub fn check_model(model: Option<&str>, served: &str) -> Result<(), ApiError> {
    match model {
        None => Ok(()),
        Some(m) if m == served => Ok(()),
        Some(m) if m.len() > MAX_MODEL_NAME_BYTES => Err(ApiError::bad_request(
            format!(
                "the model name is {} bytes long (at most {MAX_MODEL_NAME_BYTES}); this server serves `{served}`",
                m.len()
            ),
            Some("model"),
        )
        .with_code("model_not_found")),
        Some(m) => Err(ApiError::bad_request(
            format!("the model `{}` does not exist; this server serves `{served}`", capped(m, 64)),
            Some("model"),
        )
        .with_code("model_not_found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(common: &CommonFields, max_tokens: Option<usize>) -> ParamsSpec<'_> {
        ParamsSpec {
            common,
            max_tokens: max_tokens.map(|m| (m, "max_tokens")),
            logprobs: None,
            logprobs_param: "logprobs",
            best_of: None,
            prompt_param: "prompt",
        }
    }

    #[test]
    fn defaults_follow_vllm() {
        let c = CommonFields::default();
        let p = spec(&c, None).build(10, 100).unwrap();
        assert_eq!((p.max_tokens, p.temperature, p.top_p, p.n), (90, 1.0, 1.0, 1));
        let c = CommonFields { top_k: Some(-1), stop: Some(StopInput::One("x".into())), ..Default::default() };
        let p = spec(&c, Some(5)).build(10, 100).unwrap();
        assert_eq!((p.top_k, p.max_tokens, p.stop), (0, 5, vec!["x".to_string()]));
    }

    #[test]
    fn bad_values_name_their_field() {
        let param = |c: CommonFields, m: Option<usize>, len: usize| spec(&c, m).build(len, 100).unwrap_err().param;
        let d = CommonFields::default;
        assert_eq!(param(CommonFields { temperature: Some(-1.0), ..d() }, None, 5).as_deref(), Some("temperature"));
        assert_eq!(param(CommonFields { top_p: Some(0.0), ..d() }, None, 5).as_deref(), Some("top_p"));
        assert_eq!(param(CommonFields { top_k: Some(-3), ..d() }, None, 5).as_deref(), Some("top_k"));
        assert_eq!(param(CommonFields { n: Some(2), temperature: Some(0.0), ..d() }, None, 5).as_deref(), Some("n"));
        assert_eq!(param(d(), Some(96), 5).as_deref(), Some("max_tokens"));
        assert_eq!(param(d(), Some(0), 5).as_deref(), Some("max_tokens"));
        assert_eq!(param(d(), None, 100).as_deref(), Some("prompt"));
        assert_eq!(param(d(), None, 0).as_deref(), Some("prompt"));
        assert!(spec(&d(), Some(95)).build(5, 100).is_ok());
    }

    #[test]
    fn unknown_models_are_refused() {
        assert!(check_model(None, "m").is_ok());
        assert!(check_model(Some("m"), "m").is_ok());
        let e = check_model(Some("gpt-4"), "m").unwrap_err();
        assert_eq!((e.param.as_deref(), e.code), (Some("model"), Some("model_not_found")));
        let huge = "x".repeat(1 << 20);
        let e = check_model(Some(&huge), "m").unwrap_err();
        assert!(e.message.len() < 200 && e.message.contains("1048576 bytes"), "{}", e.message);
    }
}
