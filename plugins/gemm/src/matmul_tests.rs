//! Tests of the `matmul` op: inference errors, launch-time checks, and results against a
//! small naive product on both instruction sets, sequential and threaded, with and without a
//! workspace; plus an ignored throughput benchmark.

use crate::test_pool::pooled;
use crate::{driver, Isa, Matmul, MatmulKernel};
use half::{bf16, f16};
use rtllm_plugin_api::testing::{data, input, output, threaded_env};
use rtllm_plugin_api::{Attrs, DType, Dim, InputView, Kernel, LaunchContext, LaunchEnv, Op, TensorMeta};

/// Weights in every dtype, plus their exact f32 values (what the kernel computes with).
struct Weights {
    dtype: DType,
    f32s: Vec<f32>,
    bf16s: Vec<bf16>,
    f16s: Vec<f16>,
}

impl Weights {
    fn new(dtype: DType, src: &[f32]) -> Weights {
        let bf16s: Vec<bf16> = src.iter().map(|&v| bf16::from_f32(v)).collect();
        let f16s: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
        let f32s = match dtype {
            DType::BF16 => bf16s.iter().map(|v| v.to_f32()).collect(),
            DType::F16 => f16s.iter().map(|v| v.to_f32()).collect(),
            _ => src.to_vec(),
        };
        Weights { dtype, f32s, bf16s, f16s }
    }

    fn arg(&self, n: usize, k: usize) -> InputView<'_> {
        let meta = TensorMeta::of(self.dtype, &[n, k]);
        match self.dtype {
            DType::BF16 => input(meta, &self.bf16s),
            DType::F16 => input(meta, &self.f16s),
            _ => input(meta, &self.f32s),
        }
    }
}

fn naive(x: &[f32], w: &[f32], bias: Option<&[f32]>, t: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; t * n];
    for i in 0..t {
        for j in 0..n {
            let dot: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
            y[i * n + j] = dot as f32 + bias.map_or(0.0, |b| b[j]);
        }
    }
    y
}

/// Runs the kernel on (t, k, n) and compares with the naive product.
fn check_case(
    kernel: &MatmulKernel,
    ctx: &LaunchContext,
    (t, k, n): (usize, usize, usize),
    dtype: DType,
    with_bias: bool,
) {
    let seed = (t * 1_000_003 + k * 1009 + n) as u64;
    let x = data(t * k, seed);
    let w = Weights::new(dtype, &data(n * k, seed + 1));
    let bias = data(n, seed + 2);
    let want = naive(&x, &w.f32s, with_bias.then_some(&bias[..]), t, k, n);
    let mut y = vec![f32::NAN; t * n];
    let mut inputs = vec![input(TensorMeta::of(DType::F32, &[t, k]), &x), w.arg(n, k)];
    if with_bias {
        inputs.push(input(TensorMeta::of(DType::F32, &[n]), &bias));
    }
    kernel.launch(ctx, &mut inputs, &mut [output(TensorMeta::of(DType::F32, &[t, n]), &mut y)]).unwrap();
    let tol = 1e-5 * (k as f32).sqrt().max(1.0) + 1e-6;
    for (i, (g, e)) in y.iter().zip(&want).enumerate() {
        assert!(
            (g - e).abs() <= tol * e.abs().max(1.0),
            "T={t} K={k} N={n} {dtype} bias={with_bias} isa={:?}: y[{i}] = {g}, want {e}",
            kernel.isa()
        );
    }
}

fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    if Isa::detect() != Isa::Portable {
        v.push(Isa::detect());
    }
    v
}

const SHAPES: [(usize, usize, usize); 13] = [
    (1, 64, 1),
    (1, 577, 130),
    (1, 7, 13),
    (2, 96, 13),
    (3, 577, 130),
    (4, 64, 9),
    (5, 8, 130),
    (17, 577, 13),
    (17, 96, 130),
    (64, 64, 130),
    (33, 1600, 70),
    (64, 1, 3),
    (100, 600, 9),
];

