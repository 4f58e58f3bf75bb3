//! Scheduler decisions on synthetic requests (no engine): admission per policy, preemption
//! order, resumption, and the micro-batch token budget with and without chunking.

use super::*;
use crate::runtime::kv_cache::KvCacheConfig;

const BS: usize = 4;

fn config(policy: CapacitySchedulerPolicy, chunked: bool) -> SchedulerConfig {
    SchedulerConfig {
        capacity_scheduler_policy: policy,
        max_batch_size: 8,
        max_num_tokens: 16,
        enable_chunked_prefill: chunked,
        max_logits_rows: 8,
        max_seq_len: 64,
    }
}

fn kv(blocks: usize) -> KvCacheManager {
    KvCacheManager::new(&KvCacheConfig { max_tokens: None, enable_block_reuse: false }, blocks, BS)
}

fn req(id: u64, prompt: usize, max_tokens: usize) -> LlmRequest {
    LlmRequest::new(id, id * 100, (0..prompt as u32).map(|t| t + id as u32 * 1000).collect(), 1, max_tokens)
}

/// Pretends a step computed every scheduled chunk and sampled a token where logits came.
fn run_step(s: &mut Scheduler, kv: &mut KvCacheManager) -> Vec<ScheduledChunk> {
    let chunks = schedule_micro_batch(&s.config, &s.running);
    for c in &chunks {
        let r = s.running_mut(c.request).unwrap();
        let seq = r.seqs.iter_mut().find(|q| q.id == c.seq).unwrap();
        seq.num_computed += c.len;
        kv.commit(seq.id, &seq.tokens, seq.num_computed);
        if !c.prompt_rows.is_empty() {
            r.scored_prompt_until(c.prompt_rows.end);
        }
        let seq = r.seqs.iter_mut().find(|q| q.id == c.seq).unwrap();
        if c.want_logits {
            seq.tokens.push(7);
            if seq.generated() >= r.max_tokens {
                seq.finished = true;
            }
        }
    }
    let done: Vec<u64> = s.running.iter().filter(|r| r.is_finished()).map(|r| r.id).collect();
    for id in done {
        s.remove(id, kv);
    }
    chunks
}

#[test]
fn max_utilization_admits_what_fits_now() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, true));
    let mut kv = kv(6);
    for id in 1..=4 {
        s.enqueue(req(id, 7, 20)); // 2 blocks each now, 7 in the worst case
    }
    let out = s.schedule_capacity(&mut kv);
    assert_eq!(out.admitted, vec![1, 2, 3]);
    assert_eq!(s.waiting.len(), 1);
}

#[test]
fn guaranteed_no_evict_admits_by_worst_case() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::GuaranteedNoEvict, true));
    let mut kv = kv(6);
    for id in 1..=3 {
        s.enqueue(req(id, 7, 5)); // worst case 12 tokens = 3 blocks
    }
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![1, 2]);
    // Runs to completion without ever preempting; the third is admitted once room is back.
    let mut admitted_third = false;
    for _ in 0..20 {
        run_step(&mut s, &mut kv);
        let out = s.schedule_capacity(&mut kv);
        assert!(out.preempted.is_empty());
        admitted_third |= out.admitted.contains(&3);
    }
    assert!(admitted_third && s.is_idle());
    assert_eq!(s.preemptions, 0);
}

#[test]
fn static_batch_admits_nothing_while_a_batch_runs() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::StaticBatch, true));
    let mut kv = kv(32);
    s.enqueue(req(1, 5, 2));
    s.enqueue(req(2, 5, 6));
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![1, 2]);
    s.enqueue(req(3, 5, 2));
    for _ in 0..6 {
        run_step(&mut s, &mut kv);
        if s.running.is_empty() {
            break;
        }
        assert!(s.schedule_capacity(&mut kv).admitted.is_empty(), "nothing joins a running batch");
    }
    assert!(s.running.is_empty());
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![3]);
}

