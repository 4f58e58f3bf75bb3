//! Tests of `rmsnorm` and `fused_add_rmsnorm`: results against a small f64 reference, run
//! sequentially and on several threads, for every weight dtype; inference and launch errors.

use crate::{FusedAddRmsNorm, RmsNorm};
use half::{bf16, f16};
use rtllm_plugin_api::testing::{data, input, output, threaded_env};
use rtllm_plugin_api::{Attrs, DType, Dim, InputView, Kernel, LaunchEnv, Op, TensorMeta};

/// A weight in one dtype plus the exact f32 values the kernel sees.
struct Weight {
    dtype: DType,
    f32s: Vec<f32>,
    bf16s: Vec<bf16>,
    f16s: Vec<f16>,
}

impl Weight {
    fn new(dtype: DType, h: usize, seed: u64) -> Weight {
        let src: Vec<f32> = data(h, seed).iter().map(|v| 1.0 + 0.5 * v).collect();
        let bf16s: Vec<bf16> = src.iter().map(|&v| bf16::from_f32(v)).collect();
        let f16s: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
        let f32s = match dtype {
            DType::BF16 => bf16s.iter().map(|v| v.to_f32()).collect(),
            DType::F16 => f16s.iter().map(|v| v.to_f32()).collect(),
            _ => src,
        };
        Weight { dtype, f32s, bf16s, f16s }
    }

    fn input(&self) -> InputView<'_> {
        let meta = TensorMeta::of(self.dtype, &[self.f32s.len()]);
        match self.dtype {
            DType::BF16 => input(meta, &self.bf16s),
            DType::F16 => input(meta, &self.f16s),
            _ => input(meta, &self.f32s),
        }
    }
}

fn reference(x: &[f32], w: &[f32], h: usize, eps: f32) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(h) {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        y.extend(row.iter().zip(w).map(|(&v, &g)| (v as f64 * inv * g as f64) as f32));
    }
    y
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, e)) in got.iter().zip(want).enumerate() {
        assert!((g - e).abs() <= 2e-5 * e.abs().max(1.0), "{what}: [{i}] = {g}, want {e}");
    }
}

fn contexts() -> Vec<(&'static str, LaunchEnv<'static>)> {
    vec![("sequential", LaunchEnv::cpu_sequential()), ("threaded", threaded_env::<u8>(&mut []))]
}

const SHAPES: [(usize, usize); 9] =
    [(1, 1), (5, 7), (33, 64), (1, 576), (5, 576), (33, 1000), (1, 1000), (300, 128), (2, 9)];

#[test]
fn rmsnorm_matches_reference() {
    for &(t, h) in &SHAPES {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for (name, mut env) in contexts() {
                let ctx = env.context();
                let eps = 1e-5;
                let kernel = RmsNorm::create(
                    &[TensorMeta::of(DType::F32, &[t, h]), TensorMeta::of(dtype, &[h])],
                    &Attrs::new().with("eps", eps as f64),
                )
                .unwrap();
                let x = data(t * h, (t * 31 + h) as u64);
                let w = Weight::new(dtype, h, h as u64);
                let want = reference(&x, &w.f32s, h, eps);
                let mut y = vec![f32::NAN; t * h];
                let mut inputs = [input(TensorMeta::of(DType::F32, &[t, h]), &x), w.input()];
                kernel.launch(&ctx, &mut inputs, &mut [output(TensorMeta::of(DType::F32, &[t, h]), &mut y)]).unwrap();
                assert_close(&y, &want, &format!("rmsnorm T={t} H={h} {dtype} {name}"));
            }
        }
    }
}

