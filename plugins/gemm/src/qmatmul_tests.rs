//! Tests of the quantized `matmul`: every method on every back end against references built
//! from ggml's (de)quantizers, the integer method's bit-identity across batch sizes and
//! instruction sets, the op's examples through `Kernel::launch` with the workspace it asks
//! for, and an ignored benchmark comparing the methods on SmolLM2 shapes.

use crate::qact::{quantize_row as quantize_acts, ActBlock, QA};
use crate::qdot::QIsa;
use crate::qdriver::{self, QPath, QProblem};
use crate::qmatmul::{run_dtype, QMatmul, QMatmulKernel};
use rtllm_plugin_api::quant::{dequantize_row_to_vec, quantize_row_to_vec};
use rtllm_plugin_api::testing::{data, input, output, sequential_env, threaded_env};
use rtllm_plugin_api::{Attrs, DType, Kernel, LaunchEnv, Op, TensorMeta};

/// Quantized weight rows and their dequantized values.
struct QWeights {
    bytes: Vec<u8>,
    deq: Vec<f32>,
}

fn qweights(dtype: DType, n: usize, k: usize, seed: u64) -> QWeights {
    let w = data(n * k, seed);
    let mut bytes = Vec::new();
    let mut deq = Vec::new();
    for row in w.chunks_exact(k) {
        let q = quantize_row_to_vec(dtype, row).unwrap();
        deq.extend(dequantize_row_to_vec(dtype, &q, k).unwrap());
        bytes.extend(q);
    }
    QWeights { bytes, deq }
}

