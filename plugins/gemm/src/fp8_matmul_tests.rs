//! Tests of the CPU `fp8_matmul` at model-like shapes (decode rows on the dot-product tiles,
//! prefill rows on packed panels, K over several cache blocks) against a naive f64 product of
//! the same quantized values, sequential and threaded.

use crate::fp8_matmul::Fp8Matmul;
use rtllm_plugin_api::fp8::{dynamic_scale, e4m3_to_f32, quantize_scaled, F8E4M3};
use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use rtllm_plugin_api::testing::{data, input, output, sequential_env, threaded_env};
use rtllm_plugin_api::{DType, Kernel, Op, TensorMeta};

/// y = (e4m3(x/s_x) · wᵀ) · s_x · w_scale + bias, in f64 from the exact E4M3 values.
fn naive(x: &[f32], w: &[F8E4M3], w_scale: &[f32], input_scale: Option<f32>, bias: &[f32], k: usize) -> Vec<f32> {
    let n = bias.len();
    let mut y = Vec::new();
    for row in x.chunks_exact(k) {
        let s = input_scale.unwrap_or_else(|| dynamic_scale(row, None));
        let q: Vec<f64> = row.iter().map(|&v| e4m3_to_f32(quantize_scaled(v, s)) as f64).collect();
        for j in 0..n {
            let dot: f64 = q.iter().zip(&w[j * k..(j + 1) * k]).map(|(a, c)| a * c.to_f32() as f64).sum();
            let ws = if w_scale.len() == 1 { w_scale[0] } else { w_scale[j] };
            y.push((dot * s as f64 * ws as f64) as f32 + bias[j]);
        }
    }
    y
}

#[test]
fn model_shapes_match_the_naive_product() {
    // (T, K, N, per-channel, static): SmolLM2-135M's q and down projections, a Qwen2.5-1.5B
    // gate/up projection's K; T = 1 and 5 (tiles) and 40, 129 (packed panels).
    let cases = [
        (1, 576, 1536, true, false),
        (5, 1536, 576, false, true),
        (40, 576, 192, true, true),
        (129, 1536, 96, true, false),
        (17, 1537, 33, false, false),
    ];
    for (t, k, n, per_channel, fixed) in cases {
        let seed = (t * 7919 + k * 31 + n) as u64;
        let x: Vec<f32> = data(t * k, seed).iter().map(|v| v * 3.0).collect();
        // Weight codes from values in ±448, NaN codes left out (no checkpoint holds them).
        let w: Vec<F8E4M3> = data(n * k, seed + 1).iter().map(|v| F8E4M3::from_f32(v * 400.0)).collect();
        let w_scale: Vec<f32> =
            if per_channel { data(n, seed + 2).iter().map(|v| 1e-3 * (1.5 + v)).collect() } else { vec![2e-3] };
        let bias = data(n, seed + 3);
        let input_scale = fixed.then_some(0.02f32);
        let want = naive(&x, &w, &w_scale, input_scale, &bias, k);

        let activation = if fixed { Fp8Activation::Static } else { Fp8Activation::Dynamic { upper_bound: None } };
        let mut metas = vec![
            TensorMeta::of(DType::F32, &[t, k]),
            TensorMeta::of(DType::F8_E4M3, &[n, k]),
            TensorMeta::of(DType::F32, &[w_scale.len()]),
        ];
        if fixed {
            metas.push(TensorMeta::of(DType::F32, &[1]));
        }
        metas.push(TensorMeta::of(DType::F32, &[n]));
        let kernel = Fp8Matmul::create(&metas, &activation.attrs()).unwrap();
        let mut ws = vec![0u8; kernel.workspace_bytes(&metas).unwrap()];
        let scale_in = [0.02f32];
        for threaded in [false, true] {
            let mut y = vec![f32::NAN; t * n];
            let mut inputs =
                vec![input(metas[0].clone(), &x), input(metas[1].clone(), &w), input(metas[2].clone(), &w_scale)];
            if fixed {
                inputs.push(input(metas[3].clone(), &scale_in));
            }
            inputs.push(input(TensorMeta::of(DType::F32, &[n]), &bias));
            let mut env = if threaded { threaded_env(&mut ws) } else { sequential_env(&mut ws) };
            let out = output(TensorMeta::of(DType::F32, &[t, n]), &mut y);
            kernel.launch(&env.context(), &mut inputs, &mut [out]).unwrap();
            for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "T={t} K={k} N={n} threaded={threaded}: y[{i}] = {g}, want {e}"
                );
            }
        }
    }
}
