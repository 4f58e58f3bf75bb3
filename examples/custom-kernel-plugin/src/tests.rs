//! Unit tests: the fast formula against the f64 definition over a wide range, both kernels on
//! a pool of real threads, inference on symbolic shapes, and errors on bad inputs.

use crate::fast_math;
use crate::reference::gelu_tanh_f64;
use crate::{GeluTanh, GeluTanhReference};
use rtllm_plugin_api::testing::{input, output, threaded_env};
use rtllm_plugin_api::{Attrs, DType, Dim, Kernel, LaunchEnv, Op, TensorMeta};

fn f32s(dims: &[usize]) -> TensorMeta {
    TensorMeta::of(DType::F32, dims)
}

fn close(got: f32, want: f64) -> bool {
    (got as f64 - want).abs() <= 2e-6 * want.abs().max(1e-3)
}

#[test]
fn fast_formula_matches_the_definition() {
    let mut x = -12.0f32;
    while x <= 12.0 {
        let want = gelu_tanh_f64(x as f64);
        assert!(close(fast_math::gelu_tanh(x), want), "gelu_tanh({x}) = {}, want {want}", fast_math::gelu_tanh(x));
        x += 0.001_7;
    }
    // PyTorch's gelu(approximate="tanh") at a few points.
    for (x, want) in [(1.0f32, 0.841_192_f64), (-1.0, -0.158_808), (0.5, 0.345_714), (3.0, 2.996_363)] {
        assert!((fast_math::gelu_tanh(x) as f64 - want).abs() < 2e-6, "{x}");
    }
    assert_eq!(fast_math::gelu_tanh(0.0), 0.0);
    assert_eq!(fast_math::gelu_tanh(1e30), 1e30);
    assert_eq!(fast_math::gelu_tanh(-1e30), 0.0);
    assert_eq!(fast_math::gelu_tanh(-20.0), 0.0);
    assert!(fast_math::gelu_tanh(f32::NAN).is_nan());
    assert_eq!(fast_math::exp(-100.0), 0.0);
    for x in [-87.0f32, -20.0, -1.0, 0.0, 0.3, 1.0, 20.0, 88.0] {
        let want = (x as f64).exp();
        assert!(((fast_math::exp(x) as f64) - want).abs() <= 3e-7 * want, "exp({x})");
    }
}

#[test]
fn both_kernels_agree_with_the_definition_on_many_threads() {
    let n = 100_003;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 20_000) as f32 / 1000.0 - 10.0).collect();
    let want: Vec<f64> = x.iter().map(|&v| gelu_tanh_f64(v as f64)).collect();
    let metas = [TensorMeta::of(DType::F32, &[n])];
    let kernels: [(&str, Box<dyn Kernel>); 2] = [
        ("fast", Box::new(GeluTanh::create(&metas, &Attrs::new()).unwrap())),
        ("reference", Box::new(GeluTanhReference::create(&metas, &Attrs::new()).unwrap())),
    ];
    for (name, kernel) in kernels {
        for mut env in [LaunchEnv::cpu_sequential(), threaded_env::<u8>(&mut [])] {
            let mut y = vec![f32::NAN; n];
            kernel.launch(&env.context(), &mut [input(f32s(&[n]), &x)], &mut [output(f32s(&[n]), &mut y)]).unwrap();
            for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                assert!(close(g, w), "{name}: y[{i}] = {g}, want {w}");
            }
        }
    }
}

#[test]
fn inference_keeps_symbolic_dims_and_rejects_bad_inputs() {
    let x = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(64)]);
    assert_eq!(GeluTanh::infer(std::slice::from_ref(&x), &Attrs::new()).unwrap(), vec![x.clone()]);
    let e = GeluTanh::infer(&[x.clone(), x], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("gelu_tanh takes 1 inputs, got 2"), "{e}");
    let e = GeluTanh::infer(&[TensorMeta::of(DType::BF16, &[4])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("gelu_tanh: x must be f32"), "{e}");
}

#[test]
fn launch_rejects_mismatched_outputs() {
    let kernel = GeluTanh::create(&[TensorMeta::of(DType::F32, &[4])], &Attrs::new()).unwrap();
    let (x, mut y) = (vec![0.0f32; 4], vec![0.0f32; 3]);
    let mut env = LaunchEnv::cpu_sequential();
    let e = kernel.launch(&env.context(), &mut [input(f32s(&[4]), &x)], &mut [output(f32s(&[3]), &mut y)]).unwrap_err();
    assert!(e.message().contains("does not match"), "{e}");
    let e = kernel.launch(&env.context(), &mut [], &mut [output(f32s(&[3]), &mut y)]).unwrap_err();
    assert!(e.message().contains("1 input and 1 output"), "{e}");
}
