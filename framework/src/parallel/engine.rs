//! `TensorParallelEngine`: a model split across `tensor_parallel_size` ranks, one worker thread
//! per rank (see `rank`), driven in lockstep: every step goes to every rank with the same
//! inputs (the executor's block manager is shared, so block ids are the same on every rank),
//! and the step's result is rank 0's (all ranks hold the gathered logits). Device sampling:
//! rank 0 samples and returns tokens; the others run the same step and discard theirs.

use super::rank::{rank_main, Command, Output, RankBuild, RankInfo, Reply, Step};
use super::runner::ModelRunner;
use crate::engine::{EngineError, EngineLimits, LoadError, RowSampling, StepBatch};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A rank's worker as the driver sees it.
struct RankHandle {
    rank: usize,
    commands: Option<Sender<Command>>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl RankHandle {
    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.commands
            .as_ref()
            .and_then(|c| c.send(command).ok())
            .ok_or_else(|| EngineError::Setup(format!("tensor-parallel rank {} has stopped", self.rank)))
    }

    fn done(&self) -> Result<Output, EngineError> {
        match self.replies.recv() {
            Ok(Reply::Done(result)) => result,
            Ok(Reply::Built(_)) => Err(EngineError::Setup(format!("rank {} replied out of turn", self.rank))),
            Err(_) => Err(EngineError::Setup(format!("tensor-parallel rank {} has stopped", self.rank))),
        }
    }
}

/// A model split across ranks that runs as one. See the module docs.
pub struct TensorParallelEngine {
    ranks: Vec<RankHandle>,
    limits: EngineLimits,
    vocab_size: usize,
    samples_on_device: bool,
    group: String,
    /// This step's inputs (its buffers are reused once the ranks have dropped their handles).
    step: Arc<Step>,
    logits: Vec<f32>,
    tokens: Vec<i32>,
    /// Set when a step failed on some rank: the ranks may no longer be in step.
    broken: Option<String>,
}

