//! Unit tests: the fast formula against the f64 definition over a wide range, both kernels on
//! a pool of real threads, inference on symbolic shapes, and errors on bad inputs.

use crate::fast_math;
use crate::reference::gelu_tanh_f64;
use crate::{GeluTanh, GeluTanhReference};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Dim, HostServices, Kernel, LaunchContext, Op, TaskFn, TensorArg, TensorMeta,
};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

extern "C" fn threaded_for(_pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    let next = AtomicUsize::new(0);
    let task = task as usize;
    std::thread::scope(|s| {
        for _ in 0..3.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                (run.run)(task as *const c_void, i);
            });
        }
    });
}

fn threaded() -> LaunchContext {
    let mut ctx = LaunchContext::cpu_sequential();
    ctx.host = HostServices {
        pool: std::ptr::null(),
        num_threads: 3,
        parallel_for: threaded_for,
    };
    ctx
}

fn arg(dims: &[usize], data: &mut [f32]) -> TensorArg {
    // SAFETY: the tests keep `data` alive and sized for `dims` while the argument is used.
    unsafe {
        TensorArg::new(
            TensorMeta::of(DType::F32, dims),
            data.as_mut_ptr() as *mut u8,
            DeviceKind::Cpu,
        )
    }
}

fn close(got: f32, want: f64) -> bool {
    (got as f64 - want).abs() <= 2e-6 * want.abs().max(1e-3)
}

#[test]
fn fast_formula_matches_the_definition() {
    let mut x = -12.0f32;
    while x <= 12.0 {
        let want = gelu_tanh_f64(x as f64);
        assert!(
            close(fast_math::gelu_tanh(x), want),
            "gelu_tanh({x}) = {}, want {want}",
            fast_math::gelu_tanh(x)
        );
        x += 0.001_7;
    }
    // PyTorch's gelu(approximate="tanh") at a few points.
    for (x, want) in [
        (1.0f32, 0.841_192_f64),
        (-1.0, -0.158_808),
        (0.5, 0.345_714),
        (3.0, 2.996_363),
    ] {
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
    let mut x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 20_000) as f32 / 1000.0 - 10.0).collect();
    let want: Vec<f64> = x.iter().map(|&v| gelu_tanh_f64(v as f64)).collect();
    let metas = [TensorMeta::of(DType::F32, &[n])];
    let kernels: [(&str, Box<dyn Kernel>); 2] = [
        ("fast", Box::new(GeluTanh::create(&metas, &Attrs::new()).unwrap())),
        (
            "reference",
            Box::new(GeluTanhReference::create(&metas, &Attrs::new()).unwrap()),
        ),
    ];
    for (name, kernel) in kernels {
        for ctx in [LaunchContext::cpu_sequential(), threaded()] {
            let mut y = vec![f32::NAN; n];
            kernel.launch(&ctx, &[arg(&[n], &mut x)], &[arg(&[n], &mut y)]).unwrap();
            for (i, (&g, &w)) in y.iter().zip(&want).enumerate() {
                assert!(close(g, w), "{name}: y[{i}] = {g}, want {w}");
            }
        }
    }
}

#[test]
fn inference_keeps_symbolic_dims_and_rejects_bad_inputs() {
    let x = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(64)]);
    assert_eq!(
        GeluTanh::infer(std::slice::from_ref(&x), &Attrs::new()).unwrap(),
        vec![x.clone()]
    );
    let e = GeluTanh::infer(&[x.clone(), x], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("gelu_tanh takes 1 inputs, got 2"), "{e}");
    let e = GeluTanh::infer(&[TensorMeta::of(DType::BF16, &[4])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("gelu_tanh: x must be f32"), "{e}");
}

#[test]
fn launch_rejects_mismatched_outputs() {
    let kernel = GeluTanh::create(&[TensorMeta::of(DType::F32, &[4])], &Attrs::new()).unwrap();
    let (mut x, mut y) = (vec![0.0f32; 4], vec![0.0f32; 3]);
    let e = kernel
        .launch(
            &LaunchContext::cpu_sequential(),
            &[arg(&[4], &mut x)],
            &[arg(&[3], &mut y)],
        )
        .unwrap_err();
    assert!(e.message().contains("does not match"), "{e}");
    let e = kernel
        .launch(&LaunchContext::cpu_sequential(), &[], &[arg(&[3], &mut y)])
        .unwrap_err();
    assert!(e.message().contains("1 input and 1 output"), "{e}");
}
