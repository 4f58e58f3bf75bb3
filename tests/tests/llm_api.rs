//! The `Llm` API on the default model: batched `generate` equals one-at-a-time, streaming
//! deltas add up to the final text, stop strings that span tokens stop and are trimmed, n > 1
//! gives distinct samples, seeds reproduce, logprobs come back, chat applies the template,
//! async works on tokio, and bad parameters are errors naming the field.

use rtllm::api::{Llm, LlmError, Prompt};
use rtllm::model::default_model_path;
use rtllm::sampling::{FinishReason, SamplingParams};
use rtllm::tokenizer::ChatMessage;
use std::sync::{Arc, OnceLock};

/// One Llm for the whole test binary (tests run in parallel against it, which is the point).
/// Weights are dequantized as HF does, so exact texts can be asserted (greedy on SmolLM2:
/// "The capital of France is" → " Paris.\n\nThe answer is: ...").
fn llm() -> Option<&'static Llm> {
    static LLM: OnceLock<Option<Llm>> = OnceLock::new();
    LLM.get_or_init(|| {
        if !default_model_path().exists() {
            eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", default_model_path().display());
            return None;
        }
        let registry = Arc::new(rtllm_tests::registry_with(rtllm_tests::builtin_plugin_files()));
        let mut build = rtllm::engine::BuildConfig::default();
        build.selection.dequantize_weights = true;
        Some(Llm::builder().registry(registry).build_config(build).build().expect("the default model loads"))
    })
    .as_ref()
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_tokens) }
}

const PROMPTS: [&str; 4] = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "Le café est"];

#[test]
fn batched_generate_equals_one_at_a_time() {
    let Some(llm) = llm() else { return };
    let params = greedy(12);
    let batched = llm.generate(PROMPTS, &params).expect("generates");
    assert_eq!(batched.len(), PROMPTS.len());
    for (prompt, out) in PROMPTS.iter().zip(&batched) {
        let alone = llm.generate([*prompt], &params).expect("generates").remove(0);
        assert_eq!(out.outputs[0].token_ids, alone.outputs[0].token_ids, "{prompt}");
        assert_eq!(out.outputs[0].text, alone.outputs[0].text);
        assert_eq!(out.prompt.as_deref(), Some(*prompt));
        assert!(out.finished && out.outputs[0].finish_reason == Some(FinishReason::Length));
        assert_eq!(out.outputs[0].token_ids.len(), 12);
    }
    assert!(batched[0].outputs[0].text.starts_with(" Paris"), "{:?}", batched[0].outputs[0].text);
}

#[test]
fn stream_deltas_concatenate_to_the_final_text() {
    let Some(llm) = llm() else { return };
    let mut text = String::new();
    let mut ids = Vec::new();
    let mut last = None;
    for out in llm.generate_stream("Once upon a time", &greedy(20)).expect("submits") {
        let out = out.expect("streams");
        text.push_str(&out.outputs[0].text_diff);
        ids.extend(&out.outputs[0].token_ids_diff);
        last = Some(out);
    }
    let last = last.expect("at least one output");
    assert!(last.finished);
    assert_eq!(text, last.outputs[0].text);
    assert_eq!(ids, last.outputs[0].token_ids);
    assert_eq!(text, llm.tokenizer().decode(&ids, true).expect("decodes"));
}

#[test]
fn stop_strings_spanning_tokens_stop_and_are_trimmed() {
    let Some(llm) = llm() else { return };
    // Greedy: " Paris.\n\nThe answer is: 2018-01-22 ..." — "answer is" spans two tokens.
    let params = SamplingParams { stop: vec!["answer is".into()], ..greedy(24) };
    let out = llm.generate(["The capital of France is"], &params).expect("generates").remove(0);
    let o = &out.outputs[0];
    assert_eq!(o.text, " Paris.\n\nThe ", "trimmed at the stop string");
    assert!(matches!(o.finish_reason, Some(FinishReason::Stop(_))), "{:?}", o.finish_reason);
    assert!(o.token_ids.len() < 24, "stopped early");
    // Streaming never shows the stop string.
    let mut streamed = String::new();
    for out in llm.generate_stream("The capital of France is", &params).expect("submits") {
        streamed.push_str(&out.expect("streams").outputs[0].text_diff);
    }
    assert_eq!(streamed, " Paris.\n\nThe ");
}