/// A process-unique communicator id for a new group.
pub(crate) fn new_group_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("tp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl TensorParallelEngine {
    /// Starts one worker per rank build and waits until every rank has built its engine.
    /// The ranks must form one group (`builds[r].parallel.tp_rank == r`).
    pub(crate) fn start(builds: Vec<RankBuild>) -> Result<TensorParallelEngine, LoadError> {
        let group = builds.first().map(|b| b.parallel.group.clone()).unwrap_or_default();
        let mut ranks = Vec::with_capacity(builds.len());
        for spec in builds {
            let rank = spec.parallel.tp_rank;
            let (command_tx, command_rx) = channel();
            let (reply_tx, reply_rx) = channel();
            let thread = std::thread::Builder::new()
                .name(format!("rtllm-tp-rank-{rank}"))
                .spawn(move || rank_main(spec, command_rx, reply_tx))
                .map_err(|e| LoadError::Config(format!("cannot start the thread of rank {rank}: {e}")))?;
            ranks.push(RankHandle { rank, commands: Some(command_tx), replies: reply_rx, thread: Some(thread) });
        }
        let (infos, first_error) = wait_built(&ranks);
        let mut engine = TensorParallelEngine {
            limits: infos.first().map(|i| i.limits.clone()).unwrap_or(EngineLimits {
                max_batch_size: 0,
                max_num_tokens: 0,
                max_seq_len: 0,
                tokens_per_block: 0,
                num_kv_blocks: 0,
            }),
            vocab_size: infos.first().map_or(0, |i| i.vocab_size),
            samples_on_device: infos.first().is_some_and(|i| i.samples_on_device),
            ranks,
            group,
            step: Arc::new(Step::default()),
            logits: Vec::new(),
            tokens: Vec::new(),
            broken: None,
        };
        if let Some(e) = first_error {
            // Ranks still building may wait in a collective for the one that failed.
            engine.broken = Some(e.to_string());
            return Err(e);
        }
        // Every rank has the same shapes; a GPU rank may have room for fewer KV blocks than
        // another, and the shared block manager must stay within the smallest pool.
        for info in infos.iter().skip(1) {
            let (a, b) = (&engine.limits, &info.limits);
            let same = (a.max_batch_size, a.max_num_tokens, a.max_seq_len, a.tokens_per_block)
                == (b.max_batch_size, b.max_num_tokens, b.max_seq_len, b.tokens_per_block);
            if !same || info.vocab_size != engine.vocab_size {
                return Err(LoadError::Config(format!(
                    "tensor-parallel ranks disagree on their limits ({a:?} vs {b:?}) or vocabulary ({} vs {})",
                    engine.vocab_size, info.vocab_size
                )));
            }
            engine.limits.num_kv_blocks = engine.limits.num_kv_blocks.min(b.num_kv_blocks);
        }
        tracing::info!(
            ranks = engine.ranks.len(),
            group = %engine.group,
            kv_blocks = engine.limits.num_kv_blocks,
            "tensor-parallel engine ready"
        );
        Ok(engine)
    }

    /// Ranks in the group.
    pub fn tensor_parallel_size(&self) -> usize {
        self.ranks.len()
    }

    /// The collectives' communicator id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Sends `command(rank)` to every rank, then collects every reply (all of them, so the
    /// ranks stay in step); returns rank 0's output or the first error.
    fn broadcast(&mut self, mut command: impl FnMut(usize) -> Command) -> Result<Output, EngineError> {
        if let Some(why) = &self.broken {
            return Err(EngineError::Setup(format!("the tensor-parallel group is out of step after: {why}")));
        }
        let mut sent = 0;
        let mut error = None;
        for (i, r) in self.ranks.iter().enumerate() {
            match r.send(command(i)) {
                Ok(()) => sent += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let mut first = Output::None;
        for (i, r) in self.ranks.iter().take(sent).enumerate() {
            match r.done() {
                Ok(out) if i == 0 => first = out,
                Ok(_) => {}
                Err(e) => {
                    error.get_or_insert(EngineError::Setup(format!("rank {}: {e}", r.rank)));
                }
            }
        }
        match error {
            Some(e) => {
                self.broken = Some(e.to_string());
                Err(e)
            }
            None => Ok(first),
        }
    }

    /// Stages this step's inputs for every rank (reusing the buffers of the last step).
    fn stage(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Arc<Step> {
        let step = Arc::make_mut(&mut self.step);
        step.batch.clone_from(batch);
        step.rows.clear();
        step.rows.extend_from_slice(rows);
        self.step.clone()
    }
}

/// Waits for every rank's build report, returning early on the first failure (a rank that
/// failed leaves its peers waiting for it in the communicator's setup).
fn wait_built(ranks: &[RankHandle]) -> (Vec<RankInfo>, Option<LoadError>) {
    let mut infos: Vec<Option<RankInfo>> = vec![None; ranks.len()];
    loop {
        for (i, r) in ranks.iter().enumerate() {
            if infos[i].is_some() {
                continue;
            }
            let failed = |why: String| LoadError::Config(format!("tensor-parallel rank {}: {why}", r.rank));
            match r.replies.try_recv() {
                Ok(Reply::Built(Ok(info))) => infos[i] = Some(info),
                Ok(Reply::Built(Err(e))) => return (Vec::new(), Some(failed(e.to_string()))),
                Ok(Reply::Done(_)) => return (Vec::new(), Some(failed("replied out of turn".into()))),
                Err(TryRecvError::Disconnected) => return (Vec::new(), Some(failed("stopped while building".into()))),
                Err(TryRecvError::Empty) => {}
            }
        }
        if infos.iter().all(Option::is_some) {
            return (infos.into_iter().flatten().collect(), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

impl ModelRunner for TensorParallelEngine {
    fn limits(&self) -> &EngineLimits {
        &self.limits
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn samples_on_device(&self) -> bool {
        self.samples_on_device
    }

    fn copy_kv_block(&mut self, src: usize, dst: usize) -> Result<(), EngineError> {
        let nb = self.limits.num_kv_blocks;
        if src >= nb || dst >= nb {
            return Err(EngineError::Batch(format!("KV block copy {src} -> {dst} outside the pool of {nb}")));
        }
        self.broadcast(|_| Command::CopyBlock { src, dst }).map(|_| ())
    }

    fn forward(&mut self, batch: &StepBatch) -> Result<&[f32], EngineError> {
        let step = self.stage(batch, &[]);
        let mut buf = Some(std::mem::take(&mut self.logits));
        let out = self.broadcast(|rank| Command::Forward {
            step: step.clone(),
            sample: false,
            out: match (rank, buf.take()) {
                (0, Some(b)) => Output::Logits(b),
                _ => Output::None,
            },
        });
        drop(step);
        match out? {
            Output::Logits(logits) => self.logits = logits,
            _ => return Err(EngineError::Setup("rank 0 returned no logits".into())),
        }
        Ok(&self.logits)
    }

    fn forward_sample(&mut self, batch: &StepBatch, rows: &[RowSampling]) -> Result<&[i32], EngineError> {
        if !self.samples_on_device {
            return Err(EngineError::Setup("this engine has no device sampler".into()));
        }
        let step = self.stage(batch, rows);
        let mut buf = Some(std::mem::take(&mut self.tokens));
        let out = self.broadcast(|rank| Command::Forward {
            step: step.clone(),
            sample: true,
            out: match (rank, buf.take()) {
                (0, Some(b)) => Output::Tokens(b),
                _ => Output::None,
            },
        });
        drop(step);
        match out? {
            Output::Tokens(tokens) => self.tokens = tokens,
            _ => return Err(EngineError::Setup("rank 0 returned no tokens".into())),
        }
        Ok(&self.tokens)
    }
}

impl Drop for TensorParallelEngine {
    fn drop(&mut self) {
        // Closing the command channels stops the workers. A group out of step may have a rank
        // blocked in a collective forever: its thread is left behind rather than joined.
        for r in &mut self.ranks {
            r.commands = None;
        }
        if self.broken.is_some() {
            return;
        }
        for r in &mut self.ranks {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}
