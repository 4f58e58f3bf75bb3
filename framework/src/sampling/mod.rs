//! Sampling: the validated per-request parameters ([`SamplingParams`]), the logits processing
//! pipeline ([`processors`]), per-sequence sampling state with log-probabilities
//! ([`SequenceSampler`]), prompt log-probabilities ([`PromptLogprobs`], scored row by row),
//! stop handling and streaming text ([`StopChecker`]), and the beam search core
//! ([`BeamSearch`]). The executor and the Llm API call these; nothing here runs a
//! model.

pub mod beam;
mod params;
pub mod processors;
mod prompt_logprobs;
mod sampler;
mod sequence;
pub mod stop;

pub use beam::{beam_search, Beam, BeamChild, BeamConfig, BeamError, BeamSearch, Hypothesis};
pub use params::{EarlyStopping, SamplingError, SamplingParams, GREEDY_EPSILON, MAX_LOGPROBS};
pub use processors::{argmax, support};
pub use prompt_logprobs::{score_row, PromptLogprob, PromptLogprobs};
pub use sampler::Sampler;
pub use sequence::{derive_seed, SampledToken, SequenceSampler};
pub use stop::{FinishReason, StopChecker, StopError, StopKind, StopStrings, StopUpdate};