#[test]
fn max_utilization_preempts_the_latest_and_resumes_it() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, true));
    let mut kv = kv(4);
    s.enqueue(req(1, 8, 6)); // 2 blocks now, grows to 4
    s.enqueue(req(2, 8, 6));
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![1, 2]);
    let mut preempted = Vec::new();
    for _ in 0..40 {
        run_step(&mut s, &mut kv);
        let out = s.schedule_capacity(&mut kv);
        preempted.extend(out.preempted);
        if s.is_idle() {
            break;
        }
    }
    assert!(s.is_idle(), "everything completes");
    assert_eq!(preempted.first(), Some(&2), "the most recently admitted is paused first");
    assert!(s.preemptions > 0);
}

#[test]
fn a_request_larger_than_the_cache_fails_and_others_go_on() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, true));
    let mut kv = kv(2);
    s.enqueue(req(1, 20, 2));
    s.enqueue(req(2, 3, 2));
    let out = s.schedule_capacity(&mut kv);
    assert_eq!(out.failed.len(), 1);
    assert_eq!(out.failed[0].0, 1);
    assert!(out.failed[0].1.contains("KV cache blocks"));
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![2]);
}

#[test]
fn micro_batch_puts_generation_first_and_chunks_context() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, true));
    let mut kv = kv(32);
    s.enqueue(req(1, 5, 4));
    s.schedule_capacity(&mut kv);
    run_step(&mut s, &mut kv); // request 1 is now generating
    s.enqueue(req(2, 30, 4));
    s.schedule_capacity(&mut kv);
    let chunks = schedule_micro_batch(&s.config, &s.running);
    assert_eq!(
        chunks[0],
        ScheduledChunk { request: 1, seq: 100, start: 5, len: 1, want_logits: true, prompt_rows: 0..0 }
    );
    assert_eq!(
        chunks[1],
        ScheduledChunk { request: 2, seq: 200, start: 0, len: 15, want_logits: false, prompt_rows: 0..0 }
    );
    let mut cfg = s.config.clone();
    cfg.enable_chunked_prefill = false;
    assert_eq!(schedule_micro_batch(&cfg, &s.running).len(), 2, "longer than max_num_tokens: chunked anyway");
    cfg.max_num_tokens = 30;
    let unchunked = schedule_micro_batch(&cfg, &s.running);
    assert_eq!(unchunked.len(), 1, "29 tokens left, 30 wanted: the context waits");
}

#[test]
fn unbounded_max_tokens_is_capped_by_max_seq_len_without_overflow() {
    // `max_tokens = usize::MAX` means "until max_seq_len"; the worst case must saturate.
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::GuaranteedNoEvict, true));
    let mut kv = kv(32);
    s.enqueue(req(1, 7, usize::MAX)); // worst case max_seq_len 64 = 16 blocks
    s.enqueue(req(2, 7, usize::MAX));
    s.enqueue(req(3, 7, usize::MAX));
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![1, 2]);
    assert_eq!(s.waiting.len(), 1);
}

#[test]
fn a_priority_request_jumps_the_queue_into_its_reserved_slot_and_runs_first() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, true));
    let mut kv = kv(64);
    for id in 1..=9 {
        s.enqueue(req(id, 1, 50));
    }
    s.schedule_capacity(&mut kv);
    assert_eq!(s.running.len(), 8, "a full batch");
    let mut probe = req(99, 1, 1);
    probe.priority = true;
    s.enqueue(probe);
    assert_eq!(s.waiting.front().map(|r| r.id), Some(99), "ahead of request 9");
    let out = s.schedule_capacity(&mut kv);
    assert_eq!(out.admitted, vec![99], "the reserved slot, beyond max_batch_size");
    let chunks = run_step(&mut s, &mut kv);
    assert_eq!(chunks.len(), 8, "a step still takes max_batch_size sequences");
    assert_eq!(chunks[0].request, 99, "the probe first");
    assert!(s.running.iter().all(|r| r.id != 99), "the probe finished in one step");
    // A second probe waits for the first's slot only, never for user requests.
    let (mut a, mut b) = (req(100, 1, 1), req(101, 1, 1));
    a.priority = true;
    b.priority = true;
    s.enqueue(a);
    s.enqueue(b);
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![100]);
    run_step(&mut s, &mut kv);
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![101]);
}

