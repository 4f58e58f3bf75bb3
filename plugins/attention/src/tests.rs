//! Tests of `paged_attention`: step-by-step decoding equals one prefill, mixed batches equal
//! separate runs, GQA/sliding-window/block-boundary cases against a small f64 reference, and
//! invalid batches rejected with errors; an FP8 cache equals attention over the dequantized
//! cache. Every launch runs sequentially and on 4 threads.

use crate::paged_attention::PagedAttention;
use crate::params::AttnParams;
use crate::testutil::{assert_close, rand_f32, run, Buf};
use half::{bf16, f16};
use rtllm_plugin_api::fp8::{e4m3_to_f32, f32_to_e4m3, F8E4M3};
use rtllm_plugin_api::{Attrs, DType, Kernel, Op, PluginError};

/// The FP8 cache's (k_scale, v_scale) in these tests: small enough that some of the [-1, 1)
/// inputs saturate at ±448 codes.
const FP8_SCALES: (f32, f32) = (0.0021, 0.004);

/// A KV cache plus the history of what each sequence stored in it, for the reference.
struct Harness {
    attrs: Attrs,
    p: AttnParams,
    dtype: DType,
    k_cache: Buf,
    v_cache: Buf,
    tables: Vec<Vec<i32>>,
    hist_k: Vec<Vec<f32>>,
    hist_v: Vec<Vec<f32>>,
    seed: u64,
}

/// `x` as a cache of `dtype` returns it (`scale`: the FP8 cache's scale).
fn round(dtype: DType, x: f32, scale: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F8_E4M3 => e4m3_to_f32(f32_to_e4m3(x / scale)) * scale,
        _ => x,
    }
}

fn cache_buf(dtype: DType, dims: &[usize]) -> Buf {
    let n = dims.iter().product();
    match dtype {
        DType::F16 => Buf::from_slice(dims, &vec![f16::ZERO; n]),
        DType::BF16 => Buf::from_slice(dims, &vec![bf16::ZERO; n]),
        DType::F8_E4M3 => Buf::from_slice(dims, &vec![F8E4M3(0); n]),
        _ => Buf::from_slice(dims, &vec![0f32; n]),
    }
}

impl Harness {
    /// `tables[s]` is sequence `s`'s block table (all rows the same width).
    fn new(
        heads: (usize, usize),
        d: usize,
        bs: usize,
        nb: usize,
        dtype: DType,
        window: usize,
        tables: Vec<Vec<i32>>,
    ) -> Harness {
        let attrs = Attrs::new()
            .with("num_heads", heads.0)
            .with("num_kv_heads", heads.1)
            .with("head_dim", d)
            .with("sliding_window", window);
        let p = AttnParams::from_attrs(&attrs).unwrap();
        let dims = [nb, bs, heads.1, d];
        let n = tables.len();
        Harness {
            attrs,
            p,
            dtype,
            k_cache: cache_buf(dtype, &dims),
            v_cache: cache_buf(dtype, &dims),
            tables,
            hist_k: vec![Vec::new(); n],
            hist_v: vec![Vec::new(); n],
            seed: 100,
        }
    }

    /// Random q, k, v for `t` tokens.
    fn data(&mut self, t: usize) -> [Vec<f32>; 3] {
        self.seed += 3;
        let (hd, kvd) = (self.p.num_heads * self.p.head_dim, self.p.num_kv_heads * self.p.head_dim);
        [rand_f32(t * hd, self.seed), rand_f32(t * kvd, self.seed + 1), rand_f32(t * kvd, self.seed + 2)]
    }

