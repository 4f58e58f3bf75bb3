//! The parallel layout a model graph is built for: which rank of how many this graph is
//! ([`Parallel`], tensor-parallel coordinates now, a pipeline coordinate reserved for later),
//! how attention heads split across tensor-parallel ranks ([`AttentionSplit`], with KV heads
//! replicated when there are fewer of them than ranks), and the sharded linear layers a
//! tensor-parallel model is made of ([`TensorParallel`]: column-parallel, row-parallel with
//! `all_reduce`, the vocab-parallel output head with `all_gather`).

use crate::builder::{BuildError, GraphBuilder, Value};
use crate::config::ModelConfig;
use rtllm_plugin_api::Attrs;

/// Why a parallel layout is impossible; messages name the sizes involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParallelError {
    #[error("tensor_parallel_size must be >= 1, got 0")]
    ZeroSize,
    #[error("rank {rank} is outside a group of {size}")]
    RankOutOfRange { rank: usize, size: usize },
    #[error("pipeline parallelism is not supported yet (pp_size {0}); use pp_size 1")]
    Pipeline(usize),
    #[error("tensor_parallel_size {tp} must divide num_attention_heads ({heads})")]
    Heads { tp: usize, heads: usize },
    #[error(
        "tensor_parallel_size {tp} and num_key_value_heads {kv_heads}: one must divide the other \
         (KV heads are split across ranks, or replicated when there are fewer of them than ranks)"
    )]
    KvHeads { tp: usize, kv_heads: usize },
}

/// Where one rank sits in the parallel layout. The world is `pp_size` pipeline stages of
/// `tp_size` tensor-parallel ranks each; only `pp_size == 1` is built today.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Parallel {
    pub tp_rank: usize,
    pub tp_size: usize,
    pub pp_rank: usize,
    pub pp_size: usize,
    /// The tensor-parallel communicator's process-unique id (the collectives' `group` attribute).
    pub group: String,
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel::single()
    }
}

impl Parallel {
    /// One rank, no collectives.
    pub fn single() -> Parallel {
        Parallel { tp_rank: 0, tp_size: 1, pp_rank: 0, pp_size: 1, group: String::new() }
    }

    /// Rank `tp_rank` of a tensor-parallel group of `tp_size` named `group`.
    pub fn tensor(tp_rank: usize, tp_size: usize, group: impl Into<String>) -> Result<Parallel, ParallelError> {
        let p = Parallel { tp_rank, tp_size, pp_rank: 0, pp_size: 1, group: group.into() };
        p.validate()?;
        Ok(p)
    }

    /// Checks the coordinates are consistent (and that no pipeline split is asked for).
    pub fn validate(&self) -> Result<(), ParallelError> {
        if self.tp_size == 0 || self.pp_size == 0 {
            return Err(ParallelError::ZeroSize);
        }
        if self.tp_rank >= self.tp_size {
            return Err(ParallelError::RankOutOfRange { rank: self.tp_rank, size: self.tp_size });
        }
        if self.pp_size != 1 || self.pp_rank != 0 {
            return Err(ParallelError::Pipeline(self.pp_size));
        }
        Ok(())
    }

    /// Ranks in the whole world (tp × pp).
    pub fn world_size(&self) -> usize {
        self.tp_size * self.pp_size
    }

    /// This rank's index in the world (pipeline-major).
    pub fn world_rank(&self) -> usize {
        self.pp_rank * self.tp_size + self.tp_rank
    }

    /// Whether the graph is split across tensor-parallel ranks.
    pub fn is_tensor_parallel(&self) -> bool {
        self.tp_size > 1
    }

    /// The attributes every collective of this rank's tensor-parallel group carries.
    pub fn collective_attrs(&self) -> Attrs {
        Attrs::new().with("group", self.group.as_str()).with("rank", self.tp_rank).with("world_size", self.tp_size)
    }

    /// How this layout splits the attention heads of `config`.
    pub fn attention_split(&self, config: &ModelConfig) -> Result<AttentionSplit, ParallelError> {
        AttentionSplit::new(config.num_attention_heads, config.num_key_value_heads, self.tp_size, self.tp_rank)
    }
}

