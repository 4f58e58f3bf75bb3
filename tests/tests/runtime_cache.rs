//! KV cache behaviour on the default model: prefix blocks are reused (hit counters move,
//! outputs unchanged), and on a tiny cache each capacity policy admits as it should —
//! max_utilization preempts and resumes with identical outputs, guaranteed_no_evict never
//! preempts and runs fewer at once, static_batch admits nothing while a batch runs.

mod runtime_support;

use rtllm::runtime::{CapacitySchedulerPolicy, Executor, ExecutorConfig, Request};
use rtllm::sampling::SamplingParams;
use runtime_support::*;

#[test]
fn shared_prompt_prefix_is_reused() {
    let config = ExecutorConfig::with_max_batch_size(4);
    let Some(model) = load(&config) else { return };
    let base = fixture_prompts();
    let prefix = base.iter().max_by_key(|p| p.len()).expect("prompts").clone(); // 68 tokens: 2 full blocks
    let jobs: Vec<_> = (0..4)
        .map(|i| {
            let mut p = prefix.clone();
            p.extend_from_slice(&base[i][1..]);
            (p, greedy(8))
        })
        .collect();
    let mut no_reuse = config.clone();
    no_reuse.kv_cache.enable_block_reuse = false;
    let reference = executor(model, no_reuse);
    let want = one_at_a_time(&reference, &jobs);
    assert_eq!(wait_idle(&reference).kv.reused_blocks, 0, "the reference reuses nothing");
    reference.shutdown().expect("joins");
    let Some(model) = load(&config) else { return };
    let ex = executor(model, config);
    // The first computes the prefix; the others find its blocks.
    let first = run_concurrently(&ex, &jobs[..1]);
    let rest = run_concurrently(&ex, &jobs[1..]);
    let got: Vec<_> = first.into_iter().chain(rest).map(|(t, _)| t).collect();
    assert_eq!(got, want, "outputs with reuse equal those without");
    let kv = wait_idle(&ex).kv;
    assert!(kv.reused_blocks >= 6, "three requests reused the two prefix blocks: {kv:?}");
    assert!(kv.hit_rate() > 0.5, "{kv:?}");
    assert_eq!(kv.used_blocks, 0);
    assert!(kv.cached_blocks >= 2, "freed prefix blocks stay cached: {kv:?}");
}

/// Per request: (tokens, first step, last step).
fn run_with_steps(ex: &Executor, jobs: &[(Vec<u32>, SamplingParams)]) -> Vec<(Vec<u32>, u64, u64)> {
    let handles: Vec<_> =
        jobs.iter().map(|(p, s)| ex.submit(Request::new(p.clone(), s.clone())).expect("submits")).collect();
    handles
        .into_iter()
        .map(|h| {
            let (mut tokens, mut first, mut last) = (Vec::new(), u64::MAX, 0);
            for u in h {
                assert!(u.error.is_none(), "{:?}", u.error);
                tokens.extend(u.token_ids);
                first = first.min(u.step);
                last = last.max(u.step);
            }
            (tokens, first, last)
        })
        .collect()
}

#[test]
fn capacity_policies_on_a_tiny_cache() {
    let mut config = ExecutorConfig::with_max_batch_size(8);
    config.kv_cache.max_tokens = Some(8 * 32);
    config.kv_cache.enable_block_reuse = false;
    let Some(model) = load(&config) else { return };
    // Prompts of 41..=63 tokens: 2 blocks at admission, a third once generation passes 64.
    let jobs: Vec<_> =
        prompts(40).into_iter().filter(|p| (41..=63).contains(&p.len())).take(6).map(|p| (p, greedy(24))).collect();
    assert_eq!(jobs.len(), 6, "enough prompts of the right length");
    let reference = executor(model, config.clone());
    let want = one_at_a_time(&reference, &jobs);
    assert_eq!(wait_idle(&reference).preemptions, 0, "one request at a time fits the cache");
    reference.shutdown().expect("joins");
    let run = |policy| {
        let m = load(&config).expect("loaded before");
        let ex = executor(m, ExecutorConfig { capacity_scheduler_policy: policy, ..config.clone() });
        let out = run_with_steps(&ex, &jobs);
        for (i, (tokens, _, _)) in out.iter().enumerate() {
            assert_eq!(tokens, &want[i], "{policy:?}: request {i} differs from its one-at-a-time output");
        }
        let stats = wait_idle(&ex);
        assert_eq!(stats.kv.used_blocks, 0, "{policy:?}: {stats:?}");
        (out, stats)
    };

    let (_, mu) = run(CapacitySchedulerPolicy::MaxUtilization);
    assert!(mu.preemptions > 0, "max_utilization preempts on a tiny cache: {mu:?}");
    assert_eq!(mu.peak_running_requests, 4, "it admits what fits now (2 blocks each): {mu:?}");

    let (_, gne) = run(CapacitySchedulerPolicy::GuaranteedNoEvict);
    assert_eq!(gne.preemptions, 0, "guaranteed_no_evict never preempts: {gne:?}");
    assert!(gne.peak_running_requests < mu.peak_running_requests, "and runs fewer at once: {gne:?}");

    let (out, sb) = run(CapacitySchedulerPolicy::StaticBatch);
    assert_eq!(sb.preemptions, 0);
    // Batches never overlap: two requests started together or one ended before the other began.
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            assert!(
                a.1 == b.1 || a.2 < b.1 || b.2 < a.1,
                "static_batch: steps {:?} and {:?} overlap",
                (a.1, a.2),
                (b.1, b.2)
            );
        }
    }
    assert!(out.iter().any(|a| out.iter().any(|b| a.1 != b.1)), "more than one batch ran");
}