    /// One launch with new tokens `(sequence, count)` (packed in this order); returns the output.
    fn step_with(&mut self, steps: &[(usize, usize)], [q, k, v]: &[Vec<f32>; 3]) -> Result<Vec<f32>, PluginError> {
        let t: usize = steps.iter().map(|s| s.1).sum();
        let (hd, kvd) = (self.p.num_heads * self.p.head_dim, self.p.num_kv_heads * self.p.head_dim);
        let mb = self.tables[0].len();
        let bt: Vec<i32> = steps.iter().flat_map(|&(s, _)| self.tables[s].clone()).collect();
        let lens: Vec<i32> = steps.iter().map(|&(s, n)| (self.hist_k[s].len() / kvd + n) as i32).collect();
        let mut qs = vec![0i32];
        for &(_, n) in steps {
            qs.push(qs.last().unwrap() + n as i32);
        }
        let placeholder = || Buf::from_slice::<f32>(&[0], &[]);
        let mut ins = vec![
            Buf::from_slice(&[t, hd], q),
            Buf::from_slice(&[t, kvd], k),
            Buf::from_slice(&[t, kvd], v),
            std::mem::replace(&mut self.k_cache, placeholder()),
            std::mem::replace(&mut self.v_cache, placeholder()),
            Buf::from_slice(&[steps.len(), mb], &bt),
            Buf::from_slice(&[steps.len()], &lens),
            Buf::from_slice(&[steps.len() + 1], &qs),
        ];
        let (ks, vs) = FP8_SCALES;
        if self.dtype == DType::F8_E4M3 {
            ins.extend([Buf::from_slice(&[1], &[ks]), Buf::from_slice(&[1], &[vs])]);
        }
        let res = run::<PagedAttention>(&self.attrs, &mut ins);
        let mut caches = ins.drain(3..5);
        (self.k_cache, self.v_cache) = (caches.next().unwrap(), caches.next().unwrap());
        let out = res?.remove(0).to_vec::<f32>();
        let mut at = 0;
        for &(s, n) in steps {
            let r = at * kvd..(at + n) * kvd;
            self.hist_k[s].extend(k[r.clone()].iter().map(|&x| round(self.dtype, x, ks)));
            self.hist_v[s].extend(v[r].iter().map(|&x| round(self.dtype, x, vs)));
            at += n;
        }
        Ok(out)
    }

    fn step(&mut self, steps: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
        let t = steps.iter().map(|s| s.1).sum();
        let data = self.data(t);
        let out = self.step_with(steps, &data).unwrap();
        (out, self.reference(steps, &data[0]))
    }

