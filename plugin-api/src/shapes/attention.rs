//! Validation shared by the providers of `paged_attention` (CPU and CUDA): the attributes
//! (head counts, head size, softmax scale, sliding window), the input positions, and the
//! build-time checks of the input metas: eight, or ten over an FP8 (E4M3) cache, whose per-layer
//! `k_scale` and `v_scale` (f32 `[1]`) follow `query_start`. Providers pass the activation
//! dtypes (q, k, v, out) and the cache dtypes they accept.
//!
//! FP8 cache (docs/quantization.md, "The KV cache"): a new token's k is stored as the code
//! `e4m3(k / k_scale)` (a true division, RNE, saturating: `fp8::f32_to_e4m3`) and read back as
//! `code · k_scale`; v likewise with `v_scale`. Attention then runs on the dequantized values,
//! new tokens included (a token's own key is read as the cache holds it).

use crate::{
    author::{expect_dtype, expect_inputs, expect_rank, same_dim},
    Attrs, DType, Dim, PluginError, TensorMeta,
};

pub const OP: &str = "paged_attention";

/// Input positions, in the op's documented order.
pub const Q: usize = 0;
pub const K: usize = 1;
pub const V: usize = 2;
pub const K_CACHE: usize = 3;
pub const V_CACHE: usize = 4;
pub const BLOCK_TABLES: usize = 5;
pub const SEQ_LENS: usize = 6;
pub const QUERY_START: usize = 7;
pub const NUM_INPUTS: usize = 8;
/// The FP8 cache's scales (present exactly when the caches are F8_E4M3).
pub const K_SCALE: usize = 8;
pub const V_SCALE: usize = 9;
pub const NUM_INPUTS_FP8: usize = 10;

/// Names of the inputs, by position.
pub const INPUT_NAMES: [&str; NUM_INPUTS_FP8] =
    ["q", "k", "v", "k_cache", "v_cache", "block_tables", "seq_lens", "query_start", "k_scale", "v_scale"];

/// Whether `inputs` describe an FP8 cache call (ten inputs, F8_E4M3 caches).
pub fn is_fp8_cache(inputs: &[TensorMeta]) -> bool {
    inputs.get(K_CACHE).is_some_and(|m| m.dtype == DType::F8_E4M3)
}

/// Validated attributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Keys within the last `sliding_window` positions (the query's own included); 0 = all.
    pub sliding_window: usize,
}

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP}: {msg}"))
}

