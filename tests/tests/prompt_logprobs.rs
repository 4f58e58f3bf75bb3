//! Prompt log-probabilities through the executor (`SamplingParams::prompt_logprobs`, vLLM's
//! `prompt_logprobs`) on a small random-weight Llama: each scored position's log-probability,
//! rank, top alternatives and whole distribution equal the log-softmax of the engine's own
//! logits after that prefix, whatever the logits rows per step; only positions from `start` are
//! scored; they survive n > 1 sampling and beam search; a start past the prompt is refused.

use rtllm::api::{Llm, LlmError};
use rtllm::engine::BuildConfig;
use rtllm::model::{Model, ModelSpec};
use rtllm::runtime::executor::SubmitError;
use rtllm::sampling::{PromptLogprob, PromptLogprobs, SamplingParams};
use rtllm::weights::dummy::DummySpec;
use rtllm_tests::LogitsProbe;

fn spec() -> ModelSpec {
    ModelSpec::dummy(DummySpec::new("tiny-llama"))
}

fn load(max_batch_size: usize) -> Model {
    let build =
        BuildConfig { max_batch_size, max_seq_len: Some(128), use_engine_cache: false, ..BuildConfig::default() };
    Model::load(&spec(), rtllm_tests::registry(), &build).unwrap_or_else(|e| panic!("tiny-llama builds: {e}"))
}

fn prompt() -> Vec<u32> {
    vec![1, 7, 300, 42, 42, 9, 511, 128, 3, 77, 250, 5, 6, 400, 13, 2, 99, 64, 64, 31]
}

/// log-softmax of the engine's logits after each prefix `prompt[..p]`, p = 1..len.
fn reference_rows(prompt: &[u32]) -> Vec<Vec<f64>> {
    let mut model = load(8);
    let mut probe = LogitsProbe::new();
    prompt[..prompt.len() - 1]
        .iter()
        .map(|&t| {
            let logits = probe.feed(&mut model.engine, &[t]);
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max + logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            logits.iter().map(|&v| v as f64 - lse).collect()
        })
        .collect()
}

fn scored(llm: &Llm, params: &SamplingParams) -> Vec<PromptLogprob> {
    let out = llm.generate_stream(prompt(), params).expect("submits").finish().expect("finishes");
    out.prompt_logprobs.expect("prompt_logprobs were asked")
}

fn params(spec: PromptLogprobs) -> SamplingParams {
    SamplingParams { max_tokens: 3, prompt_logprobs: Some(spec), ..SamplingParams::default() }
}

#[test]
fn scored_positions_equal_the_log_softmax_of_the_engines_logits() {
    let prompt = prompt();
    let rows = reference_rows(&prompt);
    // 3 logits rows per step: the 20-token prompt is scored over several steps.
    for max_batch_size in [3, 32] {
        let llm = Llm::start(load(max_batch_size), Default::default()).expect("starts");
        let got = scored(&llm, &params(PromptLogprobs { top: 4, start: 1, full_distribution: true }));
        assert_eq!(got.len(), prompt.len() - 1, "every position but the first");
        for s in &got {
            let row = &rows[s.position - 1];
            assert_eq!(s.token_id, prompt[s.position]);
            let want = row[s.token_id as usize];
            assert!((s.logprob as f64 - want).abs() < 1e-4, "position {}: {} vs {want}", s.position, s.logprob);
            assert_eq!(s.rank, 1 + row.iter().filter(|&&v| v > want + 1e-6).count(), "position {}", s.position);
            let mut best: Vec<usize> = (0..row.len()).collect();
            best.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            assert_eq!(s.top_logprobs.len(), 4);
            assert_eq!(s.top_logprobs[0].0 as usize, best[0], "position {}: most likely", s.position);
            let dist = s.distribution.as_deref().expect("whole distribution");
            assert_eq!(dist.len(), 512);
            assert!(dist.iter().zip(row).all(|(&a, &b)| (a as f64 - b).abs() < 1e-4), "position {}", s.position);
        }
        // From position 12 on only; without the extras.
        let tail = scored(&llm, &params(PromptLogprobs::from_position(12)));
        assert_eq!(tail.iter().map(|s| s.position).collect::<Vec<_>>(), (12..prompt.len()).collect::<Vec<_>>());
        assert!(tail.iter().all(|s| s.top_logprobs.is_empty() && s.distribution.is_none()));
        for (s, full) in tail.iter().zip(&got[11..]) {
            assert!((s.logprob - full.logprob).abs() < 1e-5, "position {}", s.position);
        }
    }
}

#[test]
fn prompts_are_scored_once_under_sampling_and_beam_search() {
    let llm = Llm::start(load(8), Default::default()).expect("starts");
    let spec = PromptLogprobs::from_position(5);
    let sampled = SamplingParams { n: 3, temperature: 1.0, seed: Some(4), ..params(spec.clone()) };
    let beams = SamplingParams { use_beam_search: true, beam_width: 3, n: 2, ..params(spec) };
    let plain = scored(&llm, &params(PromptLogprobs::from_position(5)));
    for p in [sampled, beams] {
        let out = llm.generate_stream(prompt(), &p).expect("submits").finish().expect("finishes");
        let got = out.prompt_logprobs.expect("asked");
        assert_eq!(got.len(), prompt().len() - 5);
        assert!(got.iter().zip(&plain).all(|(a, b)| a.position == b.position && (a.logprob - b.logprob).abs() < 1e-5));
        assert_eq!(out.outputs.len(), p.n);
        assert!(out.outputs.iter().all(|o| !o.token_ids.is_empty()));
    }
}

#[test]
fn a_start_past_the_prompt_or_too_many_alternatives_are_refused() {
    let llm = Llm::start(load(8), Default::default()).expect("starts");
    let len = prompt().len();
    let err = llm.generate_stream(prompt(), &params(PromptLogprobs::from_position(len))).err().expect("refused");
    assert!(
        matches!(err, LlmError::Submit(SubmitError::NothingToScore { start, prompt }) if start == len && prompt == len),
        "{err}"
    );
    assert!(err.to_string().contains("the last is at position 19"), "{err}");
    let err = llm.generate_stream(prompt(), &params(PromptLogprobs::top(21))).err().expect("refused");
    assert!(err.to_string().contains("prompt_logprobs.top = 21"), "{err}");
    let err = llm.generate_stream(prompt(), &params(PromptLogprobs::from_position(0))).err().expect("refused");
    assert!(err.to_string().contains("prompt_logprobs.start = 0"), "{err}");
}