    /// f64 causal attention of the last step's queries over each sequence's history.
    fn reference(&self, steps: &[(usize, usize)], q: &[f32]) -> Vec<f32> {
        let (h, d, g) = (self.p.num_heads, self.p.head_dim, self.p.group());
        let kvd = self.p.num_kv_heads * d;
        let mut out = Vec::new();
        let mut t = 0;
        for &(s, n) in steps {
            let len = self.hist_k[s].len() / kvd;
            for pos in len - n..len {
                for head in 0..h {
                    let qr = &q[(t * h + head) * d..][..d];
                    let keys = self.p.first_key(pos)..pos + 1;
                    let kv = |hist: &Vec<f32>, j: usize| hist[j * kvd + (head / g) * d..][..d].to_vec();
                    let scores: Vec<f64> = keys
                        .clone()
                        .map(|j| {
                            let k = kv(&self.hist_k[s], j);
                            qr.iter().zip(&k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * self.p.scale as f64
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    let mut acc = vec![0f64; d];
                    for (wj, j) in w.iter().zip(keys) {
                        for (a, v) in acc.iter_mut().zip(kv(&self.hist_v[s], j)) {
                            *a += wj / sum * v as f64;
                        }
                    }
                    out.extend(acc.iter().map(|&x| x as f32));
                }
                t += 1;
            }
        }
        out
    }
}

/// Block tables of `n` sequences with `mb` blocks each, ids scattered over the cache.
fn scattered_tables(n: usize, mb: usize) -> Vec<Vec<i32>> {
    let nb = (n * mb) as i32;
    (0..n).map(|s| (0..mb).map(|b| ((s * mb + b) as i32 * 7 + 3) % nb).collect()).collect()
}

#[test]
fn prefill_then_decode_equals_one_prefill() {
    for dtype in [DType::F32, DType::F16, DType::F8_E4M3] {
        let make = || Harness::new((4, 2), 16, 4, 8, dtype, 0, vec![vec![5, 2, 7, 0]]);
        let (mut a, mut b) = (make(), make());
        let [q, k, v] = a.data(6);
        let rows = |x: &Vec<f32>, r: std::ops::Range<usize>| {
            let w = x.len() / 6;
            x[r.start * w..r.end * w].to_vec()
        };
        a.step_with(&[(0, 5)], &[rows(&q, 0..5), rows(&k, 0..5), rows(&v, 0..5)]).unwrap();
        let decode = a.step_with(&[(0, 1)], &[rows(&q, 5..6), rows(&k, 5..6), rows(&v, 5..6)]).unwrap();
        let full = b.step_with(&[(0, 6)], &[q.clone(), k, v]).unwrap();
        assert_eq!(decode, full[5 * 64..], "{dtype}");
        assert_close(&full, &b.reference(&[(0, 6)], &q), 1e-5);
    }
}

#[test]
fn mixed_batch_equals_separate_runs() {
    let make = || Harness::new((9, 3), 64, 16, 24, DType::F16, 0, scattered_tables(3, 8));
    let (mut mixed, mut separate) = (make(), make());
    for h in [&mut mixed, &mut separate] {
        h.step(&[(1, 37)]);
    }
    let [q, k, v] = mixed.data(11);
    let out = mixed.step_with(&[(0, 7), (1, 1), (2, 3)], &[q.clone(), k.clone(), v.clone()]).unwrap();
    assert_close(&out, &mixed.reference(&[(0, 7), (1, 1), (2, 3)], &q), 1e-5);
    let (hd, kvd) = (9 * 64, 3 * 64);
    let mut pieces = Vec::new();
    for (s, r) in [(0usize, 0..7usize), (1, 7..8), (2, 8..11)] {
        let part = [
            q[r.start * hd..r.end * hd].to_vec(),
            k[r.start * kvd..r.end * kvd].to_vec(),
            v[r.start * kvd..r.end * kvd].to_vec(),
        ];
        pieces.extend(separate.step_with(&[(s, r.len())], &part).unwrap());
    }
    assert_eq!(out, pieces);
}

#[test]
fn gqa_prefill_and_decode_match_reference() {
    for (dtype, bs) in [(DType::F32, 32), (DType::F16, 16), (DType::BF16, 16)] {
        let mut h = Harness::new((9, 3), 64, bs, 32, dtype, 0, scattered_tables(4, 8));
        let (out, want) = h.step(&[(0, 70), (1, 1), (2, 33)]);
        assert_close(&out, &want, 1e-5);
        for _ in 0..3 {
            let (out, want) = h.step(&[(2, 1), (0, 1), (3, 2), (1, 1)]);
            assert_close(&out, &want, 1e-5);
        }
    }
}

#[test]
fn block_boundary_crossings() {
    let mut h = Harness::new((2, 1), 8, 4, 12, DType::F32, 0, scattered_tables(2, 6));
    for steps in [&[(0, 4), (1, 3)][..], &[(0, 1), (1, 1)], &[(0, 3), (1, 4)], &[(0, 4), (1, 1)], &[(1, 8)]] {
        let (out, want) = h.step(steps);
        assert_close(&out, &want, 1e-5);
    }
    assert_eq!(h.hist_k[1].len() / 8, 17);
}

#[test]
fn sliding_window_matches_reference() {
    let mut h = Harness::new((4, 2), 16, 4, 10, DType::F32, 5, scattered_tables(2, 5));
    let (out, want) = h.step(&[(0, 13), (1, 2)]);
    assert_close(&out, &want, 1e-5);
    let (out, want) = h.step(&[(1, 1), (0, 1)]);
    assert_close(&out, &want, 1e-5);
}

#[test]
fn sliding_window_ignores_evicted_blocks() {
    // Blocks wholly before the window may already be freed (-1) by the block manager.
    let mut h = Harness::new((2, 1), 8, 4, 6, DType::F32, 3, vec![vec![0, 1, 2, 3, 4, 5]]);
    h.step(&[(0, 9)]);
    h.tables[0][0] = -1;
    let (out, want) = h.step(&[(0, 1)]);
    assert_close(&out, &want, 1e-5);
}

#[test]
fn invalid_batches_are_errors() {
    let make = || Harness::new((2, 1), 8, 4, 4, DType::F32, 0, vec![vec![0, 1], vec![2, 3]]);
    let mut h = make();
    h.tables[1][1] = 4;
    let data = h.data(6);
    let err = h.step_with(&[(0, 1), (1, 5)], &data).unwrap_err();
    assert!(err.message().contains("block_tables[1][1] = 4 is not a cache block"), "{err}");
    let mut h = make();
    let data = h.data(9);
    let err = h.step_with(&[(0, 9)], &data).unwrap_err();
    assert!(err.message().contains("exceeds the block table"), "{err}");

    // Raw int inputs the harness would never build.
    let attrs = Attrs::new().with("num_heads", 2usize).with("num_kv_heads", 1usize).with("head_dim", 8usize);
    let ins = |lens: &[i32], qs: &[i32]| {
        let t = 2;
        vec![
            Buf::from_slice(&[t, 16], &vec![0.1f32; t * 16]),
            Buf::from_slice(&[t, 8], &vec![0.1f32; t * 8]),
            Buf::from_slice(&[t, 8], &vec![0.1f32; t * 8]),
            Buf::from_slice(&[4, 4, 1, 8], &[0f32; 128]),
            Buf::from_slice(&[4, 4, 1, 8], &[0f32; 128]),
            Buf::from_slice(&[2, 2], &[0i32, 1, 2, 3]),
            Buf::from_slice(&[2], lens),
            Buf::from_slice(&[3], qs),
        ]
    };
    let cases: [(&[i32], &[i32], &str); 3] = [
        (&[1, 0], &[0, 1, 2], "seq_len 0 is less than its 1 new tokens"),
        (&[1, 1], &[0, 1, 1], "query_start must run from 0 to T = 2"),
        (&[2, 1], &[0, 2, 1], "query_start must run from 0 to T = 2"),
    ];
    for (lens, qs, want) in cases {
        let err = run::<PagedAttention>(&attrs, &mut ins(lens, qs)).unwrap_err();
        assert!(err.message().contains(want), "{err}");
    }
    let err = run::<PagedAttention>(&attrs, &mut ins(&[1, 3], &[0, 2, 2])).unwrap_err();
    assert!(err.message().contains("query_start decreases") || err.message().contains("less than"), "{err}");
}

#[test]
fn attribute_and_shape_errors() {
    let bad = Attrs::new().with("num_heads", 9usize).with("num_kv_heads", 2usize).with("head_dim", 64usize);
    assert!(AttnParams::from_attrs(&bad).unwrap_err().message().contains("multiple"));
    let ex = &PagedAttention::examples()[0];
    let mut metas = ex.inputs.to_vec();
    metas[0] = rtllm_plugin_api::TensorMeta::of(DType::F32, &[7, 100]);
    let err = PagedAttention::infer(&metas, &ex.attrs).unwrap_err();
    assert!(err.message().contains("q width is 100, expected 576"), "{err}");
    let mut metas = ex.inputs.to_vec();
    metas[4].dtype = DType::F16;
    assert!(PagedAttention::infer(&metas, &ex.attrs).unwrap_err().message().contains("differ in dtype"));
}

#[test]
fn examples_infer_create_and_size_workspace() {
    for ex in PagedAttention::examples() {
        let out = PagedAttention::infer(&ex.inputs, &ex.attrs).unwrap();
        assert_eq!(out[0].dims, ex.inputs[0].dims);
        let k = PagedAttention::create(&ex.inputs, &ex.attrs).unwrap();
        assert!(k.workspace_bytes(&ex.inputs).unwrap() > 0);
    }
}

#[test]
fn fp8_cache_equals_attention_over_the_dequantized_cache() {
    // Prefill, then decode and chunked-prefill steps that read blocks written in earlier steps
    // (the reference's history holds each token as code * scale).
    for (heads, d, bs, window) in [((9, 3), 64, 16, 0), ((4, 2), 16, 4, 0), ((8, 1), 32, 8, 7)] {
        let mut h = Harness::new(heads, d, bs, 48, DType::F8_E4M3, window, scattered_tables(4, 12));
        let (out, want) = h.step(&[(0, 37), (1, 1), (2, 9)]);
        assert_close(&out, &want, 1e-5);
        for steps in [&[(0, 1), (1, 1), (2, 1), (3, 5)][..], &[(2, 13), (0, 1)], &[(3, 1), (1, 2), (0, 1)]] {
            let (out, want) = h.step(steps);
            assert_close(&out, &want, 1e-5);
        }
    }
}

#[test]
fn fp8_cache_stores_codes_and_refuses_bad_scales() {
    let mut h = Harness::new((2, 1), 8, 4, 4, DType::F8_E4M3, 0, vec![vec![0, 1]]);
    let [q, mut k, v] = h.data(1);
    k[0] = 1.0; // 1 / 0.0021 = 476.2: saturates at 448 (code 0x7e)
    k[1] = -0.0021 * 3.0;
    h.step_with(&[(0, 1)], &[q, k, v]).unwrap();
    let codes = h.k_cache.to_vec::<F8E4M3>();
    assert_eq!((codes[0], codes[1]), (F8E4M3(0x7e), F8E4M3(f32_to_e4m3(-3.0))));
    let attrs = h.attrs.clone();
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let mut ins = vec![
            Buf::from_slice(&[1, 16], &[0.1f32; 16]),
            Buf::from_slice(&[1, 8], &[0.1f32; 8]),
            Buf::from_slice(&[1, 8], &[0.1f32; 8]),
            cache_buf(DType::F8_E4M3, &[4, 4, 1, 8]),
            cache_buf(DType::F8_E4M3, &[4, 4, 1, 8]),
            Buf::from_slice(&[1, 2], &[0i32, 1]),
            Buf::from_slice(&[1], &[1i32]),
            Buf::from_slice(&[2], &[0i32, 1]),
            Buf::from_slice(&[1], &[1.0f32]),
            Buf::from_slice(&[1], &[bad]),
        ];
        let err = run::<PagedAttention>(&attrs, &mut ins).unwrap_err();
        assert!(err.message().contains("v_scale must be one finite positive f32"), "{err}");
    }
}
