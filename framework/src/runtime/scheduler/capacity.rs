//! The capacity scheduler: makes room for every running sequence's next tokens (preempting
//! the most recently admitted request when the cache runs out), then admits waiting requests
//! under the `capacity_scheduler_policy` (a priority request also into its reserved slot).

use super::{CapacityOutcome, CapacitySchedulerPolicy, LlmRequest, Scheduler, PRIORITY_SLOTS};
use crate::runtime::kv_cache::KvCacheManager;

impl Scheduler {
    /// One capacity step: grow (or preempt), then admit.
    pub fn schedule_capacity(&mut self, kv: &mut KvCacheManager) -> CapacityOutcome {
        let mut out = CapacityOutcome::default();
        self.make_room(kv, &mut out);
        // A step that had to preempt admits nothing, so the freed room goes to running work.
        if out.preempted.is_empty() {
            self.admit(kv, &mut out);
        }
        if self.running.is_empty() && out.admitted.is_empty() {
            // Nothing runs and the head of the queue does not fit an empty cache: it never will.
            if let Some(head) = self.waiting.pop_front() {
                let need: usize =
                    head.seqs.iter().map(|s| kv.admission_cost_reusing(&s.tokens, head.reuse_limit())).sum();
                let why = format!(
                    "request needs {need} KV cache blocks (and {} batch slots); the cache has {} of {} tokens and max_batch_size is {}",
                    head.batch_slots(),
                    kv.total_blocks(),
                    kv.tokens_per_block(),
                    self.config.max_batch_size
                );
                out.failed.push((head.id, why));
            }
        }
        out
    }

    fn make_room(&mut self, kv: &mut KvCacheManager, out: &mut CapacityOutcome) {
        let mut i = 0;
        while i < self.running.len() {
            let need: usize =
                self.running[i].live_seqs().map(|s| kv.blocks_needed(s.id, s.num_computed, s.tokens.len())).sum();
            if need <= kv.available_blocks() {
                for s in self.running[i].seqs.iter().filter(|s| !s.finished) {
                    match kv.prepare_write(s.id, s.num_computed, s.tokens.len()) {
                        Ok(Some((src, dst))) => out.copies.push((self.running[i].id, src, dst)),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(request = self.running[i].id, "KV growth failed after the check: {e}")
                        }
                    }
                }
                i += 1;
                continue;
            }
            if self.running.len() == 1 {
                // Alone and still too big: the cache can never hold it.
                let req = self.running.remove(i);
                for s in &req.seqs {
                    kv.free_sequence(s.id);
                }
                let len = req.live_seqs().map(|s| s.tokens.len()).max().unwrap_or(0);
                out.failed.push((
                    req.id,
                    format!("the KV cache ({} blocks) cannot hold the sequence at {len} tokens", kv.total_blocks()),
                ));
                continue;
            }
            // Pause the most recently admitted request (possibly this one; a priority one only
            // when nothing else is left) and retry.
            let victim = self.running.iter().rposition(|r| !r.priority).unwrap_or(self.running.len() - 1);
            self.preempt(victim, kv, out);
        }
    }

    fn preempt(&mut self, index: usize, kv: &mut KvCacheManager, out: &mut CapacityOutcome) {
        let mut req = self.running.remove(index);
        for s in req.seqs.iter_mut() {
            kv.free_sequence(s.id);
            s.num_computed = 0;
        }
        req.preemptions += 1;
        self.preemptions += 1;
        tracing::debug!(request = req.id, "preempted under KV cache pressure");
        out.preempted.push(req.id);
        self.waiting.push_front(req);
    }

    fn admit(&mut self, kv: &mut KvCacheManager, out: &mut CapacityOutcome) {
        let policy = self.config.capacity_scheduler_policy;
        // A static batch admits nothing new while it runs, but a priority request.
        let batch_closed = policy == CapacitySchedulerPolicy::StaticBatch && !self.running.is_empty();
        let mut slots: usize = self.running.iter().map(LlmRequest::batch_slots).sum();
        let mut priority_slots: usize = self.running.iter().filter(|r| r.priority).map(LlmRequest::batch_slots).sum();
        let mut reserved: usize = self.running.iter().map(|r| self.remaining_worst(r, kv)).sum();
        while let Some(head) = self.waiting.front() {
            let in_reserved_slot = head.priority && priority_slots + head.batch_slots() <= PRIORITY_SLOTS;
            if (batch_closed || slots + head.batch_slots() > self.config.max_batch_size) && !in_reserved_slot {
                break;
            }
            let cost: usize = head.live_seqs().map(|s| kv.admission_cost_reusing(&s.tokens, head.reuse_limit())).sum();
            let fits = match policy {
                CapacitySchedulerPolicy::MaxUtilization => cost <= kv.available_blocks(),
                CapacitySchedulerPolicy::GuaranteedNoEvict | CapacitySchedulerPolicy::StaticBatch => {
                    let worst = self.remaining_worst(head, kv).max(cost);
                    reserved + worst <= kv.available_blocks()
                }
            };
            if !fits {
                break;
            }
            let Some(mut req) = self.waiting.pop_front() else { break };
            let mut added = Vec::new();
            let mut failed = None;
            let reuse_limit = req.reuse_limit();
            for s in req.seqs.iter_mut().filter(|s| !s.finished) {
                match kv.add_sequence_reusing(s.id, &s.tokens, reuse_limit) {
                    Ok(reused) => {
                        s.num_computed = reused;
                        added.push(s.id);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                // Cannot happen after the cost check; undo and leave the request waiting.
                tracing::error!(request = req.id, "admission failed after the check: {e}");
                for id in added {
                    kv.free_sequence(id);
                }
                for s in req.seqs.iter_mut() {
                    s.num_computed = 0;
                }
                self.waiting.push_front(req);
                break;
            }
            slots += req.batch_slots();
            if req.priority {
                priority_slots += req.batch_slots();
            }
            reserved += self.remaining_worst(&req, kv);
            out.admitted.push(req.id);
            self.running.push(req);
        }
    }
}