/// One rank's share of the attention heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSplit {
    /// Query heads on this rank (`num_attention_heads / tp`).
    pub heads: usize,
    /// KV heads on this rank (`num_key_value_heads / tp`, or 1 when replicated).
    pub kv_heads: usize,
    /// Which part of the K/V projections this rank holds, of `kv_parts` (rows by head).
    pub kv_part: usize,
    pub kv_parts: usize,
}

impl AttentionSplit {
    /// Splits `heads` query and `kv_heads` KV heads over `tp` ranks, for rank `rank`. KV heads
    /// fewer than ranks are replicated: rank r uses KV head `r * kv_heads / tp`, the one its
    /// query heads attend to (that needs `tp % kv_heads == 0`).
    pub fn new(heads: usize, kv_heads: usize, tp: usize, rank: usize) -> Result<AttentionSplit, ParallelError> {
        if tp == 0 {
            return Err(ParallelError::ZeroSize);
        }
        if rank >= tp {
            return Err(ParallelError::RankOutOfRange { rank, size: tp });
        }
        if heads % tp != 0 {
            return Err(ParallelError::Heads { tp, heads });
        }
        if kv_heads == 0 {
            return Err(ParallelError::KvHeads { tp, kv_heads });
        }
        if kv_heads >= tp {
            if kv_heads % tp != 0 {
                return Err(ParallelError::KvHeads { tp, kv_heads });
            }
            return Ok(AttentionSplit { heads: heads / tp, kv_heads: kv_heads / tp, kv_part: rank, kv_parts: tp });
        }
        if tp % kv_heads != 0 {
            return Err(ParallelError::KvHeads { tp, kv_heads });
        }
        Ok(AttentionSplit { heads: heads / tp, kv_heads: 1, kv_part: rank * kv_heads / tp, kv_parts: kv_heads })
    }
}

/// The sharded linear layers of a tensor-parallel model: weights are `[out, in]` (HF layout)
/// and `matmul` computes `x · Wᵀ`. With one rank every method is the plain layer.
pub struct TensorParallel<'a> {
    pub parallel: &'a Parallel,
}