#[test]
fn n_samples_are_distinct_and_seeds_reproduce() {
    let Some(llm) = llm() else { return };
    let params = SamplingParams { temperature: 1.0, top_p: 0.95, n: 4, seed: Some(11), ..greedy(12) };
    let a = llm.generate(["Once upon a time"], &params).expect("generates").remove(0);
    assert_eq!(a.outputs.len(), 4);
    let mut texts: Vec<&str> = a.outputs.iter().map(|o| o.text.as_str()).collect();
    texts.sort();
    texts.dedup();
    assert!(texts.len() >= 3, "n = 4 samples should differ: {texts:?}");
    let b = llm.generate(["Once upon a time"], &params).expect("generates").remove(0);
    for (x, y) in a.outputs.iter().zip(&b.outputs) {
        assert_eq!(x.token_ids, y.token_ids, "the same seed reproduces");
    }
    let other = SamplingParams { seed: Some(12), ..params };
    let c = llm.generate(["Once upon a time"], &other).expect("generates").remove(0);
    assert_ne!(a.outputs[0].token_ids, c.outputs[0].token_ids, "another seed differs");
}

#[test]
fn logprobs_come_back_with_top_alternatives() {
    let Some(llm) = llm() else { return };
    let params = SamplingParams { logprobs: Some(3), ..greedy(6) };
    let out = llm.generate(["The capital of France is"], &params).expect("generates").remove(0);
    let o = &out.outputs[0];
    let lps = o.logprobs.as_ref().expect("logprobs asked");
    assert_eq!(lps.len(), 6);
    let mut sum = 0.0f64;
    for (lp, &id) in lps.iter().zip(&o.token_ids) {
        assert_eq!(lp.token_id, id);
        assert!(lp.logprob <= 0.0);
        assert_eq!(lp.top_logprobs.len(), 3);
        assert_eq!(lp.top_logprobs[0].0, id, "greedy picks the top token");
        assert!((lp.top_logprobs[0].1 - lp.logprob).abs() < 1e-5);
        sum += lp.logprob as f64;
    }
    assert!((sum - o.cumulative_logprob).abs() < 1e-4, "{sum} vs {}", o.cumulative_logprob);
}

#[test]
fn chat_applies_the_template() {
    let Some(llm) = llm() else { return };
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let out = llm.chat(&messages, &SamplingParams::greedy(16)).expect("chats");
    assert!(out.outputs[0].text.contains("Paris"), "{:?}", out.outputs[0].text);
    assert!(matches!(out.outputs[0].finish_reason, Some(FinishReason::Stop(_))), "the chat turn ends with <|im_end|>");
    let Prompt::Tokens(ids) = llm.chat_prompt(&messages).expect("renders") else { panic!("token prompt") };
    assert_eq!(out.prompt_token_ids, ids);
}

#[test]
fn async_generation_on_tokio() {
    let Some(llm) = llm() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sync_out = llm.generate(["Once upon a time", "The capital of France is"], &greedy(8)).expect("generates");
    let params = greedy(8);
    rt.block_on(async {
        let (a, b) = tokio::join!(
            llm.generate_async("Once upon a time", &params),
            llm.generate_async("The capital of France is", &params)
        );
        assert_eq!(a.expect("async a").outputs[0].token_ids, sync_out[0].outputs[0].token_ids);
        assert_eq!(b.expect("async b").outputs[0].token_ids, sync_out[1].outputs[0].token_ids);
        let mut stream = llm.generate_async_stream("Once upon a time", &params).expect("submits");
        let mut text = String::new();
        while let Some(out) = stream.next().await {
            text.push_str(&out.expect("streams").outputs[0].text_diff);
        }
        assert_eq!(text, sync_out[0].outputs[0].text);
    });
}

#[test]
fn bad_parameters_and_prompts_are_errors() {
    let Some(llm) = llm() else { return };
    let bad = SamplingParams { top_p: 1.5, ..SamplingParams::default() };
    let err = llm.generate(["hi"], &bad).expect_err("top_p 1.5 is refused");
    assert!(err.to_string().contains("top_p"), "{err}");
    let err = llm.generate([Prompt::Tokens(vec![])], &SamplingParams::default()).expect_err("empty prompt");
    assert!(matches!(err, LlmError::Submit(_)), "{err}");
    let long = Prompt::Tokens(vec![1; llm.max_seq_len() + 5]);
    let err = llm.generate([long], &SamplingParams::default()).expect_err("overlong prompt");
    assert!(err.to_string().contains("max_seq_len"), "{err}");
    // The executor still serves others afterwards.
    assert_eq!(llm.generate(["Hello"], &greedy(2)).expect("still works")[0].outputs[0].token_ids.len(), 2);
}