#[test]
fn matches_naive_sequential_and_threaded() {
    for isa in isas() {
        let kernel = MatmulKernel::with_isa(isa).unwrap();
        for &(t, k, n) in &SHAPES {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let mut ws = vec![0.0f32; driver::workspace_bytes(n, k) / 4];
                let bias = (t + k + n) % 2 == 0;
                check_case(&kernel, &LaunchEnv::cpu_sequential().context(), (t, k, n), dtype, bias);
                check_case(&kernel, &threaded_env(&mut ws).context(), (t, k, n), dtype, !bias);
                check_case(&kernel, &threaded_env::<u8>(&mut []).context(), (t, k, n), dtype, bias);
            }
        }
    }
}

#[test]
fn examples_infer_and_run() {
    let examples = Matmul::examples();
    assert!(examples.len() >= 10);
    for ex in examples {
        let inputs = ex.inputs.to_vec();
        let out = Matmul::infer(&inputs, &ex.attrs).unwrap();
        let kernel = Matmul::create(&inputs, &ex.attrs).unwrap();
        let shape = |m: &TensorMeta| m.shape().unwrap();
        let (t, k, n) = (shape(&inputs[0])[0], shape(&inputs[0])[1], shape(&inputs[1])[0]);
        assert_eq!(shape(&out[0]), vec![t, n]);
        let mut ws = vec![0.0f32; kernel.workspace_bytes(&inputs).unwrap() / 4];
        check_case(&kernel, &threaded_env(&mut ws).context(), (t, k, n), inputs[1].dtype, inputs.len() == 3);
    }
}

#[test]
fn zero_depth_gives_bias() {
    let kernel = MatmulKernel::with_isa(Isa::detect()).unwrap();
    // 2 rows run the dot-product tiles, 64 rows the packed kernel (workspace given).
    for t in [2usize, 64] {
        let (x, w, b) = (Vec::<f32>::new(), Vec::<f32>::new(), vec![1.5f32, -2.0, 0.25]);
        let mut y = vec![9.0f32; t * 3];
        let mut ws = vec![0.0f32; 1024];
        let mut inputs = [
            input(TensorMeta::of(DType::F32, &[t, 0]), &x),
            input(TensorMeta::of(DType::F32, &[3, 0]), &w),
            input(TensorMeta::of(DType::F32, &[3]), &b),
        ];
        let mut out = [output(TensorMeta::of(DType::F32, &[t, 3]), &mut y)];
        kernel.launch(&threaded_env(&mut ws).context(), &mut inputs, &mut out).unwrap();
        drop(out);
        assert_eq!(y, [1.5, -2.0, 0.25].repeat(t), "T={t}");
    }
}

fn metas(x: &[Dim], w: (DType, &[Dim]), bias: Option<&[Dim]>) -> Vec<TensorMeta> {
    let mut v = vec![TensorMeta::new(DType::F32, x.iter().cloned()), TensorMeta::new(w.0, w.1.iter().cloned())];
    if let Some(b) = bias {
        v.push(TensorMeta::new(DType::F32, b.iter().cloned()));
    }
    v
}

#[test]
fn infer_passes_symbolic_tokens_through() {
    let (t, k, n) = (Dim::sym("num_tokens"), Dim::from(576), Dim::from(1536));
    let out = Matmul::infer(
        &metas(&[t.clone(), k.clone()], (DType::BF16, &[n.clone(), k]), Some(std::slice::from_ref(&n))),
        &Attrs::new(),
    )
    .unwrap();
    assert_eq!(out, vec![TensorMeta::new(DType::F32, [t, n])]);
}