#[test]
fn a_static_batch_still_admits_a_priority_request() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::StaticBatch, true));
    let mut kv = kv(64);
    s.enqueue(req(1, 1, 50));
    s.schedule_capacity(&mut kv);
    s.enqueue(req(2, 1, 50));
    let mut probe = req(99, 1, 1);
    probe.priority = true;
    s.enqueue(probe);
    assert_eq!(s.schedule_capacity(&mut kv).admitted, vec![99], "the probe, not request 2");
}

#[test]
fn scored_prompts_are_chunked_to_the_logits_rows() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, false));
    s.config.max_logits_rows = 4;
    let mut kv = kv(32);
    // A 14-token prompt scored from position 6: rows at positions 5..13, then the last (13).
    s.enqueue(req(1, 14, 2).score_prompt_from(6));
    s.enqueue(req(2, 3, 2));
    s.schedule_capacity(&mut kv);
    let mut steps = Vec::new();
    while !s.running.is_empty() {
        let chunks = run_step(&mut s, &mut kv);
        assert!(chunks.iter().map(ScheduledChunk::rows).sum::<usize>() <= 4, "{chunks:?}");
        steps.push(
            chunks
                .iter()
                .map(|c| (c.request, c.start, c.len, c.prompt_rows.clone(), c.want_logits))
                .collect::<Vec<_>>(),
        );
    }
    // Step 1: positions 0..5 cost no row, 5..9 take the 4 rows; request 2 (3 tokens, one row)
    // waits, chunking off, though its tokens would fit.
    assert_eq!(steps[0], vec![(1, 0, 9, 5..9, false)]);
    assert_eq!(steps[1], vec![(1, 9, 4, 9..13, false)]);
    // The last prompt token's row samples; request 2 joins.
    assert_eq!(steps[2], vec![(1, 13, 1, 0..0, true), (2, 0, 3, 0..0, true)]);
}

#[test]
fn scored_positions_are_not_taken_from_the_prefix_cache() {
    let mut s = Scheduler::new(config(CapacitySchedulerPolicy::MaxUtilization, true));
    let mut kv = KvCacheManager::new(&KvCacheConfig { max_tokens: None, enable_block_reuse: true }, 32, BS);
    let prompt: Vec<u32> = (0..13).collect();
    s.enqueue(LlmRequest::new(1, 100, prompt.clone(), 1, 1));
    s.schedule_capacity(&mut kv);
    while !s.running.is_empty() {
        run_step(&mut s, &mut kv);
    }
    // Unscored, the same prompt starts from its 3 cached blocks.
    s.enqueue(LlmRequest::new(2, 200, prompt.clone(), 1, 1));
    s.schedule_capacity(&mut kv);
    assert_eq!(s.running[0].seqs[0].num_computed, 12);
    s.remove(2, &mut kv);
    // Scored from position 6 (rows from 5): only the first block (4 tokens) may be reused.
    s.enqueue(LlmRequest::new(3, 300, prompt, 1, 1).score_prompt_from(6));
    s.schedule_capacity(&mut kv);
    assert_eq!(s.running[0].seqs[0].num_computed, 4);
    let chunks = schedule_micro_batch(&s.config, &s.running);
    assert_eq!((chunks[0].start, chunks[0].prompt_rows.clone()), (4, 5..12));
}

#[test]
fn scoring_range_edges() {
    // Nothing to score past the last prompt token; position 0 is never scored.
    assert_eq!(req(1, 5, 1).score_prompt_from(5).prompt_logits_from, None);
    assert_eq!(req(1, 5, 1).score_prompt_from(0).prompt_logits_from, None);
    let mut r = req(1, 5, 1).score_prompt_from(1);
    assert_eq!(r.prompt_rows(&r.seqs[0].clone()), 0..4);
    r.scored_prompt_until(2);
    assert_eq!(r.prompt_rows(&r.seqs[0].clone()), 2..4);
    r.scored_prompt_until(4);
    assert_eq!(r.prompt_logits_from, None);
    assert_eq!(r.reuse_limit(), usize::MAX);
}
