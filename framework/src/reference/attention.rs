//! Reference paged attention: writes each new token's k/v into its paged-cache slot, then
//! attends causally (optionally within a sliding window) over the sequence's cached positions
//! with grouped-query heads. Softmax and sums in f64; cache values read back at cache dtype
//! (an FP8 cache: codes `e4m3(x / scale)`, read back as `code · scale`).

use super::tensor::HostTensor;
use super::{RefResult, ReferenceError};
use rtllm_plugin_api::Attrs;

/// Attributes of `paged_attention`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    /// 0: no window; else each query sees its last `sliding_window` positions (itself included).
    pub sliding_window: usize,
}

impl AttentionParams {
    pub fn from_attrs(attrs: &Attrs) -> RefResult<AttentionParams> {
        let get = |n: &str| attrs.usize(n).map_err(|e| ReferenceError::Attr(e.to_string()));
        let (num_heads, num_kv_heads, head_dim) = (get("num_heads")?, get("num_kv_heads")?, get("head_dim")?);
        if num_heads == 0 || num_kv_heads == 0 || head_dim == 0 || num_heads % num_kv_heads != 0 {
            return Err(ReferenceError::Attr(format!(
                "num_heads {num_heads} must be a positive multiple of num_kv_heads {num_kv_heads}, head_dim {head_dim} > 0"
            )));
        }
        let scale =
            attrs.float_or("scale", 1.0 / (head_dim as f64).sqrt()).map_err(|e| ReferenceError::Attr(e.to_string()))?;
        let window = attrs.int_or("sliding_window", 0).map_err(|e| ReferenceError::Attr(e.to_string()))?;
        let sliding_window = usize::try_from(window)
            .map_err(|_| ReferenceError::Attr(format!("sliding_window {window} must be >= 0")))?;
        Ok(AttentionParams { num_heads, num_kv_heads, head_dim, scale, sliding_window })
    }
}

/// The batch layout: per sequence its block table row, total length and query range.
pub struct PagedBatch<'a> {
    /// `[S, MB]`, row-major.
    pub block_tables: &'a [i32],
    pub max_blocks: usize,
    /// `[S]`: context length including the new tokens.
    pub seq_lens: &'a [i32],
    /// `[S+1]`: token offsets of each sequence's new tokens in q/k/v.
    pub query_start: &'a [i32],
}

fn idx(v: i32, what: &str) -> RefResult<usize> {
    usize::try_from(v).map_err(|_| ReferenceError::Input(format!("{what} {v} is negative")))
}

