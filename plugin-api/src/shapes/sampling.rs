//! Validation and the random stream shared by the providers of `sample` (CPU, CUDA) and the
//! framework's reference: input positions and metas, the launch-time shapes, and the exact
//! counter-based uniform draw of a row's seed.
//!
//! `sample(logits [L, V], temperature [L] f32, top_k [L] i32, top_p [L] f32, seeds [L] i64)
//! -> tokens [L] i32`. Per row (the semantics every provider follows exactly):
//! 1. `a` = the first index of the largest non-NaN logit (the `argmax` op; 0 when all are NaN),
//!    `m = logits[a]`. If `!(temperature > 0)` (0, negative or NaN) or `m` is not finite, the
//!    token is `a` (greedy).
//! 2. Weights `w_i = exp((l_i - m) / temperature)` computed in f32 for finite `l_i`, else 0
//!    (so `w_a = 1` and `p = w / sum(w)` is the softmax; thresholds on `w` equal those on `p`).
//! 3. top-k is on when `0 < top_k < V`: `t_k` = the top_k-th largest `w` (counted with
//!    multiplicity); top-p is on when `top_p < 1` (NaN: off): `t_p` = the largest `w_j` such
//!    that `sum{w_i : w_i >= w_j} >= top_p * sum(w)`. The kept set is `K = {i : w_i >= t}` with
//!    `t = max` of the thresholds that are on (ties at the threshold are kept; `t = 0` when both
//!    are off). Equivalently `t` is the largest `w_j` for which
//!    `count{w >= w_j} >= top_k` (top-k on) or `mass{w >= w_j} >= top_p * sum(w)` (top-p on).
//! 4. `u = uniform(seed)` (below); the token is the smallest index `i` in vocabulary order with
//!    `sum{w_j : j <= i, j in K} > u * sum{w_j : j in K}` (sums in f64; a token of weight 0 is
//!    never drawn). Should rounding leave no such index, the token is `a`.

use super::{expect_args, expect_shape, shape_of_rank};
use crate::{
    author::{expect_dtype, expect_inputs, expect_rank, same_dim},
    DType, PluginError, TensorMeta, TensorView,
};

pub const OP: &str = "sample";

/// Input positions.
pub const LOGITS: usize = 0;
pub const TEMPERATURE: usize = 1;
pub const TOP_K: usize = 2;
pub const TOP_P: usize = 3;
pub const SEEDS: usize = 4;
pub const NUM_INPUTS: usize = 5;

/// splitmix64's finaliser after adding the golden gamma (as kernels/cuda/fill.cu).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The uniform draw of a row: `u = (splitmix64(seed as u64) >> 11) * 2^-53`, in [0, 1) with
/// 53 random bits. The caller varies the seed per step (e.g. request seed mixed with the step).
pub fn uniform(seed: i64) -> f64 {
    (splitmix64(seed as u64) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Whether a row's temperature means greedy (`!(temperature > 0)`: 0, negative or NaN).
pub fn is_greedy(temperature: f32) -> bool {
    !(temperature > 0.0)
}

/// Checks the five input metas (`logits` one of `logits_dtypes`) and returns `[tokens [L] i32]`.
pub fn infer(inputs: &[TensorMeta], logits_dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    expect_inputs(OP, inputs, &[NUM_INPUTS])?;
    let logits = &inputs[LOGITS];
    expect_dtype(OP, "logits", logits, logits_dtypes)?;
    expect_rank(OP, "logits", logits, 2)?;
    let rows: [(&str, usize, DType); 4] = [
        ("temperature", TEMPERATURE, DType::F32),
        ("top_k", TOP_K, DType::I32),
        ("top_p", TOP_P, DType::F32),
        ("seeds", SEEDS, DType::I64),
    ];
    for (name, i, dtype) in rows {
        expect_dtype(OP, name, &inputs[i], &[dtype])?;
        expect_rank(OP, name, &inputs[i], 1)?;
        same_dim(OP, &format!("row count of logits and {name}"), logits.dim(0), inputs[i].dim(0))?;
    }
    if let Some(v) = logits.dim(1).known() {
        if v == 0 || v > i32::MAX as usize {
            return Err(PluginError::new(format!("{OP}: vocabulary size {v} must be in 1..=i32::MAX")));
        }
    }
    Ok(vec![TensorMeta::new(DType::I32, [logits.dim(0).clone()])])
}

/// Checks a launch's arguments; returns `(rows, vocab)`.
pub fn check_launch(inputs: &[impl TensorView], outputs: &[impl TensorView]) -> Result<(usize, usize), PluginError> {
    expect_args(OP, inputs, &[NUM_INPUTS], outputs, 1)?;
    let shape = shape_of_rank(OP, "logits", &inputs[LOGITS], 2)?;
    let (l, v) = (shape[0], shape[1]);
    if v == 0 || v > i32::MAX as usize {
        return Err(PluginError::new(format!("{OP}: vocabulary size {v} must be in 1..=i32::MAX")));
    }
    for (name, i) in [("temperature", TEMPERATURE), ("top_k", TOP_K), ("top_p", TOP_P), ("seeds", SEEDS)] {
        expect_shape(OP, name, &inputs[i], &[l])?;
    }
    expect_shape(OP, "tokens", &outputs[0], &[l])?;
    let want = [(LOGITS, inputs[LOGITS].meta().dtype), (TEMPERATURE, DType::F32), (TOP_K, DType::I32)];
    for (i, dtype) in want.into_iter().chain([(TOP_P, DType::F32), (SEEDS, DType::I64)]) {
        if inputs[i].meta().dtype != dtype {
            return Err(PluginError::new(format!("{OP}: input {i} is {}, expected {dtype}", inputs[i].meta())));
        }
    }
    if outputs[0].meta().dtype != DType::I32 {
        return Err(PluginError::new(format!("{OP}: tokens must be i32, got {}", outputs[0].meta())));
    }
    Ok((l, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // splitmix64 seeded with 0 (Vigna's reference generator): the first output.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let u = uniform(42);
        assert!((0.0..1.0).contains(&u));
        assert_eq!(u, uniform(42));
        assert_ne!(uniform(1), uniform(2));
        assert_eq!(uniform(-1), (splitmix64(u64::MAX) >> 11) as f64 / 9007199254740992.0);
    }

    #[test]
    fn metas() {
        let m = |d: DType, dims: &[usize]| TensorMeta::of(d, dims);
        let good = vec![
            m(DType::BF16, &[3, 100]),
            m(DType::F32, &[3]),
            m(DType::I32, &[3]),
            m(DType::F32, &[3]),
            m(DType::I64, &[3]),
        ];
        assert_eq!(infer(&good, &DType::FLOATS).unwrap(), vec![m(DType::I32, &[3])]);
        let mut bad = good.clone();
        bad[SEEDS] = m(DType::I32, &[3]);
        assert!(infer(&bad, &DType::FLOATS).unwrap_err().message().contains("seeds must be i64"));
        let mut bad = good.clone();
        bad[TOP_P] = m(DType::F32, &[4]);
        assert!(infer(&bad, &DType::FLOATS).unwrap_err().message().contains("row count of logits and top_p"));
        assert!(infer(&good, &[DType::F32]).is_err());
        assert!(is_greedy(0.0) && is_greedy(-1.0) && is_greedy(f32::NAN) && !is_greedy(1e-6));
    }
}
