//! Stop strings end requests in the executor, on the default model: the sample finishes in the
//! step whose token completed the stop string (no token is generated after it, its KV blocks
//! are free when the request is done), the text is trimmed (or kept with
//! `include_stop_str_in_output`), every sample of an n > 1 request stops on its own, and an
//! executor without a tokenizer refuses stop strings.

mod runtime_support;

use rtllm::runtime::{Executor, ExecutorConfig, OutputUpdate, Request, SubmitError};
use rtllm::sampling::{FinishReason, SamplingParams, StopKind};
use runtime_support::*;

/// "The capital of France is" (greedy: " Paris.\n\nThe answer is: 2018-01-22 ...").
const PROMPT: &str = "The capital of France is";
const STOP: &str = "answer is";

fn updates(ex: &Executor, prompt: &[u32], params: &SamplingParams) -> Vec<OutputUpdate> {
    let mut request = Request::new(prompt.to_vec(), params.clone());
    request.n = params.n;
    let updates: Vec<OutputUpdate> = ex.submit(request).expect("submits").collect();
    assert!(updates.iter().all(|u| u.error.is_none()), "{updates:?}");
    updates
}

#[test]
fn a_stop_string_ends_the_request_in_the_step_that_completed_it() {
    let config = ExecutorConfig::with_max_batch_size(4);
    let Some(model) = load(&config) else { return };
    let prompt = model.tokenizer.encode(PROMPT, true).expect("encodes");
    let ex = executor(model, config);
    let params = SamplingParams { stop: vec![STOP.into()], ..greedy(200) };
    let got = updates(&ex, &prompt, &params);
    let last = got.last().expect("updates");
    assert_eq!(last.finish_reason, Some(FinishReason::Stop(StopKind::StopString(STOP.into()))));
    let text: String = got.iter().map(|u| u.text_diff.as_str()).collect();
    assert_eq!(text, " Paris.\n\nThe ", "trimmed at the stop string, never streamed past it");
    let tokens: usize = got.iter().map(|u| u.token_ids.len()).sum();
    assert!(tokens < 20, "stopped early: {tokens} tokens");
    // The finishing update carries the token that completed the stop string, in its step.
    assert_eq!(last.token_ids.len(), 1);
    assert!(got.windows(2).all(|w| w[0].step < w[1].step), "one update per step");
    let stats = wait_idle(&ex);
    assert_eq!(stats.generated_tokens, tokens as u64, "no token generated after the stop: {stats:?}");
    assert_eq!(stats.completed_requests, 1);
    assert_eq!(stats.kv.used_blocks, 0, "the request's blocks are free: {stats:?}");

    // Kept with include_stop_str_in_output; the tokens are the same.
    let keep = SamplingParams { include_stop_str_in_output: true, ..params };
    let kept = updates(&ex, &prompt, &keep);
    let text: String = kept.iter().map(|u| u.text_diff.as_str()).collect();
    assert_eq!(text, " Paris.\n\nThe answer is");
    assert_eq!(kept.iter().map(|u| u.token_ids.len()).sum::<usize>(), tokens);
    ex.shutdown().expect("joins");
}

#[test]
fn each_sample_stops_on_its_own_and_frees_its_blocks() {
    let config = ExecutorConfig::with_max_batch_size(4);
    let Some(model) = load(&config) else { return };
    let prompt = model.tokenizer.encode("Once upon a time", true).expect("encodes");
    let ex = executor(model, config);
    // Sampled, so the samples differ; " " ends each at its first completed word.
    let params = SamplingParams { n: 3, temperature: 1.0, seed: Some(5), stop: vec![" ".into()], ..greedy(64) };
    let got = updates(&ex, &prompt, &params);
    for sample in 0..3 {
        let mine: Vec<&OutputUpdate> = got.iter().filter(|u| u.sample == sample).collect();
        let last = mine.last().expect("the sample has updates");
        assert_eq!(last.finish_reason, Some(FinishReason::Stop(StopKind::StopString(" ".into()))), "{mine:?}");
        let text: String = mine.iter().map(|u| u.text_diff.as_str()).collect();
        assert!(!text.contains(' '), "sample {sample}: {text:?}");
        assert!(mine.len() < 64, "sample {sample} stopped early");
    }
    let stats = wait_idle(&ex);
    let tokens: usize = got.iter().map(|u| u.token_ids.len()).sum();
    assert_eq!(stats.generated_tokens, tokens as u64, "{stats:?}");
    assert_eq!(stats.kv.used_blocks, 0, "{stats:?}");
}

#[test]
fn without_a_tokenizer_stop_strings_are_refused() {
    let config = ExecutorConfig::with_max_batch_size(2);
    let Some(model) = load(&config) else { return };
    let ex = Executor::new(model.engine, config).expect("executor starts");
    let params = SamplingParams { stop: vec![STOP.into()], ..greedy(4) };
    assert_eq!(ex.submit(Request::new(vec![1, 2, 3], params)).err(), Some(SubmitError::StopStringsNeedTokenizer));
    // Lengths and token ids still end requests; no text comes back.
    let samples = ex.submit(Request::new(vec![1, 2, 3], greedy(4))).expect("submits").wait().expect("completes");
    assert_eq!((samples[0].token_ids.len(), samples[0].text.as_str()), (4, ""));
    assert_eq!(samples[0].finish_reason, Some(FinishReason::Length));
}