impl AttnParams {
    pub fn from_attrs(attrs: &Attrs) -> Result<AttnParams, PluginError> {
        let ctx = |e: PluginError| e.context(OP);
        let num_heads = attrs.usize("num_heads").map_err(ctx)?;
        let num_kv_heads = attrs.usize("num_kv_heads").map_err(ctx)?;
        let head_dim = attrs.usize("head_dim").map_err(ctx)?;
        if num_heads == 0 || num_kv_heads == 0 || head_dim == 0 {
            return Err(err(format!(
                "num_heads ({num_heads}), num_kv_heads ({num_kv_heads}) and head_dim ({head_dim}) must be positive"
            )));
        }
        if num_heads % num_kv_heads != 0 {
            return Err(err(format!("num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")));
        }
        let scale = attrs.float_or("scale", 1.0 / (head_dim as f64).sqrt()).map_err(ctx)?;
        if !scale.is_finite() {
            return Err(err(format!("scale must be finite, got {scale}")));
        }
        let sliding_window = usize::try_from(attrs.int_or("sliding_window", 0).map_err(ctx)?)
            .map_err(|_| err("sliding_window must be >= 0".into()))?;
        Ok(AttnParams { num_heads, num_kv_heads, head_dim, scale: scale as f32, sliding_window })
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// The first key position a query at `pos` attends to.
    pub fn first_key(&self, pos: usize) -> usize {
        if self.sliding_window == 0 {
            0
        } else {
            (pos + 1).saturating_sub(self.sliding_window)
        }
    }
}

/// The concrete input metas of an example batch (providers' `examples()`): `t` tokens of `h`
/// query and `kvh` KV heads of dim `d` in `act`, `cache` caches of `nb` blocks of `bs`, `s`
/// sequences with tables of width `mb`; an F8_E4M3 cache adds its two scales.
#[allow(clippy::too_many_arguments)]
pub fn example_inputs(
    act: DType,
    cache: DType,
    (h, kvh, d): (usize, usize, usize),
    (nb, bs): (usize, usize),
    (s, mb): (usize, usize),
    t: usize,
) -> Vec<TensorMeta> {
    let mut inputs = vec![
        TensorMeta::of(act, &[t, h * d]),
        TensorMeta::of(act, &[t, kvh * d]),
        TensorMeta::of(act, &[t, kvh * d]),
        TensorMeta::of(cache, &[nb, bs, kvh, d]),
        TensorMeta::of(cache, &[nb, bs, kvh, d]),
        TensorMeta::of(DType::I32, &[s, mb]),
        TensorMeta::of(DType::I32, &[s]),
        TensorMeta::of(DType::I32, &[s + 1]),
    ];
    if cache == DType::F8_E4M3 {
        inputs.extend([TensorMeta::of(DType::F32, &[1]), TensorMeta::of(DType::F32, &[1])]);
    }
    inputs
}

fn expect_known(what: &str, dim: &Dim, want: usize) -> Result<(), PluginError> {
    match dim {
        Dim::Known(v) if *v as usize != want => Err(err(format!("{what} is {v}, expected {want}"))),
        _ => Ok(()),
    }
}

/// Checks the input metas (symbolic dims compare by name) and returns the output meta
/// (`[T, H*D]` of q's dtype). q, k and v share one of the `activations` dtypes; both caches
/// share one of the `caches` dtypes.
pub fn check_metas(
    inputs: &[TensorMeta],
    p: &AttnParams,
    activations: &[DType],
    caches: &[DType],
) -> Result<TensorMeta, PluginError> {
    expect_inputs(OP, inputs, &[NUM_INPUTS, NUM_INPUTS_FP8])?;
    let fp8 = is_fp8_cache(inputs);
    if fp8 != (inputs.len() == NUM_INPUTS_FP8) {
        return Err(err(format!(
            "an F8_E4M3 cache takes {NUM_INPUTS_FP8} inputs (k_scale and v_scale last), other caches {NUM_INPUTS}; \
             got {} inputs with k_cache {}",
            inputs.len(),
            inputs[K_CACHE]
        )));
    }
    for (i, m) in inputs.iter().enumerate() {
        let (dtypes, rank): (&[DType], usize) = match i {
            Q | K | V => (activations, 2),
            K_CACHE | V_CACHE => (caches, 4),
            BLOCK_TABLES => (&[DType::I32], 2),
            K_SCALE | V_SCALE => (&[DType::F32], 1),
            _ => (&[DType::I32], 1),
        };
        expect_dtype(OP, INPUT_NAMES[i], m, dtypes)?;
        expect_rank(OP, INPUT_NAMES[i], m, rank)?;
    }
    let (q, k, v) = (&inputs[Q], &inputs[K], &inputs[V]);
    if k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(err(format!("q {q}, k {k} and v {v} must share one dtype")));
    }
    expect_known("q width", q.dim(1), p.num_heads * p.head_dim)?;
    for (name, m) in [("k", k), ("v", v)] {
        same_dim(OP, &format!("token count of q and {name}"), q.dim(0), m.dim(0))?;
        expect_known(&format!("{name} width"), m.dim(1), p.num_kv_heads * p.head_dim)?;
    }
    let (kc, vc) = (&inputs[K_CACHE], &inputs[V_CACHE]);
    if kc.dtype != vc.dtype {
        return Err(err(format!("k_cache {kc} and v_cache {vc} differ in dtype")));
    }
    for i in 0..4 {
        same_dim(OP, &format!("dim {i} of k_cache and v_cache"), kc.dim(i), vc.dim(i))?;
    }
    expect_known("cache kv-head dim", kc.dim(2), p.num_kv_heads)?;
    expect_known("cache head dim", kc.dim(3), p.head_dim)?;
    if fp8 {
        for i in [K_SCALE, V_SCALE] {
            expect_known(INPUT_NAMES[i], inputs[i].dim(0), 1)?;
        }
    }
    let (bt, sl, qs) = (&inputs[BLOCK_TABLES], &inputs[SEQ_LENS], &inputs[QUERY_START]);
    same_dim(OP, "sequence count of block_tables and seq_lens", bt.dim(0), sl.dim(0))?;
    if let (Dim::Known(s), Dim::Known(n)) = (sl.dim(0), qs.dim(0)) {
        if *n != s + 1 {
            return Err(err(format!("query_start has {n} entries, expected seq count + 1 = {}", s + 1)));
        }
    }
    Ok(TensorMeta::new(q.dtype, [q.dim(0).clone(), q.dim(1).clone()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metas(act: DType, cache: DType) -> Vec<TensorMeta> {
        vec![
            TensorMeta::of(act, &[5, 4 * 16]),
            TensorMeta::of(act, &[5, 2 * 16]),
            TensorMeta::of(act, &[5, 2 * 16]),
            TensorMeta::of(cache, &[8, 4, 2, 16]),
            TensorMeta::of(cache, &[8, 4, 2, 16]),
            TensorMeta::of(DType::I32, &[2, 3]),
            TensorMeta::of(DType::I32, &[2]),
            TensorMeta::of(DType::I32, &[3]),
        ]
    }

    #[test]
    fn checks_dtypes_and_widths() {
        let attrs = Attrs::new().with("num_heads", 4usize).with("num_kv_heads", 2usize).with("head_dim", 16usize);
        let p = AttnParams::from_attrs(&attrs).unwrap();
        assert_eq!((p.group(), p.scale), (2, 0.25));
        let out = check_metas(&metas(DType::BF16, DType::BF16), &p, &DType::FLOATS, &DType::FLOATS).unwrap();
        assert_eq!(out, TensorMeta::of(DType::BF16, &[5, 64]));
        let e = check_metas(&metas(DType::BF16, DType::F32), &p, &[DType::F32], &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("q must be f32"), "{e}");
        let mut m = metas(DType::F32, DType::F16);
        m[1].dtype = DType::BF16;
        let e = check_metas(&m, &p, &DType::FLOATS, &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("share one dtype"), "{e}");
        let mut m = metas(DType::F32, DType::F16);
        m[0] = TensorMeta::of(DType::F32, &[5, 60]);
        let e = check_metas(&m, &p, &DType::FLOATS, &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("q width is 60, expected 64"), "{e}");
        let mut m = metas(DType::F32, DType::F8_E4M3);
        let e = check_metas(&m, &p, &[DType::F32], &[DType::F8_E4M3]).unwrap_err();
        assert!(e.message().contains("k_scale and v_scale last"), "{e}");
        m.push(TensorMeta::of(DType::F32, &[1]));
        m.push(TensorMeta::of(DType::F32, &[1]));
        check_metas(&m, &p, &[DType::F32], &[DType::F8_E4M3]).unwrap();
        m[9] = TensorMeta::of(DType::F32, &[2]);
        let e = check_metas(&m, &p, &[DType::F32], &[DType::F8_E4M3]).unwrap_err();
        assert!(e.message().contains("v_scale is 2, expected 1"), "{e}");
        let mut m = metas(DType::F32, DType::F32);
        m.extend([TensorMeta::of(DType::F32, &[1]), TensorMeta::of(DType::F32, &[1])]);
        assert!(check_metas(&m, &p, &[DType::F32], &DType::FLOATS).is_err());
        let windowed = AttnParams { sliding_window: 3, ..p };
        assert_eq!((windowed.first_key(1), windowed.first_key(10), p.first_key(10)), (0, 8, 0));
    }
}
