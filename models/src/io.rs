//! The runtime interface every decoder model graph shares: the names and shapes of the inputs
//! the runtime binds on each forward pass and of the logits output. Symbolic dims:
//! `T` packed tokens, `S` sequences, `S1` = S + 1, `MB` max blocks per sequence, `NB` cache
//! blocks, `BS` tokens per block, `L` positions whose logits are wanted.

use rtllm_plugin_api::{DType, Dim, TensorMeta};

pub const INPUT_IDS: &str = "input_ids";
pub const POSITIONS: &str = "positions";
pub const BLOCK_TABLES: &str = "block_tables";
pub const SEQ_LENS: &str = "seq_lens";
pub const QUERY_START: &str = "query_start";
pub const LOGITS_INDICES: &str = "logits_indices";
pub const LOGITS: &str = "logits";

pub const SYM_TOKENS: &str = "T";
pub const SYM_SEQS: &str = "S";
pub const SYM_SEQS_PLUS_ONE: &str = "S1";
pub const SYM_MAX_BLOCKS: &str = "MB";
pub const SYM_NUM_BLOCKS: &str = "NB";
pub const SYM_BLOCK_SIZE: &str = "BS";
pub const SYM_LOGITS: &str = "L";

/// Name of layer `layer`'s key (`which = "k"`) or value (`"v"`) cache input.
pub fn kv_cache_name(layer: usize, which: &str) -> String {
    format!("kv_cache.{layer}.{which}")
}

fn sym(name: &str) -> Dim {
    Dim::sym(name)
}

/// Metas of the per-step inputs (all i32).
pub fn step_input_metas() -> Vec<(&'static str, TensorMeta)> {
    vec![
        (INPUT_IDS, TensorMeta::new(DType::I32, [sym(SYM_TOKENS)])),
        (POSITIONS, TensorMeta::new(DType::I32, [sym(SYM_TOKENS)])),
        (BLOCK_TABLES, TensorMeta::new(DType::I32, [sym(SYM_SEQS), sym(SYM_MAX_BLOCKS)])),
        (SEQ_LENS, TensorMeta::new(DType::I32, [sym(SYM_SEQS)])),
        (QUERY_START, TensorMeta::new(DType::I32, [sym(SYM_SEQS_PLUS_ONE)])),
        (LOGITS_INDICES, TensorMeta::new(DType::I32, [sym(SYM_LOGITS)])),
    ]
}

/// Meta of one layer's K or V cache pool: [NB, BS, kv_heads, head_dim].
pub fn kv_cache_meta(dtype: DType, kv_heads: usize, head_dim: usize) -> TensorMeta {
    TensorMeta::new(dtype, [sym(SYM_NUM_BLOCKS), sym(SYM_BLOCK_SIZE), Dim::from(kv_heads), Dim::from(head_dim)])
}
