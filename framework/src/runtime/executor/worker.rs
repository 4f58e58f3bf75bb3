//! The executor loop: fetch new requests, drop cancelled ones, schedule (capacity, then
//! micro-batch), pack one `StepBatch` of decode tokens and prefill chunks, forward, score the
//! prompt positions a request asked log-probabilities of (each row scored and dropped at once),
//! sample each sequence that reached its last token (forking `n > 1` samples after the prompt), apply the
//! stop checks (eos, stop ids, stop strings, lengths: see `client`), stream updates, and free
//! a finished sequence's blocks in the step that finished it. Beam-search requests take their
//! steps through `beam::BeamState` instead of the per-sample samplers.

use super::beam::BeamProgress;
use super::client::Client;
use super::queue::QueueSlot;
use super::request::{OutputUpdate, Request, RequestError};
use super::updates::UpdateSender;
use super::{Command, ExecutorStats};
use crate::engine::{RowSampling, StepBatch};
use crate::parallel::ModelRunner;
use crate::runtime::kv_cache::KvCacheManager;
use crate::runtime::scheduler::{schedule_micro_batch, LlmRequest, ScheduledChunk, Scheduler, SeqState};
use crate::sampling::processors::Candidate;
use crate::sampling::score_row;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

/// A submitted request on its way to the loop.
pub(crate) struct NewRequest {
    pub id: u64,
    pub request: Request,
    pub updates: UpdateSender,
    pub cancelled: Arc<AtomicBool>,
    /// Its place in the waiting queue, given back when it is admitted (or dropped).
    pub slot: Arc<QueueSlot>,
}

pub(super) struct Worker<R> {
    engine: R,
    kv: KvCacheManager,
    scheduler: Scheduler,
    eos: Vec<u32>,
    /// Detokenizes outputs for their text and stop strings (None: token ids only).
    tokenizer: Option<Arc<Tokenizer>>,
    commands: Receiver<Command>,
    stats: Arc<Mutex<ExecutorStats>>,
    clients: HashMap<u64, Client>,
    /// Queue places of the requests not yet admitted.
    slots: HashMap<u64, Arc<QueueSlot>>,
    batch: StepBatch,
    logits: Vec<f32>,
    /// Tokens the device sampled this step (one per logits row), when it did.
    device_tokens: Vec<i32>,
    /// Per-row parameters for the device sampler (reused).
    device_rows: Vec<RowSampling>,
    /// One logits row, copied so a sampler can apply penalties in place.
    row_scratch: Vec<f32>,
    /// Scratch of the prompt scorer's top-k.
    score_scratch: Vec<Candidate>,
    step: u64,
    next_seq: u64,
    peak_running: usize,
    completed: u64,
    generated: u64,
}

impl<R: ModelRunner> Worker<R> {
    pub fn new(
        engine: R,
        kv: KvCacheManager,
        scheduler: Scheduler,
        eos: Vec<u32>,
        tokenizer: Option<Arc<Tokenizer>>,
        commands: Receiver<Command>,
        stats: Arc<Mutex<ExecutorStats>>,
    ) -> Worker<R> {
        Worker {
            engine,
            kv,
            scheduler,
            eos,
            tokenizer,
            commands,
            stats,
            clients: HashMap::new(),
            slots: HashMap::new(),
            batch: StepBatch::default(),
            logits: Vec::new(),
            device_tokens: Vec::new(),
            device_rows: Vec::new(),
            row_scratch: Vec::new(),
            score_scratch: Vec::new(),
            step: 0,
            next_seq: 1,
            peak_running: 0,
            completed: 0,
            generated: 0,
        }
    }