#[test]
fn infer_errors_name_op_and_shapes() {
    let d = |v: usize| Dim::from(v);
    let t = Dim::sym("T");
    let cases: Vec<(Vec<TensorMeta>, &str)> = vec![
        (metas(&[t.clone(), d(576)], (DType::F32, &[d(8), d(577)]), None), "f32[T, 576]"),
        (metas(&[t.clone(), d(4)], (DType::F32, &[d(8), d(4)]), Some(&[d(9)])), "bias must be [N] with N=8"),
        (metas(&[d(4)], (DType::F32, &[d(8), d(4)]), None), "x must be [T, K]"),
        (metas(&[t.clone(), d(4)], (DType::I32, &[d(8), d(4)]), None), "w must be f32, bf16 or f16"),
        (vec![TensorMeta::of(DType::F32, &[2, 2])], "got 1 inputs"),
    ];
    for (inputs, needle) in cases {
        let e = Matmul::infer(&inputs, &Attrs::new()).unwrap_err();
        assert!(e.message().starts_with("matmul: "), "{e}");
        assert!(e.message().contains(needle), "{e} lacks {needle}");
    }
    let e = Matmul::infer(&metas(&[t, d(576)], (DType::F32, &[d(8), d(577)]), None), &Attrs::new()).unwrap_err();
    assert!(e.message().contains("f32[8, 577]"), "{e}");
}

#[test]
fn launch_rejects_bad_tensors() {
    let kernel = MatmulKernel::with_isa(Isa::Portable).unwrap();
    let mut env = LaunchEnv::cpu_sequential();
    let (x, w, mut y, b) = (vec![0.0f32; 6], vec![0.0f32; 12], vec![0.0f32; 8], vec![0.0f32; 3]);
    let xi = vec![0i32; 6];
    let f = |dims: &[usize]| TensorMeta::of(DType::F32, dims);
    let mut launch = |inputs: &mut [InputView<'_>], out: Option<&[usize]>| {
        let mut outs = match out {
            Some(d) => vec![output(f(d), &mut y)],
            None => Vec::new(),
        };
        kernel.launch(&env.context(), inputs, &mut outs).unwrap_err().message().to_string()
    };
    let bad_k = launch(&mut [input(f(&[2, 3]), &x), input(f(&[3, 4]), &w)], Some(&[2, 3]));
    assert!(bad_k.contains("launch shapes disagree"), "{bad_k}");
    let bad_y = launch(&mut [input(f(&[2, 3]), &x), input(f(&[4, 3]), &w)], Some(&[2, 3]));
    assert!(bad_y.contains("y f32[2, 3]"), "{bad_y}");
    let bad_bias = launch(&mut [input(f(&[2, 3]), &x), input(f(&[4, 3]), &w), input(f(&[3]), &b)], Some(&[2, 4]));
    assert!(bad_bias.contains("bias must be [4]"), "{bad_bias}");
    let bad_dtype =
        launch(&mut [input(TensorMeta::of(DType::I32, &[2, 3]), &xi), input(f(&[4, 3]), &w)], Some(&[2, 4]));
    assert!(bad_dtype.contains("matmul: x"), "{bad_dtype}");
    let no_out = launch(&mut [input(f(&[2, 3]), &x), input(f(&[4, 3]), &w)], None);
    assert!(no_out.contains("1 output"), "{no_out}");
}

#[test]
fn workspace_holds_a_packed_block_per_task() {
    let kernel = MatmulKernel::with_isa(Isa::Portable).unwrap();
    let m = |t, dt, n| vec![TensorMeta::of(DType::F32, &[t, 577]), TensorMeta::of(dt, &[n, 577])];
    assert_eq!(kernel.workspace_bytes(&m(64, DType::F32, 130)).unwrap(), driver::MAX_TASKS * 64 * 577 * 4);
    assert_eq!(kernel.workspace_bytes(&m(16, DType::BF16, 13)).unwrap(), driver::MAX_TASKS * 16 * 577 * 4);
    // Too few tokens to pack: no workspace.
    assert_eq!(kernel.workspace_bytes(&m(32, DType::F32, 130)).unwrap(), 0);
    assert_eq!(kernel.workspace_bytes(&m(8, DType::F16, 130)).unwrap(), 0);
    let sym = vec![TensorMeta::of(DType::F32, &[64, 4]), TensorMeta::new(DType::F16, [Dim::sym("N"), Dim::from(4)])];
    assert!(kernel.workspace_bytes(&sym).is_err());
}

