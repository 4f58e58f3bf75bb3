//! In-flight batching on the default model: concurrent greedy requests equal their
//! one-at-a-time outputs, chunked prefill equals unchunked, cancellation frees blocks, and
//! impossible requests are refused while the others complete.

mod runtime_support;

use rtllm::runtime::{ExecutorConfig, FinishReason, Request, SubmitError};
use rtllm::sampling::SamplingParams;
use rtllm::sampling::StopKind;
use runtime_support::*;
use std::time::Instant;

#[test]
fn concurrent_greedy_requests_equal_one_at_a_time() {
    let config = ExecutorConfig::with_max_batch_size(16);
    let Some(model) = load(&config) else { return };
    let eos = model.eos_ids();
    // Half ignore eos, half stop on it: both stop paths must agree.
    let jobs: Vec<_> = prompts(18)
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, SamplingParams { ignore_eos: i % 2 == 0, ..SamplingParams::greedy(max_tokens_for(i)) }))
        .collect();
    let ex = executor(model, ExecutorConfig { eos_token_ids: eos.clone(), ..config });
    let t = Instant::now();
    let want = one_at_a_time(&ex, &jobs);
    eprintln!("one at a time: {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let got = run_concurrently(&ex, &jobs);
    eprintln!("concurrent: {:.1}s, stats {:?}", t.elapsed().as_secs_f64(), ex.stats());
    for (i, ((tokens, finish), want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(tokens, want, "request {i}: batched output differs from the one-at-a-time one");
        let eos_end = want.last().is_some_and(|t| eos.contains(t)) && !jobs[i].1.ignore_eos;
        match finish {
            Some(FinishReason::Stop(StopKind::Eos(t))) => assert!(eos_end && eos.contains(t), "request {i}"),
            other => assert!(!eos_end && *other == Some(FinishReason::Length), "request {i}: {other:?}"),
        }
    }
    let stats = wait_idle(&ex);
    assert!(stats.peak_running_requests >= 16, "requests ran together: {stats:?}");
    assert_eq!(stats.completed_requests, 2 * 18, "each job alone, then all together");
    ex.shutdown().expect("joins");
}

#[test]
fn chunked_prefill_gives_the_same_tokens_as_unchunked() {
    let config = ExecutorConfig {
        max_batch_size: Some(4),
        max_num_tokens: Some(16),
        enable_chunked_prefill: true,
        ..ExecutorConfig::with_max_batch_size(4)
    };
    let unchunked = ExecutorConfig::with_max_batch_size(4);
    let Some(model) = load(&unchunked) else { return };
    // The longest fixture prompts (53..68 tokens) need 4-5 chunks of 16.
    let mut ps = fixture_prompts();
    ps.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let jobs: Vec<_> = ps.into_iter().take(4).map(|p| (p, greedy(8))).collect();
    let reference = executor(model, unchunked);
    let want = one_at_a_time(&reference, &jobs);
    assert!(reference.stats().steps <= 4 * 8, "the reference prefills each prompt in one step");
    reference.shutdown().expect("joins");
    let Some(model) = load(&config) else { return };
    let ex = executor(model, config);
    let got = run_concurrently(&ex, &jobs);
    for (i, ((tokens, _), want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(tokens, want, "prompt {i} ({} tokens): chunked output differs", jobs[i].0.len());
    }
    assert!(ex.stats().steps >= 16, "prompts were split across steps: {:?}", ex.stats());
}

#[test]
fn cancellation_frees_blocks_and_impossible_requests_are_refused() {
    let mut config = ExecutorConfig::with_max_batch_size(4);
    config.build.max_seq_len = Some(256);
    config.kv_cache.max_tokens = Some(4 * 32);
    config.kv_cache.enable_block_reuse = false;
    let Some(model) = load(&config) else { return };
    let ex = executor(model, config);
    let ps = fixture_prompts();

    // Refused at submit, with clear errors.
    let too_long = Request::new(vec![1; 256], greedy(4));
    assert_eq!(ex.submit(too_long).err(), Some(SubmitError::TooLong { prompt: 256, max_seq_len: 256 }));
    let empty = Request::new(Vec::new(), greedy(4));
    assert_eq!(ex.submit(empty).err(), Some(SubmitError::EmptyPrompt));
    let huge = Request::new(vec![1; 200], greedy(4));
    assert_eq!(ex.submit(huge).err(), Some(SubmitError::ExceedsKvCache { needed: 7, total: 4 }));
    let bad_token = Request::new(vec![u32::MAX], greedy(4));
    assert!(matches!(ex.submit(bad_token), Err(SubmitError::TokenOutOfRange { .. })));

    // A long generation, cancelled after its first tokens; a short one beside it completes.
    let long = ex.submit(Request::new(ps[0].clone(), greedy(200))).expect("submits");
    let short = ex.submit(Request::new(ps[1].clone(), greedy(6))).expect("submits");
    let first = long.recv().expect("a first token");
    assert_eq!(first.token_ids.len(), 1);
    long.cancel();
    let rest: Vec<_> = long.collect();
    let last = rest.last().expect("a final update");
    assert_eq!(last.finish_reason, Some(FinishReason::Cancelled));
    assert!(rest.len() < 199, "cancelled well before max_tokens");
    assert_eq!(short.wait().expect("completes")[0].token_ids.len(), 6);
    let stats = wait_idle(&ex);
    assert_eq!(stats.kv.used_blocks, 0, "every block is back: {stats:?}");

    // A sequence that outgrows the whole cache fails with an error; the other goes on.
    let grows = ex.submit(Request::new(ps[2].clone(), greedy(250))).expect("fits at submit");
    let fine = ex.submit(Request::new(ps[3].clone(), greedy(5))).expect("submits");
    assert_eq!(fine.wait().expect("completes")[0].token_ids.len(), 5);
    let err = grows.wait().expect_err("cannot fit");
    assert!(err.to_string().contains("KV cache"), "{err}");
    assert_eq!(wait_idle(&ex).kv.used_blocks, 0);
}

#[test]
fn unbounded_max_tokens_runs_to_max_seq_len_and_the_executor_keeps_serving() {
    // `max_tokens = usize::MAX` (the Llm API's "no limit") once overflowed the scheduler's
    // worst-case sum and killed the loop; it now means "until max_seq_len".
    let mut config = ExecutorConfig::with_max_batch_size(2);
    config.build.max_seq_len = Some(48);
    config.capacity_scheduler_policy = rtllm::runtime::CapacitySchedulerPolicy::GuaranteedNoEvict;
    let Some(model) = load(&config) else { return };
    let ex = executor(model, config);
    let prompt = fixture_prompts().into_iter().min_by_key(|p| p.len()).expect("prompts");
    let unbounded = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(usize::MAX) };
    let samples = ex.submit(Request::new(prompt.clone(), unbounded)).expect("submits").wait().expect("completes");
    assert_eq!(samples[0].token_ids.len(), 48 - prompt.len());
    assert_eq!(samples[0].finish_reason, Some(FinishReason::Length));
    let next = ex.submit(Request::new(prompt, greedy(3))).expect("still serving");
    assert_eq!(next.wait().expect("completes")[0].token_ids.len(), 3);
}
