//! Random inputs for conformance checks: floats uniform in [-1, 1) (rounded or quantized to
//! each input's dtype), integer inputs drawn in range for the op (ids below the vocab,
//! positions, row indices), and for `paged_attention` a valid mixed prefill/decode batch
//! (disjoint blocks per sequence, context lengths that fit the tables and the cache; over an
//! FP8 cache, finite E4M3 cache codes and positive kv scales), and for `fp8_matmul` and
//! `fp8_grouped_matmul` finite E4M3 weight codes with positive scales.

use crate::reference::HostTensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use rtllm_plugin_api::{Attrs, DType, TensorMeta};

/// Largest position drawn for `rope` (f32 angle error grows with the position).
pub const MAX_ROPE_POSITION: i32 = 2048;

/// Random inputs matching `metas` (which must be concrete) for `op`.
pub fn generate(op: &str, metas: &[TensorMeta], _attrs: &Attrs, rng: &mut StdRng) -> Result<Vec<HostTensor>, String> {
    let shapes = metas
        .iter()
        .map(|m| m.shape().ok_or_else(|| format!("example input {m} has symbolic dims")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(metas.len());
    for (i, (meta, shape)) in metas.iter().zip(&shapes).enumerate() {
        let t = match meta.dtype {
            DType::I32 | DType::I64 => {
                let (lo, hi) = int_range(op, i, &shapes, metas);
                let values: Vec<f32> = (0..meta.numel().unwrap_or(0)).map(|_| rng.gen_range(lo..hi) as f32).collect();
                HostTensor::from_f32(meta.dtype, shape, &values)
            }
            DType::U8 => {
                let mut t = HostTensor::zeros(DType::U8, shape).map_err(|e| e.to_string())?;
                rng.fill(t.bytes_mut());
                Ok(t)
            }
            dtype => {
                let values: Vec<f32> = (0..meta.numel().unwrap_or(0)).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                HostTensor::from_f32(dtype, shape, &values)
            }
        };
        out.push(t.map_err(|e| format!("input {i} ({meta}): {e}"))?);
    }
    if op == "paged_attention" && (metas.len() == 8 || metas.len() == 10) {
        fill_paged_batch(&mut out, rng)?;
    }
    if op == "paged_attention" && metas.len() == 10 {
        fill_fp8_kv(&mut out, rng)?;
    }
    if op == "sample" && metas.len() == 5 {
        fill_sample_params(&mut out, rng)?;
    }
    if op == "fp8_matmul" {
        fill_fp8_scales(&mut out, 1, _attrs, rng)?;
    }
    if op == "fp8_grouped_matmul" {
        // (x, w_0..w_{p-1}, s_0..s_{p-1}[, i_0..i_{p-1}])
        let act = rtllm_plugin_api::shapes::fp8::Fp8Activation::from_attrs(_attrs).map_err(|e| e.to_string())?;
        let parts = out.len().saturating_sub(1) / (2 + act.scale_inputs());
        fill_fp8_scales(&mut out, parts, _attrs, rng)?;
    }
    Ok(out)
}

/// `fp8_matmul` (`parts` = 1) and `fp8_grouped_matmul` (inputs x, the `parts` weights, their
/// scales, their input scales): the weight codes over every finite E4M3 value (NaN codes
/// redrawn), positive weight scales, and activation scales in [0.002, 0.05) so that x in
/// [-1, 1) sometimes saturates at ±448 (static) — what real checkpoints hold.
fn fill_fp8_scales(inputs: &mut [HostTensor], parts: usize, attrs: &Attrs, rng: &mut StdRng) -> Result<(), String> {
    let act = rtllm_plugin_api::shapes::fp8::Fp8Activation::from_attrs(attrs).map_err(|e| e.to_string())?;
    for w in inputs.iter_mut().skip(1).take(parts) {
        finite_e4m3_codes(w.bytes_mut(), rng);
    }
    for i in (1 + parts)..(1 + parts * (2 + act.scale_inputs())).min(inputs.len()) {
        let (lo, hi) = if i < 1 + 2 * parts { (1e-4f32, 1e-2) } else { (2e-3, 5e-2) };
        let values: Vec<f32> = (0..inputs[i].numel()).map(|_| rng.gen_range(lo..hi)).collect();
        inputs[i].set_f32(&values).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Random E4M3 codes over every finite value (the NaN codes redrawn).
fn finite_e4m3_codes(bytes: &mut [u8], rng: &mut StdRng) {
    bytes.iter_mut().for_each(|c| {
        *c = loop {
            let v: u8 = rng.gen();
            if v & 0x7f != 0x7f {
                break v;
            }
        }
    });
}

/// `paged_attention` over an FP8 cache: cached codes over every finite E4M3 value (NaN codes
/// redrawn) and kv scales in [1e-3, 5e-3), so that cached values reach ±2.2 and new k/v in
/// [-1, 1) sometimes saturate (|x| / scale > 448).
fn fill_fp8_kv(inputs: &mut [HostTensor], rng: &mut StdRng) -> Result<(), String> {
    for cache in &mut inputs[3..5] {
        finite_e4m3_codes(cache.bytes_mut(), rng);
    }
    for scale in &mut inputs[8..10] {
        scale.set_f32(&[rng.gen_range(1e-3f32..5e-3)]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `sample`: logits spread to [-8, 8) (peaked rows, so rounding near-ties practically never
/// flip a draw) and per-row parameters from small menus (greedy rows, top-k, top-p, both),
/// with full-range i64 seeds.
fn fill_sample_params(inputs: &mut [HostTensor], rng: &mut StdRng) -> Result<(), String> {
    let spread: Vec<f32> = inputs[0].to_f32().map_err(|e| e.to_string())?.iter().map(|x| x * 8.0).collect();
    inputs[0].set_f32(&spread).map_err(|e| e.to_string())?;
    let l = inputs[1].numel();
    let pick = |menu: &[f32], rng: &mut StdRng| menu[rng.gen_range(0..menu.len())];
    let temps: Vec<f32> = (0..l).map(|_| pick(&[0.0, 0.6, 1.0, 1.5], rng)).collect();
    let top_k: Vec<i32> = (0..l).map(|_| pick(&[0.0, 1.0, 5.0, 50.0], rng) as i32).collect();
    let top_p: Vec<f32> = (0..l).map(|_| pick(&[1.0, 0.9, 0.5], rng)).collect();
    inputs[1] = HostTensor::from_f32(DType::F32, &[l], &temps).map_err(|e| e.to_string())?;
    inputs[2] = HostTensor::from_i32(&[l], &top_k).map_err(|e| e.to_string())?;
    inputs[3] = HostTensor::from_f32(DType::F32, &[l], &top_p).map_err(|e| e.to_string())?;
    let mut seeds = HostTensor::zeros(DType::I64, &[l]).map_err(|e| e.to_string())?;
    seeds.as_mut_slice::<i64>().map_err(|e| e.to_string())?.iter_mut().for_each(|s| *s = rng.gen());
    inputs[4] = seeds;
    Ok(())
}

/// `[lo, hi)` for integer input `i` of `op`.
fn int_range(op: &str, i: usize, shapes: &[Vec<usize>], metas: &[TensorMeta]) -> (i64, i64) {
    let rows = |j: usize| shapes.get(j).and_then(|s| s.first().copied()).unwrap_or(1).max(1) as i64;
    match (op, i) {
        ("embedding", 0) => (0, rows(1)),
        ("rope", 1) => (0, MAX_ROPE_POSITION as i64),
        ("gather_rows", 1) => (0, rows(0)),
        _ => {
            // Unknown op: stay below every float input's leading dim, a safe index anywhere.
            let bound = metas
                .iter()
                .zip(shapes)
                .filter(|(m, _)| !matches!(m.dtype, DType::I32 | DType::I64))
                .filter_map(|(_, s)| s.first().copied())
                .min()
                .unwrap_or(1)
                .max(1);
            (0, bound as i64)
        }
    }
}

/// Overwrites inputs 5..8 (block_tables, seq_lens, query_start) with a valid batch for the
/// shapes of q (`[T, ·]`), the caches (`[NB, BS, ·, ·]`) and the block tables (`[S, MB]`).
fn fill_paged_batch(inputs: &mut [HostTensor], rng: &mut StdRng) -> Result<(), String> {
    let t = inputs[0].shape.first().copied().unwrap_or(0);
    let (nb, bs) = match inputs[3].shape.as_slice() {
        [nb, bs, _, _] => (*nb, *bs),
        other => return Err(format!("paged_attention k_cache must be [NB,BS,KVH,D], got {other:?}")),
    };
    let (s, mb) = match inputs[5].shape.as_slice() {
        [s, mb] => (*s, *mb),
        other => return Err(format!("paged_attention block_tables must be [S,MB], got {other:?}")),
    };
    if inputs[6].shape != [s] || inputs[7].shape != [s + 1] {
        return Err(format!(
            "paged_attention seq_lens {:?} / query_start {:?} do not fit S={s}",
            inputs[6].shape, inputs[7].shape
        ));
    }
    let batch = random_batch(t, s, mb, nb, bs, rng)?;
    inputs[5] = HostTensor::from_i32(&[s, mb], &batch.block_tables).map_err(|e| e.to_string())?;
    inputs[6] = HostTensor::from_i32(&[s], &batch.seq_lens).map_err(|e| e.to_string())?;
    inputs[7] = HostTensor::from_i32(&[s + 1], &batch.query_start).map_err(|e| e.to_string())?;
    Ok(())
}

/// A generated paged batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomBatch {
    pub block_tables: Vec<i32>,
    pub seq_lens: Vec<i32>,
    pub query_start: Vec<i32>,
}

/// `t` new tokens over `s` sequences (tables `[s, mb]`, cache of `nb` blocks of `bs`): odd
/// sequences decode one token over a cached history, even ones prefill (from scratch or after
/// a cached prefix); every sequence owns distinct blocks.
pub fn random_batch(
    t: usize,
    s: usize,
    mb: usize,
    nb: usize,
    bs: usize,
    rng: &mut StdRng,
) -> Result<RandomBatch, String> {
    let cap = mb * bs;
    if s == 0 {
        return if t == 0 {
            Ok(RandomBatch { block_tables: vec![], seq_lens: vec![], query_start: vec![0] })
        } else {
            Err(format!("{t} tokens but no sequences"))
        };
    }
    if t < s || bs == 0 || cap == 0 {
        return Err(format!("cannot place {t} tokens in {s} sequences of at most {mb} blocks of {bs}"));
    }
    let mut q_lens = vec![1usize; s];
    let prefill: Vec<usize> = (0..s).filter(|i| i % 2 == 0).collect();
    for _ in 0..t - s {
        let open: Vec<usize> = prefill.iter().copied().filter(|&i| q_lens[i] < cap).collect();
        let Some(&pick) = open.choose(rng) else {
            return Err(format!("{t} tokens do not fit {s} sequences of at most {cap} positions"));
        };
        q_lens[pick] += 1;
    }
    let need: Vec<usize> = q_lens.iter().map(|q| q.div_ceil(bs)).collect();
    if need.iter().sum::<usize>() > nb {
        return Err(format!("the cache's {nb} blocks of {bs} cannot hold {t} new tokens"));
    }
    let mut ids: Vec<i32> = (0..nb as i32).collect();
    ids.shuffle(rng);
    let (mut tables, mut lens, mut starts, mut used) = (Vec::new(), Vec::new(), vec![0i32], 0usize);
    for i in 0..s {
        let reserved: usize = need[i + 1..].iter().sum();
        let max_blocks = mb.min(nb - used - reserved);
        let max_len = max_blocks * bs;
        let prefix = if i % 2 == 1 || rng.gen_bool(0.5) { rng.gen_range(0..=max_len - q_lens[i]) } else { 0 };
        let len = q_lens[i] + prefix;
        let blocks = len.div_ceil(bs);
        let mut row: Vec<i32> = ids[used..used + blocks].to_vec();
        used += blocks;
        // Padding entries are valid ids of other blocks: a kernel reading past the sequence
        // gets wrong data (caught by the comparison) rather than an out-of-range crash.
        while row.len() < mb {
            row.push(rng.gen_range(0..nb as i32));
        }
        tables.extend(row);
        lens.push(len as i32);
        starts.push(starts[i] + q_lens[i] as i32);
    }
    Ok(RandomBatch { block_tables: tables, seq_lens: lens, query_start: starts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[test]
    fn fp8_grouped_inputs_have_finite_codes_and_positive_scales() {
        use rtllm_plugin_api::shapes::fp8::Fp8Activation;
        let mut rng = StdRng::seed_from_u64(3);
        let m = |d, s: &[usize]| TensorMeta::of(d, s);
        let f8 = m(DType::F8_E4M3, &[64, 32]);
        let metas = [m(DType::BF16, &[2, 32]), f8.clone(), f8, m(DType::F32, &[64]), m(DType::F32, &[1])];
        let metas: Vec<TensorMeta> = metas.into_iter().chain([m(DType::F32, &[1]), m(DType::F32, &[1])]).collect();
        let got = generate("fp8_grouped_matmul", &metas, &Fp8Activation::Static.attrs(), &mut rng).unwrap();
        for w in &got[1..3] {
            assert!(w.bytes().iter().all(|c| c & 0x7f != 0x7f), "no NaN codes");
            assert!(w.bytes().iter().any(|c| c & 0x78 == 0x78), "codes reach the top binade");
        }
        for (i, (lo, hi)) in [(3, (1e-4, 1e-2)), (4, (1e-4, 1e-2)), (5, (2e-3, 5e-2)), (6, (2e-3, 5e-2))] {
            let v = got[i].to_f32().unwrap();
            assert!(v.iter().all(|&s| s >= lo && s < hi), "input {i}: {v:?}");
        }
    }

    #[test]
    fn batches_are_valid() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let (s, mb, bs) = (rng.gen_range(1..5), rng.gen_range(1..5), rng.gen_range(1..9));
            let t = rng.gen_range(s..s + 2 * bs);
            let nb = rng.gen_range(1..40);
            let Ok(b) = random_batch(t, s, mb, nb, bs, &mut rng) else {
                continue;
            };
            assert_eq!(b.query_start[s] as usize, t);
            let mut owned = HashSet::new();
            for i in 0..s {
                let q = (b.query_start[i + 1] - b.query_start[i]) as usize;
                let len = b.seq_lens[i] as usize;
                assert!(q >= 1 && q <= len && len <= mb * bs);
                for j in 0..len.div_ceil(bs) {
                    assert!(owned.insert(b.block_tables[i * mb + j]), "block shared");
                }
            }
            assert!(b.block_tables.iter().all(|&id| id >= 0 && (id as usize) < nb));
        }
        assert!(random_batch(1, 2, 4, 8, 4, &mut rng).is_err());
    }
}