#[test]
fn fused_add_matches_reference() {
    for &(t, h) in &SHAPES {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for (name, mut env) in contexts() {
                let ctx = env.context();
                let metas = [
                    TensorMeta::of(DType::F32, &[t, h]),
                    TensorMeta::of(DType::F32, &[t, h]),
                    TensorMeta::of(dtype, &[h]),
                ];
                let kernel = FusedAddRmsNorm::create(&metas, &Attrs::new()).unwrap();
                let x = data(t * h, (t * 7 + h) as u64);
                let res = data(t * h, (t * 13 + h + 5) as u64);
                let w = Weight::new(dtype, h, h as u64 + 1);
                let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
                let want = reference(&sum, &w.f32s, h, 1e-6);
                let (mut y, mut r_out) = (vec![f32::NAN; t * h], vec![f32::NAN; t * h]);
                let mut inputs = [input(metas[0].clone(), &x), input(metas[1].clone(), &res), w.input()];
                let mut outputs = [output(metas[0].clone(), &mut y), output(metas[0].clone(), &mut r_out)];
                kernel.launch(&ctx, &mut inputs, &mut outputs).unwrap();
                assert_eq!(r_out, sum, "residual_out T={t} H={h} {name}");
                assert_close(&y, &want, &format!("fused_add_rmsnorm T={t} H={h} {dtype} {name}"));
            }
        }
    }
}

#[test]
fn examples_infer_and_create() {
    let rms = RmsNorm::examples();
    let fused = FusedAddRmsNorm::examples();
    assert!(rms.len() >= 8 && fused.len() == rms.len());
    for ex in &rms {
        let out = RmsNorm::infer(&ex.inputs, &ex.attrs).unwrap();
        assert_eq!(out[0].dims, ex.inputs[0].dims);
        RmsNorm::create(&ex.inputs, &ex.attrs).unwrap();
    }
    for ex in &fused {
        let out = FusedAddRmsNorm::infer(&ex.inputs, &ex.attrs).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.dims == ex.inputs[0].dims && o.dtype == DType::F32));
        FusedAddRmsNorm::create(&ex.inputs, &ex.attrs).unwrap();
    }
}

#[test]
fn infer_keeps_symbolic_rows_and_names_shapes_in_errors() {
    let t = Dim::sym("num_tokens");
    let x = TensorMeta::new(DType::F32, [t.clone(), Dim::from(576)]);
    let w = TensorMeta::of(DType::BF16, &[576]);
    assert_eq!(RmsNorm::infer(&[x.clone(), w.clone()], &Attrs::new()).unwrap()[0], x);
    assert_eq!(FusedAddRmsNorm::infer(&[x.clone(), x.clone(), w.clone()], &Attrs::new()).unwrap().len(), 2);

    let bad_w = TensorMeta::of(DType::F32, &[575]);
    let e = RmsNorm::infer(&[x.clone(), bad_w.clone()], &Attrs::new()).unwrap_err();
    assert!(e.message().starts_with("rmsnorm: ") && e.message().contains("f32[575]"), "{e}");
    let other = TensorMeta::new(DType::F32, [Dim::sym("other"), Dim::from(576)]);
    let e = FusedAddRmsNorm::infer(&[x.clone(), other, w.clone()], &Attrs::new()).unwrap_err();
    assert!(e.message().starts_with("fused_add_rmsnorm: ") && e.message().contains("f32[other, 576]"), "{e}");
    let e = RmsNorm::infer(std::slice::from_ref(&x), &Attrs::new()).unwrap_err();
    assert!(e.message().contains("got 1 inputs"), "{e}");
    let e = RmsNorm::infer(&[TensorMeta::of(DType::F16, &[2, 576]), w.clone()], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("x must be f32 [T, H]"), "{e}");
    let e = RmsNorm::infer(&[x, w], &Attrs::new().with("eps", f64::NAN)).unwrap_err();
    assert!(e.message().contains("'eps'"), "{e}");
}