/// CPU time this thread has used, from /proc (Linux; clock ticks of 10 ms).
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Throughput on the shapes of a small model; run with
/// `cargo test -p rtllm-gemm -- --ignored --nocapture bench_matmul`.
/// `BENCH_THREADS` (default 2) sizes a rayon pool like the host's; with 1 the kernel runs on
/// the test thread and the report adds GFLOP/s per CPU-second (what a quiet core would do,
/// when other processes share the machine). `BENCH_SHAPES="T,K,N;T,K,N"` overrides shapes.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_matmul() {
    let threads: usize = std::env::var("BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    fn pool_env<'a>(pool: &'a rayon::ThreadPool, ws: &'a mut [f32]) -> LaunchEnv<'a> {
        match pool.current_num_threads() {
            1 => rtllm_plugin_api::testing::sequential_env(ws),
            _ => pooled(pool, ws),
        }
    }
    let shapes: Vec<(usize, usize, usize)> = match std::env::var("BENCH_SHAPES") {
        Ok(v) => v
            .split(';')
            .filter_map(|s| match s.split(',').map(|d| d.trim().parse().ok()).collect::<Option<Vec<usize>>>()?[..] {
                [t, k, n] => Some((t, k, n)),
                _ => None,
            })
            .collect(),
        Err(_) => vec![(1, 576, 576), (1, 576, 1536), (128, 576, 576), (128, 576, 1536)],
    };
    let kernel = MatmulKernel::with_isa(Isa::detect()).unwrap();
    for (t, k, n) in shapes {
        for dtype in [DType::F32, DType::BF16] {
            let x = data(t * k, 1);
            let w = Weights::new(dtype, &data(n * k, 2));
            let mut y = vec![0.0f32; t * n];
            // BENCH_NO_WORKSPACE=1 measures the in-place (unpacked) path.
            let ws_len =
                if std::env::var_os("BENCH_NO_WORKSPACE").is_some() { 0 } else { driver::workspace_bytes(n, k) / 4 };
            let mut ws = vec![0.0f32; ws_len];
            let mut env = pool_env(&pool, &mut ws);
            let ctx = env.context();
            let mut inputs = [input(TensorMeta::of(DType::F32, &[t, k]), &x), w.arg(n, k)];
            let mut out = [output(TensorMeta::of(DType::F32, &[t, n]), &mut y)];
            let flops = 2.0 * (t * k * n) as f64;
            let iters = (1e10 / flops).clamp(20.0, 200_000.0) as usize;
            for _ in 0..iters / 10 + 1 {
                kernel.launch(&ctx, &mut inputs, &mut out).unwrap();
            }
            let (start, cpu0) = (std::time::Instant::now(), thread_cpu_secs());
            for _ in 0..iters {
                kernel.launch(&ctx, &mut inputs, &mut out).unwrap();
            }
            let secs = start.elapsed().as_secs_f64() / iters as f64;
            let cpu = match (cpu0, thread_cpu_secs()) {
                (Some(a), Some(b)) if threads == 1 && b > a => {
                    format!("  ({:.1} GFLOP/s per CPU-second)", flops * iters as f64 / (b - a) / 1e9)
                }
                _ => String::new(),
            };
            let wbytes = (n * k * if dtype == DType::F32 { 4 } else { 2 }) as f64;
            println!(
                "T={t:4} K={k} N={n:5} w={dtype:4} threads={threads}: {:8.1} us {:7.1} GFLOP/s  weights {:6.1} GB/s{cpu}",
                secs * 1e6,
                flops / secs / 1e9,
                wbytes / secs / 1e9
            );
        }
    }
}
