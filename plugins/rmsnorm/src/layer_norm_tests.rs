//! Tests of `layer_norm`: results against an f64 reference (with and without bias, every
//! weight dtype, sequential and threaded), inference on symbolic rows, and errors.

use crate::LayerNorm;
use half::{bf16, f16};
use rtllm_plugin_api::testing::{data, input, output, threaded_env};
use rtllm_plugin_api::{Attrs, DType, Dim, InputView, Kernel, LaunchEnv, Op, TensorMeta};

/// `[H]` parameters stored in `dtype`, with the f32 values the kernel sees.
struct Param {
    dtype: DType,
    f32s: Vec<f32>,
    bf16s: Vec<bf16>,
    f16s: Vec<f16>,
}

impl Param {
    fn new(dtype: DType, values: Vec<f32>) -> Param {
        let bf16s: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        let f16s: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let f32s = match dtype {
            DType::BF16 => bf16s.iter().map(|v| v.to_f32()).collect(),
            DType::F16 => f16s.iter().map(|v| v.to_f32()).collect(),
            _ => values,
        };
        Param { dtype, f32s, bf16s, f16s }
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

fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, h: usize, eps: f64) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(h) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let bias = b.map_or(0.0, |b| b[i] as f64);
            y.push(((v as f64 - mean) * inv * w[i] as f64 + bias) as f32);
        }
    }
    y
}

#[test]
fn layer_norm_matches_reference() {
    for &(t, h) in &[(1usize, 1usize), (5, 7), (33, 64), (1, 576), (300, 128), (2, 1000)] {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for with_bias in [false, true] {
                let envs = [("sequential", LaunchEnv::cpu_sequential()), ("threaded", threaded_env::<u8>(&mut []))];
                for (name, mut env) in envs {
                    let ctx = env.context();
                    let mut metas = vec![TensorMeta::of(DType::F32, &[t, h]), TensorMeta::of(dtype, &[h])];
                    if with_bias {
                        metas.push(TensorMeta::of(dtype, &[h]));
                    }
                    let kernel = LayerNorm::create(&metas, &Attrs::new()).unwrap();
                    // A large offset: the two-pass variance must not lose the spread.
                    let x: Vec<f32> = data(t * h, (t * 31 + h) as u64).iter().map(|v| 3.0 * v + 50.0).collect();
                    let w = Param::new(dtype, data(h, h as u64).iter().map(|v| 1.0 + 0.5 * v).collect());
                    let b = Param::new(dtype, data(h, h as u64 + 9));
                    let want = reference(&x, &w.f32s, with_bias.then_some(&b.f32s[..]), h, 1e-5);
                    let mut y = vec![f32::NAN; t * h];
                    let mut inputs = vec![input(metas[0].clone(), &x), w.input()];
                    if with_bias {
                        inputs.push(b.input());
                    }
                    kernel.launch(&ctx, &mut inputs, &mut [output(metas[0].clone(), &mut y)]).unwrap();
                    let what = format!("layer_norm T={t} H={h} {dtype} bias={with_bias} {name}");
                    for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                        assert!((g - e).abs() <= 1e-4 * e.abs().max(1.0), "{what}: [{i}] = {g}, want {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn examples_infer_and_create() {
    let examples = LayerNorm::examples();
    assert!(examples.len() >= 8 && examples.iter().any(|e| e.inputs.len() == 3));
    for ex in &examples {
        assert_eq!(LayerNorm::infer(&ex.inputs, &ex.attrs).unwrap()[0].dims, ex.inputs[0].dims);
        LayerNorm::create(&ex.inputs, &ex.attrs).unwrap();
    }
}

#[test]
fn infer_keeps_symbolic_rows_and_rejects_bad_inputs() {
    let x = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(64)]);
    let w = TensorMeta::of(DType::F32, &[64]);
    assert_eq!(LayerNorm::infer(&[x.clone(), w.clone(), w.clone()], &Attrs::new()).unwrap()[0], x);
    let e = LayerNorm::infer(&[x.clone(), w.clone(), TensorMeta::of(DType::BF16, &[64])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("b must have the shape and dtype of w"), "{e}");
    let e = LayerNorm::infer(&[x.clone(), TensorMeta::of(DType::F32, &[63])], &Attrs::new()).unwrap_err();
    assert!(e.message().starts_with("layer_norm: w must be [H]"), "{e}");
    let e = LayerNorm::infer(std::slice::from_ref(&x), &Attrs::new()).unwrap_err();
    assert!(e.message().contains("got 1 inputs"), "{e}");
    let e = LayerNorm::infer(&[x, w], &Attrs::new().with("eps", -1.0)).unwrap_err();
    assert!(e.message().contains("'eps'"), "{e}");
}

#[test]
fn launch_rejects_bad_tensors_and_handles_empty_ones() {
    let mut env = LaunchEnv::cpu_sequential();
    let ctx = env.context();
    let f = |d: &[usize]| TensorMeta::of(DType::F32, d);
    let kernel = LayerNorm::create(&[f(&[2, 4]), f(&[4]), f(&[4])], &Attrs::new()).unwrap();
    let (x, w, b, mut y) = (vec![1.0f32; 8], vec![1.0f32; 4], vec![0.0f32; 3], vec![0.0f32; 8]);
    let e = kernel
        .launch(
            &ctx,
            &mut [input(f(&[2, 4]), &x), input(f(&[4]), &w), input(f(&[3]), &b)],
            &mut [output(f(&[2, 4]), &mut y)],
        )
        .unwrap_err();
    assert!(e.message().contains("b must be f32[4]"), "{e}");
    let e = kernel.launch(&ctx, &mut [input(f(&[2, 4]), &x)], &mut [output(f(&[2, 4]), &mut y)]).unwrap_err();
    assert!(e.message().contains("2 or 3 inputs and 1 output"), "{e}");
    // A constant row has zero variance: y = b, finite.
    let (x, w, b, mut y) = (vec![7.0f32; 4], vec![2.0f32; 4], vec![0.5f32; 4], vec![f32::NAN; 4]);
    kernel
        .launch(
            &ctx,
            &mut [input(f(&[1, 4]), &x), input(f(&[4]), &w), input(f(&[4]), &b)],
            &mut [output(f(&[1, 4]), &mut y)],
        )
        .unwrap();
    assert_eq!(y, vec![0.5; 4]);
    let (x, mut y) = (vec![0.0f32; 0], vec![0.0f32; 0]);
    kernel
        .launch(
            &threaded_env::<u8>(&mut []).context(),
            &mut [input(f(&[0, 4]), &x), input(f(&[4]), &w), input(f(&[4]), &b)],
            &mut [output(f(&[0, 4]), &mut y)],
        )
        .unwrap();
}
