//! Beam search through the executor on the default model: width 1 equals greedy decoding, the
//! executor's hypotheses equal the pure `sampling::beam_search` driver run over the same model
//! one sequence at a time, beam requests batched with others give their results alone, every
//! KV block comes back, and the Llm API returns the best `n` hypotheses.

mod runtime_support;

use rtllm::api::Llm;
use rtllm::model::Model;
use rtllm::runtime::{Executor, ExecutorConfig, FinishReason, Request, RequestHandle, SubmitError};
use rtllm::sampling::{beam_search, BeamConfig, Hypothesis, SamplingParams};
use runtime_support::*;
use std::sync::Arc;

/// One returned hypothesis: tokens, cumulative log-probability, finish reason.
type Hyp = (Vec<u32>, f64, Option<FinishReason>);

fn beam_params(beam_width: usize, n: usize, max_tokens: usize) -> SamplingParams {
    SamplingParams { use_beam_search: true, beam_width, n, ..SamplingParams::greedy(max_tokens) }
}

/// Gathers a beam request's final updates, one per hypothesis (rank order).
fn hypotheses(handle: RequestHandle) -> Vec<Hyp> {
    let mut out: Vec<Option<Hyp>> = Vec::new();
    for u in handle {
        assert!(u.error.is_none(), "request failed: {:?}", u.error);
        assert!(u.finish_reason.is_some(), "beam requests stream nothing before the end: {u:?}");
        let cum = u.cumulative_logprob.expect("a hypothesis carries its cumulative log-probability");
        if out.len() <= u.sample {
            out.resize(u.sample + 1, None);
        }
        assert!(out[u.sample].is_none(), "one update per hypothesis");
        out[u.sample] = Some((u.token_ids, cum, u.finish_reason));
    }
    out.into_iter().map(|h| h.expect("every rank 0..n is sent")).collect()
}

fn submit_beam(ex: &Executor, prompt: &[u32], params: &SamplingParams) -> RequestHandle {
    let mut r = Request::new(prompt.to_vec(), params.clone());
    r.n = params.n;
    ex.submit(r).expect("submits")
}

/// The pure driver over the model, each call feeding the whole history to a fresh sequence.
fn reference(model: &mut Model, prompt: &[u32], params: &SamplingParams) -> Vec<Hypothesis> {
    let config = BeamConfig::from_params(params, &model.eos_ids());
    let engine = &mut model.engine;
    beam_search(prompt, |history| rtllm_tests::last_logits(engine, history), &config).expect("beam search runs")
}

fn assert_matches_reference(got: &[Hyp], want: &[Hypothesis], params: &SamplingParams, what: &str) {
    assert_eq!(got.len(), params.n, "{what}: n hypotheses");
    for (rank, ((tokens, cum, finish), w)) in got.iter().zip(want).enumerate() {
        assert_eq!(tokens, &w.tokens, "{what}: hypothesis {rank} differs from the reference search");
        assert!(
            (cum - w.cum_logprob).abs() < 1e-3 * (1.0 + w.cum_logprob.abs()),
            "{what}: hypothesis {rank} cumulative log-probability {cum} vs reference {}",
            w.cum_logprob
        );
        let eos_end = matches!(finish, Some(FinishReason::Stop(_)));
        assert_eq!(eos_end, tokens.len() < params.max_tokens, "{what}: hypothesis {rank} finish {finish:?}");
    }
    let scores: Vec<f64> =
        got.iter().map(|(t, cum, _)| cum / (t.len() as f64).powf(params.length_penalty as f64)).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{what}: scores sorted best first: {scores:?}");
}

#[test]
fn beam_width_one_equals_greedy() {
    let config = ExecutorConfig::with_max_batch_size(4);
    let Some(model) = load(&config) else { return };
    let ps: Vec<Vec<u32>> = prompts(3);
    let jobs: Vec<_> = ps.iter().map(|p| (p.clone(), SamplingParams::greedy(10))).collect();
    let ex = executor(model, config);
    let want = one_at_a_time(&ex, &jobs);
    let handles: Vec<_> = ps.iter().map(|p| submit_beam(&ex, p, &beam_params(1, 1, 10))).collect();
    for (i, (h, want)) in handles.into_iter().zip(&want).enumerate() {
        let got = hypotheses(h);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].0, want, "prompt {i}: beam width 1 differs from greedy");
    }
    assert_eq!(wait_idle(&ex).kv.used_blocks, 0, "every block is released");
    ex.shutdown().expect("joins");
}