/// Runs paged attention. `q` `[T,H·D]`, `k`/`v` `[T,KVH·D]` (f32); `k_cache`/`v_cache`
/// `[NB,BS,KVH,D]` (f32/f16/bf16, or f8_e4m3 with `scales` = (k_scale, v_scale)) are updated
/// in place. Returns `[T,H·D]`.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    p: &AttentionParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    k_cache: &mut HostTensor,
    v_cache: &mut HostTensor,
    batch: &PagedBatch<'_>,
    scales: Option<(f32, f32)>,
) -> RefResult<Vec<f32>> {
    let (ks, vs) = scales.unwrap_or((1.0, 1.0));
    if !(ks.is_finite() && ks > 0.0 && vs.is_finite() && vs > 0.0) {
        return Err(ReferenceError::Input(format!(
            "paged_attention: kv scales {ks}, {vs} must be finite and positive"
        )));
    }
    let (h, kvh, d) = (p.num_heads, p.num_kv_heads, p.head_dim);
    let t = q.len() / (h * d);
    if q.len() != t * h * d || k.len() != t * kvh * d || v.len() != t * kvh * d {
        return Err(ReferenceError::Shape(format!(
            "paged_attention: q/k/v have {}/{}/{} elements, not {t} tokens of {h}/{kvh}/{kvh} heads of {d}",
            q.len(),
            k.len(),
            v.len()
        )));
    }
    let cshape = k_cache.shape.clone();
    if cshape.len() != 4 || cshape[2] != kvh || cshape[3] != d || v_cache.shape != cshape {
        return Err(ReferenceError::Shape(format!(
            "paged_attention: caches {:?}/{:?} are not [NB,BS,{kvh},{d}]",
            cshape, v_cache.shape
        )));
    }
    let (nb, bs) = (cshape[0], cshape[1]);
    let s_count = batch.seq_lens.len();
    if batch.query_start.len() != s_count + 1 || batch.block_tables.len() != s_count * batch.max_blocks {
        return Err(ReferenceError::Shape("paged_attention: block_tables/seq_lens/query_start disagree on S".into()));
    }
    let mut kc = k_cache.to_f32()?;
    let mut vc = v_cache.to_f32()?;
    let slot = |s: usize, pos: usize| -> RefResult<usize> {
        let j = pos / bs;
        if j >= batch.max_blocks {
            return Err(ReferenceError::Input(format!("position {pos} of sequence {s} needs block {j} > table width")));
        }
        let block = idx(batch.block_tables[s * batch.max_blocks + j], "block id")?;
        if block >= nb {
            return Err(ReferenceError::Input(format!("block id {block} >= {nb} cache blocks")));
        }
        Ok((block * bs + pos % bs) * kvh * d)
    };
    let mut ranges = Vec::with_capacity(s_count);
    for s in 0..s_count {
        let (qs, qe) = (idx(batch.query_start[s], "query_start")?, idx(batch.query_start[s + 1], "query_start")?);
        let len = idx(batch.seq_lens[s], "seq_len")?;
        if qe < qs || qe > t || qe - qs > len {
            return Err(ReferenceError::Input(format!("sequence {s}: queries {qs}..{qe} vs {t} tokens, length {len}")));
        }
        let start = len - (qe - qs);
        for j in 0..qe - qs {
            let (src, dst) = ((qs + j) * kvh * d, slot(s, start + j)?);
            // The caches hold values / scale (codes, for FP8; scale 1 otherwise).
            kc[dst..dst + kvh * d].iter_mut().zip(&k[src..src + kvh * d]).for_each(|(c, &x)| *c = x / ks);
            vc[dst..dst + kvh * d].iter_mut().zip(&v[src..src + kvh * d]).for_each(|(c, &x)| *c = x / vs);
        }
        ranges.push((qs, qe, start));
    }
    // Store at cache precision, then read back what a kernel would read.
    k_cache.set_f32(&kc)?;
    v_cache.set_f32(&vc)?;
    let kc: Vec<f32> = k_cache.to_f32()?.iter().map(|&c| c * ks).collect();
    let vc: Vec<f32> = v_cache.to_f32()?.iter().map(|&c| c * vs).collect();

    let group = h / kvh;
    let mut out = vec![0f32; t * h * d];
    let mut scores = Vec::new();
    for (s, &(qs, qe, start)) in ranges.iter().enumerate() {
        for j in 0..qe - qs {
            let (tok, pos) = (qs + j, start + j);
            let lo = if p.sliding_window > 0 { (pos + 1).saturating_sub(p.sliding_window) } else { 0 };
            for head in 0..h {
                let kv_head = head / group;
                let qv = &q[(tok * h + head) * d..(tok * h + head + 1) * d];
                scores.clear();
                for key in lo..=pos {
                    let at = slot(s, key)? + kv_head * d;
                    let dot: f64 = qv.iter().zip(&kc[at..at + d]).map(|(&a, &b)| a as f64 * b as f64).sum();
                    scores.push(dot * p.scale);
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let denom: f64 = scores.iter().map(|&x| (x - max).exp()).sum();
                let o = &mut out[(tok * h + head) * d..(tok * h + head + 1) * d];
                let mut acc = vec![0f64; d];
                for (key, &sc) in (lo..=pos).zip(&scores) {
                    let w = (sc - max).exp() / denom;
                    let at = slot(s, key)? + kv_head * d;
                    acc.iter_mut().zip(&vc[at..at + d]).for_each(|(a, &b)| *a += w * b as f64);
                }
                o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::DType;

    #[test]
    fn one_sequence_by_hand() {
        // 1 head, D=1, block size 2, two cached positions then one new token at position 2.
        let p = AttentionParams { num_heads: 1, num_kv_heads: 1, head_dim: 1, scale: 1.0, sliding_window: 0 };
        let mut kc = HostTensor::from_f32(DType::F32, &[2, 2, 1, 1], &[0., 1., 9., 9.]).unwrap();
        let mut vc = HostTensor::from_f32(DType::F32, &[2, 2, 1, 1], &[10., 20., 9., 9.]).unwrap();
        let batch = PagedBatch { block_tables: &[0, 1], max_blocks: 2, seq_lens: &[3], query_start: &[0, 1] };
        let out = paged_attention(&p, &[1.0], &[2.0], &[30.0], &mut kc, &mut vc, &batch, None).unwrap();
        assert_eq!(kc.to_f32().unwrap()[2], 2.0);
        assert_eq!(vc.to_f32().unwrap()[2], 30.0);
        let w: Vec<f64> = [0f64, 1., 2.].iter().map(|s| s.exp()).collect();
        let want = (w[0] * 10. + w[1] * 20. + w[2] * 30.) / w.iter().sum::<f64>();
        assert!((out[0] as f64 - want).abs() < 1e-4, "{} vs {want}", out[0]);
        // Window of 1: only itself.
        let p1 = AttentionParams { sliding_window: 1, ..p };
        let out = paged_attention(&p1, &[1.0], &[2.0], &[30.0], &mut kc, &mut vc, &batch, None).unwrap();
        assert_eq!(out[0], 30.0);
    }
}