/// y = x · wᵀ + bias in f64.
fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, t: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * n];
    for i in 0..t {
        for j in 0..n {
            let s: f64 = (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum();
            y[i * n + j] = (s + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
    y
}

/// x after activation quantization (what the integer method multiplies exactly).
fn quantized_x(x: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    let mut blocks = vec![ActBlock::default(); k / QA];
    for row in x.chunks_exact(k) {
        quantize_acts(row, &mut blocks, false);
        for b in &blocks {
            out.extend((0..QA).map(|l| b.d * b.level(l) as f32));
        }
    }
    out
}

/// max |a - b| / max |b|.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

fn isas() -> Vec<QIsa> {
    [QIsa::Portable, QIsa::Avx2, QIsa::Avx512Vnni].into_iter().filter(|i| i.is_supported()).collect()
}

#[allow(clippy::too_many_arguments)]
fn run(
    env: &mut LaunchEnv<'_>,
    isa: QIsa,
    path: QPath,
    dtype: DType,
    w: &QWeights,
    x: &[f32],
    bias: Option<&[f32]>,
    (t, k, n): (usize, usize, usize),
) -> Vec<f32> {
    let mut y = vec![f32::NAN; t * n];
    let p = QProblem { x, w: &w.bytes, bias, y: &mut y, t, k, n };
    run_dtype(&env.context(), isa, path, dtype, p).unwrap();
    y
}

#[test]
fn both_methods_match_references_on_every_isa() {
    let shapes = [(1usize, 32usize, 1usize), (1, 576, 13), (3, 256, 9), (5, 512, 33), (17, 768, 20), (64, 256, 17)];
    for dtype in DType::QUANTIZED {
        for &(t, k, n) in &shapes {
            if k % dtype.block_size() != 0 {
                continue;
            }
            let w = qweights(dtype, n, k, 7 + n as u64);
            let x = data(t * k, 3 + t as u64);
            let bias = data(n, 11);
            let exact = reference(&x, &w.deq, Some(&bias), t, k, n);
            let with_qx = reference(&quantized_x(&x, k), &w.deq, Some(&bias), t, k, n);
            let mut ws = vec![
                0f32;
                qdriver::workspace_bytes(t, k, QPath::Tiles)
                    .max(qdriver::workspace_bytes(t, k, QPath::Int))
                    .max(qdriver::workspace_bytes(t, k, QPath::Rows))
                    / 4
                    + 16
            ];
            let mut env = threaded_env(&mut ws);
            for isa in isas() {
                let what = format!("{dtype} {isa:?} T={t} K={k} N={n}");
                let y = run(&mut env, isa, QPath::Int, dtype, &w, &x, Some(&bias), (t, k, n));
                // The formats' offsets take the exact activation sums, the reference x̃'s.
                let e = rel_err(&y, &with_qx);
                assert!(e < 1e-4, "{what} int vs quantized-x reference: {e}");
                let e = rel_err(&y, &exact);
                // ~15-bit activations: far closer than ggml's 8-bit ones (~1e-2 here).
                assert!(e < 2e-4, "{what} int vs exact reference: {e}");
                for path in [QPath::Tiles, QPath::Rows] {
                    let y = run(&mut env, isa, path, dtype, &w, &x, Some(&bias), (t, k, n));
                    let e = rel_err(&y, &exact);
                    assert!(e < 1e-5, "{what} {path:?} vs exact reference: {e}");
                }
            }
        }
    }
}

/// The integer method's numbers are defined per row: a row's outputs are bit-identical whether
/// it runs alone or in a batch of 3, 4, 5, 17 or 64 rows (at any position), on one thread or
/// several, and on every instruction set this CPU has (portable, AVX2, VNNI), for every format.
#[test]
fn int_rows_are_bit_identical_in_any_batch_on_any_isa() {
    let (k, n) = (512usize, 45usize);
    let batches = [1usize, 3, 4, 5, 17, 64];
    let tmax = *batches.iter().max().unwrap();
    for dtype in DType::QUANTIZED {
        let w = qweights(dtype, n, k, 21);
        let x = data(tmax * k, 8);
        let bias = data(n, 12);
        let mut ws = vec![0f32; qdriver::workspace_bytes(tmax, k, QPath::Int) / 4 + 16];
        // Each row computed alone, single-threaded, portable: the definition.
        let mut alone = Vec::with_capacity(tmax * n);
        for r in 0..tmax {
            let mut ws1 = vec![0f32; qdriver::workspace_bytes(1, k, QPath::Int) / 4 + 16];
            let mut env = sequential_env(&mut ws1);
            let row = &x[r * k..(r + 1) * k];
            alone.extend(run(&mut env, QIsa::Portable, QPath::Int, dtype, &w, row, Some(&bias), (1, k, n)));
        }
        let mut env = threaded_env(&mut ws);
        for isa in isas() {
            for &t in &batches {
                // Rows 5.. of x as the batch, so row positions differ from the single runs.
                let off = (tmax - t).min(5);
                let xb = &x[off * k..(off + t) * k];
                let y = run(&mut env, isa, QPath::Int, dtype, &w, xb, Some(&bias), (t, k, n));
                for r in 0..t {
                    let (got, want) = (&y[r * n..(r + 1) * n], &alone[(off + r) * n..(off + r + 1) * n]);
                    let same = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{dtype} {isa:?}: row {} in a batch of {t} differs from alone", off + r);
                }
            }
        }
    }
}

#[test]
fn examples_run_through_the_kernel_with_their_workspace() {
    for ex in QMatmul::examples() {
        let metas: Vec<TensorMeta> = ex.inputs.iter().cloned().collect();
        let out = QMatmul::infer(&metas, &Attrs::new()).unwrap().remove(0);
        let (t, k) = (metas[0].dims[0].known().unwrap(), metas[0].dims[1].known().unwrap());
        let n = metas[1].dims[0].known().unwrap();
        let dtype = metas[1].dtype;
        let kernel = QMatmul::create(&metas, &Attrs::new()).unwrap();
        let mut ws = vec![0f32; kernel.workspace_bytes(&metas).unwrap().div_ceil(4)];
        let mut env = threaded_env(&mut ws);
        let w = qweights(dtype, n, k, 5);
        let x = data(t * k, 9);
        let bias = data(n, 4);
        let has_bias = metas.len() == 3;
        let want = reference(&x, &w.deq, has_bias.then_some(&bias[..]), t, k, n);
        let mut y = vec![f32::NAN; t * n];
        let mut args = vec![input(metas[0].clone(), &x), input(metas[1].clone(), &w.bytes)];
        if has_bias {
            args.push(input(metas[2].clone(), &bias));
        }
        kernel.launch(&env.context(), &mut args, &mut [output(out, &mut y)]).unwrap();
        // The integer method quantizes the activations (~15 bits); the others are exact.
        let tol = if qdriver::path_for(t, dtype, QIsa::detect()) == QPath::Int { 2e-4 } else { 1e-5 };
        let e = rel_err(&y, &want);
        assert!(e < tol, "{dtype} T={t} K={k} N={n}: {e}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let m = |d: DType, s: &[usize]| TensorMeta::of(d, s);
    let e = QMatmul::infer(&[m(DType::F32, &[2, 100]), m(DType::Q4_K, &[3, 100])], &Attrs::new()).unwrap_err();
    assert!(e.to_string().contains("256-element"), "{e}");
    let e = QMatmul::infer(&[m(DType::F32, &[2, 64]), m(DType::Q8_0, &[3, 32])], &Attrs::new()).unwrap_err();
    assert!(e.to_string().contains("K mismatch"), "{e}");
    // Too little workspace is an error, not a crash.
    let w = qweights(DType::Q4_1, 4, 64, 1);
    let x = data(2 * 64, 2);
    let mut y = vec![0f32; 8];
    let mut env = LaunchEnv::cpu_sequential();
    let p = QProblem { x: &x, w: &w.bytes, bias: None, y: &mut y, t: 2, k: 64, n: 4 };
    assert!(run_dtype(&env.context(), QIsa::Portable, QPath::Int, DType::Q4_1, p).is_err());
    // Weight bytes that do not match the shape.
    let mut ws = vec![0f32; 1024];
    let mut env = threaded_env(&mut ws);
    let p = QProblem { x: &x, w: &w.bytes[..40], bias: None, y: &mut y, t: 2, k: 64, n: 4 };
    assert!(run_dtype(&env.context(), QIsa::Portable, QPath::Int, DType::Q4_1, p).is_err());
    // f32 weights go to the float kernel.
    let metas = [m(DType::F32, &[2, 8]), m(DType::F32, &[3, 8])];
    assert!(QMatmul::create(&metas, &Attrs::new()).is_ok());
    assert!(QMatmulKernel::with(QIsa::Portable, None).is_some());
}

/// Method × token count on SmolLM2-135M shapes; run with
/// `cargo test -p rtllm-gemm --release -- --ignored --nocapture bench_quantized`
/// (RTLLM_BENCH_THREADS sets the pool size, default 2; RTLLM_BENCH_TS the token counts).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_quantized() {
    let threads = std::env::var("RTLLM_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let isa = QIsa::detect();
    let shapes = [
        (DType::Q4_1, 576usize, 576usize),
        (DType::Q4_1, 576, 1536),
        (DType::Q4_1, 1536, 576),
        (DType::Q8_0, 576, 49152),
        (DType::Q4_K, 1536, 576),
        (DType::Q6_K, 1536, 576),
    ];
    println!("isa {isa:?}, {threads} threads");
    for (dtype, k, n) in shapes {
        let w = qweights(dtype, n, k, 1);
        let ts: Vec<usize> = std::env::var("RTLLM_BENCH_TS")
            .ok()
            .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 64, 128, 512]);
        for &t in &ts {
            let x = data(t * k, 2);
            let mut ws = vec![
                0f32;
                qdriver::workspace_bytes(t, k, QPath::Tiles)
                    .max(qdriver::workspace_bytes(t, k, QPath::Int))
                    .max(qdriver::workspace_bytes(t, k, QPath::Rows))
                    / 4
                    + 16
            ];
            let mut env = crate::test_pool::pooled(&pool, &mut ws);
            let mut line = format!("{dtype} K={k:5} N={n:5} T={t:4}:");
            for path in [QPath::Rows, QPath::Int, QPath::Tiles] {
                let mut y = vec![0f32; t * n];
                let iters = (4e8 / (2.0 * (t * k * n) as f64)).clamp(3.0, 2000.0) as usize;
                let mut times = Vec::new();
                for _ in 0..7 {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let p = QProblem { x: &x, w: &w.bytes, bias: None, y: &mut y, t, k, n };
                        run_dtype(&env.context(), isa, path, dtype, p).unwrap();
                    }
                    times.push(start.elapsed().as_secs_f64() / iters as f64);
                }
                // The fastest repetition: the machine is shared, and others only slow it down.
                times.sort_by(|a, b| a.total_cmp(b));
                let s = times[0];
                line += &format!("  {path:?} {:8.1} us {:6.1} GFLOP/s", s * 1e6, 2.0 * (t * k * n) as f64 / s / 1e9);
            }
            println!("{line}");
        }
    }
}