    pub fn run(&mut self) {
        while self.intake() {
            self.drop_cancelled();
            // A bug in one step must not take the executor down: fail the batch, keep serving.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.step_once())) {
                self.recover_from_panic(panic_message(payload.as_ref()));
            }
            self.drop_cancelled();
            self.publish_stats();
        }
        tracing::debug!(unfinished = self.clients.len(), "executor loop stopped");
    }

    /// Takes pending commands (blocking while there is no work); false on shutdown.
    fn intake(&mut self) -> bool {
        if self.scheduler.is_idle() {
            self.publish_stats();
            match self.commands.recv() {
                Ok(cmd) => {
                    if !self.handle(cmd) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => {
                    if !self.handle(cmd) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit(new) => {
                let NewRequest { id, request, updates, cancelled, slot } = *new;
                let seq = self.next_seq;
                self.next_seq += 1;
                let max_seq_len = self.scheduler.config.max_seq_len;
                let tx = updates.clone();
                let client = match Client::new(&request, &self.eos, self.tokenizer.clone(), max_seq_len, tx, cancelled)
                {
                    Ok(client) => client,
                    Err(e) => {
                        // `submit` validated the params, so this is a bug, not bad input.
                        slot.release();
                        let _ = updates.send(OutputUpdate::failed(RequestError::Unschedulable(e), self.step));
                        return true;
                    }
                };
                let params = &request.params;
                // A beam request holds `beam_width` sequences once past its prompt.
                let seqs = if params.use_beam_search { params.beam_width } else { request.n };
                let max_tokens = params.max_tokens;
                let mut queued = LlmRequest::new(id, seq, request.prompt_ids, seqs, max_tokens);
                if let Some(p) = &params.prompt_logprobs {
                    queued = queued.score_prompt_from(p.start);
                }
                queued.priority = request.priority;
                self.scheduler.enqueue(queued);
                self.clients.insert(id, client);
                self.slots.insert(id, slot);
                true
            }
            Command::Wake => true,
            Command::Shutdown => false,
        }
    }

    /// Removes cancelled requests (their blocks are freed) with a final `Cancelled` update.
    fn drop_cancelled(&mut self) {
        let ids: Vec<u64> =
            self.clients.iter().filter(|(_, c)| c.cancelled.load(Ordering::Acquire)).map(|(&id, _)| id).collect();
        for id in ids {
            let req = self.scheduler.remove(id, &mut self.kv);
            if let Some(mut client) = self.forget(id) {
                let samples: Vec<usize> = match (&client.beam, &req) {
                    (Some(b), _) => (0..b.num_outputs()).collect(),
                    (None, Some(r)) => r.live_seqs().map(|s| s.index).collect(),
                    (None, None) => vec![0],
                };
                client.send_cancelled(samples.into_iter(), self.step);
            }
        }
    }

    /// Ends a request with an error update (it is already out of the scheduler).
    fn fail(&mut self, id: u64, error: RequestError) {
        tracing::warn!(request = id, "{error}");
        if let Some(client) = self.forget(id) {
            client.send(OutputUpdate::failed(error, self.step));
        }
    }

    /// After a panic in a step: fails every running request (freeing its blocks) and any
    /// client the scheduler no longer holds; waiting requests stay queued.
    fn recover_from_panic(&mut self, msg: String) {
        tracing::error!("executor step panicked: {msg}");
        let running: Vec<u64> = self.scheduler.running.iter().map(|r| r.id).collect();
        let orphans: Vec<u64> = self
            .clients
            .keys()
            .copied()
            .filter(|&id| {
                !self.scheduler.running.iter().any(|r| r.id == id) && !self.scheduler.waiting.iter().any(|r| r.id == id)
            })
            .collect();
        let error = RequestError::Internal(format!("the executor step panicked: {msg}"));
        for id in running.into_iter().chain(orphans) {
            // A second panic here (corrupt state) must not escape either.
            let removed = catch_unwind(AssertUnwindSafe(|| self.scheduler.remove(id, &mut self.kv)));
            if removed.is_err() {
                tracing::error!(request = id, "freeing the request's blocks panicked as well");
            }
            self.fail(id, error.clone());
        }
    }

    fn step_once(&mut self) {
        let out = self.scheduler.schedule_capacity(&mut self.kv);
        for id in &out.admitted {
            if let Some(slot) = self.slots.remove(id) {
                slot.release();
            }
        }
        for (id, why) in out.failed {
            self.fail(id, RequestError::Unschedulable(why));
        }
        let mut copy_failed: Vec<(u64, String)> = Vec::new();
        for (id, src, dst) in out.copies {
            if let Err(e) = self.engine.copy_kv_block(src as usize, dst as usize) {
                copy_failed.push((id, format!("copy-on-write of KV block {src} -> {dst} failed: {e}")));
            }
        }
        for (id, why) in copy_failed {
            if self.clients.contains_key(&id) {
                self.scheduler.remove(id, &mut self.kv);
                self.fail(id, RequestError::Internal(why));
            }
        }
        self.peak_running = self.peak_running.max(self.scheduler.running.len());
        let chunks = schedule_micro_batch(&self.scheduler.config, &self.scheduler.running);
        if chunks.is_empty() {
            return;
        }
        self.batch.clear();
        for c in &chunks {
            let tokens = self
                .scheduler
                .running
                .iter()
                .find(|r| r.id == c.request)
                .and_then(|r| r.seqs.iter().find(|s| s.id == c.seq));
            if let Some(s) = tokens {
                self.batch.push_sequence_with_rows(
                    &s.tokens[c.start..c.start + c.len],
                    c.start,
                    self.kv.block_table(s.id),
                    c.prompt_rows.clone(),
                    c.want_logits,
                );
            }
        }
        if self.batch.logits_indices.is_empty() {
            // The graph always computes at least one logits row; this one is discarded.
            self.batch.logits_indices.push(0);
        }
        self.step += 1;
        let on_device = self.engine.samples_on_device() && self.device_sampling_rows(&chunks);
        self.device_tokens.clear();
        let result = if on_device {
            self.engine.forward_sample(&self.batch, &self.device_rows).map(|t| self.device_tokens.extend_from_slice(t))
        } else {
            self.engine.forward(&self.batch).map(|logits| {
                self.logits.clear();
                self.logits.extend_from_slice(logits);
            })
        };
        match result {
            Ok(()) => {}
            Err(e) => {
                let msg = e.to_string();
                let mut ids: Vec<u64> = chunks.iter().map(|c| c.request).collect();
                ids.dedup();
                for id in ids {
                    self.scheduler.remove(id, &mut self.kv);
                    self.fail(id, RequestError::Engine(msg.clone()));
                }
                return;
            }
        }
        self.apply(&chunks);
    }

    /// Fills `device_rows` when every logits row of this step can be sampled on the device: no
    /// beam search, no row shared by several samples (an unforked n > 1 request), and no
    /// sampling setting only the host implements. Seeds are drawn only when all qualify.
    fn device_sampling_rows(&mut self, chunks: &[ScheduledChunk]) -> bool {
        if chunks.iter().any(|c| !c.prompt_rows.is_empty()) {
            // Scoring prompt positions needs their logits on the host.
            return false;
        }
        let mut rows: Vec<(u64, u64)> = Vec::new();
        for c in chunks.iter().filter(|c| c.want_logits) {
            let (Some(req), Some(client)) =
                (self.scheduler.running.iter().find(|r| r.id == c.request), self.clients.get(&c.request))
            else {
                return false;
            };
            let Some(seq) = req.seqs.iter().find(|s| s.id == c.seq) else {
                return false;
            };
            let shared_row = !req.forked && req.n > 1;
            let eligible = client.samplers.get(seq.index).is_some_and(|s| s.device_eligible());
            if client.beam.is_some() || shared_row || !eligible {
                return false;
            }
            rows.push((c.request, seq.index as u64));
        }
        self.device_rows.clear();
        for (request, index) in rows {
            if let Some(sampler) = self.clients.get_mut(&request).and_then(|c| c.samplers.get_mut(index as usize)) {
                self.device_rows.push(sampler.device_params());
            }
        }
        // The padding row a logits-free step computes is sampled greedily and discarded.
        while self.device_rows.len() < self.batch.logits_indices.len() {
            self.device_rows.push(RowSampling::greedy());
        }
        true
    }

    /// Advances every scheduled sequence past its chunk and samples where logits came back
    /// (or takes the token the device sampled).
    fn apply(&mut self, chunks: &[ScheduledChunk]) {
        let vocab = self.engine.vocab_size();
        let max_seq_len = self.scheduler.config.max_seq_len;
        let mut row = 0;
        let mut failed: Vec<(u64, RequestError)> = Vec::new();
        for c in chunks {
            let (Some(req), Some(client)) =
                (self.scheduler.running.iter_mut().find(|r| r.id == c.request), self.clients.get_mut(&c.request))
            else {
                continue;
            };
            let Some(pos) = req.seqs.iter().position(|s| s.id == c.seq) else {
                continue;
            };
            let seq = &mut req.seqs[pos];
            seq.num_computed += c.len;
            self.kv.commit(seq.id, &seq.tokens, seq.num_computed);
            if !c.prompt_rows.is_empty() {
                let spec = client.params.prompt_logprobs.clone().unwrap_or_default();
                let mut scored = Vec::with_capacity(c.prompt_rows.len());
                for p in c.prompt_rows.clone() {
                    let logits = &self.logits[row * vocab..(row + 1) * vocab];
                    row += 1;
                    let token = seq.tokens.get(p + 1).copied().unwrap_or_default();
                    scored.push(score_row(logits, p + 1, token, &spec, &mut self.score_scratch));
                }
                req.scored_prompt_until(c.prompt_rows.end);
                client.send(OutputUpdate::prompt_scores(scored, self.step));
            }
            if !c.want_logits {
                continue;
            }
            let device_token = self.device_tokens.get(row).map(|&t| t as u32);
            let logits = if device_token.is_some() { &[][..] } else { &self.logits[row * vocab..(row + 1) * vocab] };
            row += 1;
            if let Some(beam) = client.beam.as_mut() {
                match beam.on_logits(req, pos, logits, &mut self.kv, &mut self.next_seq, self.step) {
                    Ok(BeamProgress::Waiting) => {}
                    Ok(BeamProgress::Stepped { tokens }) => self.generated += tokens as u64,
                    Ok(BeamProgress::Done { tokens, updates }) => {
                        self.generated += tokens as u64;
                        client.send_beam_results(updates);
                    }
                    Err(e) => failed.push((req.id, RequestError::Unschedulable(format!("beam search: {e}")))),
                }
                continue;
            }
            let mut sampled = vec![pos];
            if !req.forked {
                req.forked = true;
                let mut fork_error = None;
                for index in 1..req.n {
                    let parent = &req.seqs[pos];
                    let child = SeqState { id: self.next_seq, index, ..parent.clone() };
                    self.next_seq += 1;
                    if let Err(e) = self.kv.fork(parent.id, child.id) {
                        fork_error = Some(format!("forking sample {index} of {} failed: {e}", req.n));
                        break;
                    }
                    req.seqs.push(child);
                    sampled.push(req.seqs.len() - 1);
                }
                if let Some(why) = fork_error {
                    // Every sample must come back: fail the request rather than drop one.
                    failed.push((req.id, RequestError::Internal(why)));
                    continue;
                }
            }
            for i in sampled {
                let seq = &mut req.seqs[i];
                let Some(sampler) = client.samplers.get_mut(seq.index) else {
                    continue;
                };
                let sampled = match device_token {
                    Some(id) => sampler.record_device_sample(id),
                    None => {
                        self.row_scratch.clear();
                        self.row_scratch.extend_from_slice(logits);
                        sampler.sample(&mut self.row_scratch)
                    }
                };
                seq.tokens.push(sampled.id);
                self.generated += 1;
                if client.send_token(seq.index, sampled, seq.tokens.len() >= max_seq_len, self.step) {
                    seq.finished = true;
                    self.kv.free_sequence(seq.id);
                }
            }
        }
        for (id, error) in failed {
            self.scheduler.remove(id, &mut self.kv);
            self.fail(id, error);
        }
        let done: Vec<u64> = self.scheduler.running.iter().filter(|r| r.is_finished()).map(|r| r.id).collect();
        for id in done {
            self.scheduler.remove(id, &mut self.kv);
            self.forget(id);
            self.completed += 1;
        }
    }

    /// Drops a request's client and gives back its queue place if it still held one.
    fn forget(&mut self, id: u64) -> Option<Client> {
        if let Some(slot) = self.slots.remove(&id) {
            slot.release();
        }
        self.clients.remove(&id)
    }

    fn publish_stats(&self) {
        let s = ExecutorStats {
            running_requests: self.scheduler.running.len(),
            waiting_requests: self.scheduler.waiting.len(),
            peak_running_requests: self.peak_running,
            steps: self.step,
            preemptions: self.scheduler.preemptions,
            completed_requests: self.completed,
            generated_tokens: self.generated,
            kv: self.kv.stats(),
        };
        match self.stats.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
}

/// The text of a panic payload (`&str` or `String`; anything else is unnamed).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
