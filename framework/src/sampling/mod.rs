//! Sampling: the validated per-request parameters and the sampler that turns one row of
//! logits into a token (greedy, temperature, top-k, top-p, seeded).

mod params;
mod sampler;

pub use params::{SamplingError, SamplingParams};
pub use sampler::Sampler;