#[test]
fn launch_rejects_bad_tensors() {
    let mut env = LaunchEnv::cpu_sequential();
    let ctx = env.context();
    let f = |d: &[usize]| TensorMeta::of(DType::F32, d);
    let kernel = RmsNorm::create(&[f(&[2, 4]), f(&[4])], &Attrs::new()).unwrap();
    let (x, w, mut y) = (vec![1.0f32; 8], vec![1.0f32; 4], vec![0.0f32; 8]);
    let e = kernel
        .launch(&ctx, &mut [input(f(&[2, 4]), &x), input(f(&[3]), &w)], &mut [output(f(&[2, 4]), &mut y)])
        .unwrap_err();
    assert!(e.message().contains("w must be [4]"), "{e}");
    let e = kernel
        .launch(&ctx, &mut [input(f(&[2, 4]), &x), input(f(&[4]), &w)], &mut [output(f(&[4, 2]), &mut y)])
        .unwrap_err();
    assert!(e.message().contains("y must be [2, 4]"), "{e}");
    let e = kernel.launch(&ctx, &mut [input(f(&[2, 4]), &x)], &mut [output(f(&[2, 4]), &mut y)]).unwrap_err();
    assert!(e.message().contains("2 inputs and 1 output"), "{e}");
    let xi = vec![0i32; 8];
    let e = kernel
        .launch(
            &ctx,
            &mut [input(TensorMeta::of(DType::I32, &[2, 4]), &xi), input(f(&[4]), &w)],
            &mut [output(f(&[2, 4]), &mut y)],
        )
        .unwrap_err();
    assert!(e.message().contains("rmsnorm: x"), "{e}");

    let fused = FusedAddRmsNorm::create(&[f(&[2, 4]), f(&[2, 4]), f(&[4])], &Attrs::new()).unwrap();
    let (r, mut ro) = (vec![0.0f32; 8], vec![0.0f32; 8]);
    let e = fused
        .launch(
            &ctx,
            &mut [input(f(&[2, 4]), &x), input(f(&[1, 4]), &r), input(f(&[4]), &w)],
            &mut [output(f(&[2, 4]), &mut y), output(f(&[2, 4]), &mut ro)],
        )
        .unwrap_err();
    assert!(e.message().contains("residual must be [2, 4]"), "{e}");
    let e = fused.launch(
        &ctx,
        &mut [input(f(&[2, 4]), &x), input(f(&[2, 4]), &r), input(f(&[4]), &w)],
        &mut [output(f(&[2, 4]), &mut y)],
    );
    assert!(e.unwrap_err().message().contains("3 inputs and 2 outputs"));
}

#[test]
fn empty_tensors_are_fine() {
    let mut env = threaded_env::<u8>(&mut []);
    let ctx = env.context();
    let f = |d: &[usize]| TensorMeta::of(DType::F32, d);
    for (t, h) in [(0usize, 8usize), (3, 0)] {
        let kernel = RmsNorm::create(&[f(&[t, h]), f(&[h])], &Attrs::new()).unwrap();
        let (x, w, mut y) = (vec![0.0f32; t * h], vec![1.0f32; h], vec![0.0f32; t * h]);
        kernel
            .launch(&ctx, &mut [input(f(&[t, h]), &x), input(f(&[h]), &w)], &mut [output(f(&[t, h]), &mut y)])
            .unwrap();
    }
}

#[test]
fn zero_row_stays_finite() {
    let f = |d: &[usize]| TensorMeta::of(DType::F32, d);
    let kernel = RmsNorm::create(&[f(&[1, 4]), f(&[4])], &Attrs::new()).unwrap();
    let (x, w, mut y) = (vec![0.0f32; 4], vec![1.0f32; 4], vec![f32::NAN; 4]);
    let mut env = LaunchEnv::cpu_sequential();
    let ctx = env.context();
    kernel.launch(&ctx, &mut [input(f(&[1, 4]), &x), input(f(&[4]), &w)], &mut [output(f(&[1, 4]), &mut y)]).unwrap();
    assert_eq!(y, vec![0.0; 4]);
}