#[test]
fn executor_beam_search_equals_the_reference_search() {
    let config = ExecutorConfig::with_max_batch_size(8);
    let Some(mut model) = load(&config) else { return };
    let ps = fixture_prompts();
    let cases = [
        (ps[0].clone(), beam_params(3, 3, 6)),
        (ps[3].clone(), SamplingParams { length_penalty: 0.5, ..beam_params(4, 2, 7) }),
    ];
    let want: Vec<_> = cases.iter().map(|(p, params)| reference(&mut model, p, params)).collect();
    let ex = executor(model, config);
    for (i, ((p, params), want)) in cases.iter().zip(&want).enumerate() {
        let got = hypotheses(submit_beam(&ex, p, params));
        eprintln!("case {i}: {got:?}");
        assert_matches_reference(&got, want, params, &format!("case {i}"));
    }
    let stats = wait_idle(&ex);
    assert_eq!(stats.kv.used_blocks, 0, "every beam's blocks are released: {stats:?}");
    let too_wide = Request::new(ps[0].clone(), beam_params(9, 1, 4));
    assert!(matches!(ex.submit(too_wide), Err(SubmitError::BadBeamWidth { beam_width: 9, .. })));
    ex.shutdown().expect("joins");
}

#[test]
fn beam_requests_batched_with_others_equal_their_results_alone() {
    // Small blocks so beams cross block boundaries (forks share full blocks, copy partial ones).
    let mut config = ExecutorConfig::with_max_batch_size(8);
    config.build.tokens_per_block = 8;
    config.enable_chunked_prefill = true;
    config.max_num_tokens = Some(32);
    let Some(model) = load(&config) else { return };
    let ex = executor(model, config);
    let ps = prompts(3);
    let beams = [(ps[1].clone(), beam_params(3, 3, 20)), (ps[2].clone(), beam_params(2, 1, 12))];
    let normal = (ps[0].clone(), greedy(16));
    let alone: Vec<Vec<Hyp>> = beams.iter().map(|(p, params)| hypotheses(submit_beam(&ex, p, params))).collect();
    let normal_alone = run_concurrently(&ex, std::slice::from_ref(&normal));
    assert_eq!(wait_idle(&ex).kv.used_blocks, 0);

    let hs: Vec<_> = beams.iter().map(|(p, params)| submit_beam(&ex, p, params)).collect();
    let normal_together = run_concurrently(&ex, std::slice::from_ref(&normal));
    let together: Vec<Vec<Hyp>> = hs.into_iter().map(hypotheses).collect();
    assert_eq!(normal_together, normal_alone, "the normal request is unaffected");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.len(), beams[i].1.n);
        for (rank, (x, y)) in a.iter().zip(t).enumerate() {
            assert_eq!(x.0, y.0, "beam request {i} hypothesis {rank}: batched differs from alone");
            assert!((x.1 - y.1).abs() < 1e-3, "beam request {i} hypothesis {rank}: {} vs {}", x.1, y.1);
            assert_eq!(x.2, y.2);
        }
    }
    let stats = wait_idle(&ex);
    assert_eq!(stats.kv.used_blocks, 0, "every block is released: {stats:?}");
    assert_eq!(stats.completed_requests, 6);

    // A cancelled beam request ends every returned rank as Cancelled and frees all its beams.
    let h = submit_beam(&ex, &ps[1], &beam_params(3, 2, 200));
    std::thread::sleep(std::time::Duration::from_millis(300));
    h.cancel();
    let mut ranks: Vec<usize> = h
        .map(|u| {
            assert_eq!(u.finish_reason, Some(FinishReason::Cancelled));
            u.sample
        })
        .collect();
    ranks.sort_unstable();
    assert_eq!(ranks, vec![0, 1]);
    assert_eq!(wait_idle(&ex).kv.used_blocks, 0, "a cancelled beam request releases its blocks");
    ex.shutdown().expect("joins");
}

#[test]
fn llm_api_returns_the_best_n_hypotheses() {
    let config = ExecutorConfig::default();
    let Some(mut model) = load(&config) else { return };
    let prompt = fixture_prompts()[1].clone();
    let params = beam_params(3, 2, 6);
    let want = reference(&mut model, &prompt, &params);
    drop(model);
    let llm = Llm::builder()
        .registry(Arc::new(rtllm_tests::registry_with(rtllm_tests::builtin_plugin_files())))
        .build()
        .expect("the default model loads");
    let out = llm.generate([rtllm::api::Prompt::Tokens(prompt)], &params).expect("beam search through the Llm API");
    let outputs = &out[0].outputs;
    assert_eq!(outputs.len(), 2);
    for (rank, (o, w)) in outputs.iter().zip(&want).enumerate() {
        assert_eq!(o.index, rank);
        assert_eq!(o.token_ids, w.tokens, "output {rank}");
        assert!((o.cumulative_logprob - w.cum_logprob).abs() < 1e-3, "output {rank}: {o:?}");
        assert!(o.finish_reason.is_some());
    }
    llm.shutdown().expect("joins");
}