impl TensorParallel<'_> {
    fn rank(&self) -> usize {
        self.parallel.tp_rank
    }

    fn parts(&self) -> usize {
        self.parallel.tp_size
    }

    /// `x · Wᵀ (+ bias)` with `W`'s output rows (and the bias) split into `parts`, this rank
    /// holding part `part`: the output is this rank's slice of the features.
    pub fn column_part(
        &self,
        b: &mut dyn GraphBuilder,
        x: Value,
        name: &str,
        bias: bool,
        part: usize,
        parts: usize,
    ) -> Result<Value, BuildError> {
        let w = b.weight_shard(&format!("{name}.weight"), 0, part, parts)?;
        let bias_name = format!("{name}.bias");
        if bias || b.has_weight(&bias_name) {
            let bv = b.weight_shard(&bias_name, 0, part, parts)?;
            return b.op1("matmul", &[x, w, bv], Attrs::new());
        }
        b.op1("matmul", &[x, w], Attrs::new())
    }

    /// Column-parallel over the tensor-parallel ranks (Q/K/V, gate/up).
    pub fn column(&self, b: &mut dyn GraphBuilder, x: Value, name: &str, bias: bool) -> Result<Value, BuildError> {
        self.column_part(b, x, name, bias, self.rank(), self.parts())
    }

    /// Row-parallel (O, down): `W`'s input columns are split, `x` is this rank's slice of the
    /// features, the partial products are summed by `all_reduce`; rank 0 alone adds the bias.
    pub fn row(&self, b: &mut dyn GraphBuilder, x: Value, name: &str, bias: bool) -> Result<Value, BuildError> {
        let w = b.weight_shard(&format!("{name}.weight"), 1, self.rank(), self.parts())?;
        let bias_name = format!("{name}.bias");
        let with_bias = (bias || b.has_weight(&bias_name)) && self.rank() == 0;
        let partial = if with_bias {
            let bv = b.weight(&bias_name)?;
            b.op1("matmul", &[x, w, bv], Attrs::new())?
        } else {
            b.op1("matmul", &[x, w], Attrs::new())?
        };
        self.all_reduce(b, partial)
    }

    /// Sums `x` over the tensor-parallel ranks (identity with one rank).
    pub fn all_reduce(&self, b: &mut dyn GraphBuilder, x: Value) -> Result<Value, BuildError> {
        if !self.parallel.is_tensor_parallel() {
            return Ok(x);
        }
        b.op1("all_reduce", &[x], self.parallel.collective_attrs())
    }

    /// The output head: `x · Eᵀ` with the vocabulary rows of `E` split across ranks and the
    /// logits gathered along the last axis, so every rank ends with all of them. A vocabulary
    /// the ranks do not divide (`vocab_size`, the head's rows) keeps the whole head on every rank.
    pub fn vocab_head(
        &self,
        b: &mut dyn GraphBuilder,
        x: Value,
        weight: &str,
        vocab_size: usize,
    ) -> Result<Value, BuildError> {
        if !self.parallel.is_tensor_parallel() || vocab_size % self.parts() != 0 {
            let w = b.weight(weight)?;
            return b.op1("matmul", &[x, w], Attrs::new());
        }
        let w = b.weight_shard(weight, 0, self.rank(), self.parts())?;
        let part = b.op1("matmul", &[x, w], Attrs::new())?;
        b.op1("all_gather", &[part], self.parallel.collective_attrs().with("axis", -1i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_split_evenly_or_kv_heads_replicate() {
        let s = AttentionSplit::new(8, 4, 2, 1).unwrap();
        assert_eq!(s, AttentionSplit { heads: 4, kv_heads: 2, kv_part: 1, kv_parts: 2 });
        // 4 query heads, 2 KV heads, 4 ranks: ranks 0,1 share KV head 0; ranks 2,3 KV head 1.
        let parts: Vec<usize> = (0..4).map(|r| AttentionSplit::new(4, 2, 4, r).unwrap().kv_part).collect();
        assert_eq!(parts, vec![0, 0, 1, 1]);
        assert_eq!(AttentionSplit::new(4, 2, 4, 3).unwrap().kv_heads, 1);
        assert_eq!(AttentionSplit::new(9, 3, 1, 0).unwrap().heads, 9);
    }

    #[test]
    fn impossible_splits_are_clear_errors() {
        assert_eq!(AttentionSplit::new(9, 3, 2, 0), Err(ParallelError::Heads { tp: 2, heads: 9 }));
        assert_eq!(AttentionSplit::new(12, 6, 4, 0), Err(ParallelError::KvHeads { tp: 4, kv_heads: 6 }));
        assert_eq!(AttentionSplit::new(12, 4, 6, 0), Err(ParallelError::KvHeads { tp: 6, kv_heads: 4 }));
        assert!(AttentionSplit::new(12, 4, 6, 0).unwrap_err().to_string().contains("num_key_value_heads 4"));
        assert_eq!(AttentionSplit::new(12, 3, 6, 5).unwrap().kv_part, 2);
        assert_eq!(Parallel::tensor(2, 2, "g"), Err(ParallelError::RankOutOfRange { rank: 2, size: 2 }));
        assert_eq!(Parallel::tensor(0, 0, "g"), Err(ParallelError::ZeroSize));
        let pp = Parallel { pp_size: 2, ..Parallel::single() };
        assert_eq!(pp.validate(), Err(ParallelError::Pipeline(2)));
    }

    #[test]
    fn collectives_carry_the_group_coordinates() {
        let p = Parallel::tensor(1, 4, "tp-7-0").unwrap();
        let a = p.collective_attrs();
        assert_eq!(a.str("group").unwrap(), "tp-7-0");
        assert_eq!((a.int("rank").unwrap(), a.int("world_size").unwrap()), (1, 4));
        assert_eq!((p.world_size(), p.world_rank()), (4, 1));
        assert!(p.is_tensor_parallel() && !Parallel::single().is_tensor_parallel());
    }
}
