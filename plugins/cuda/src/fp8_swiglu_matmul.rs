//! CUDA provider of `fp8_swiglu_matmul(x, w_gate, w_up, s_gate, s_up[, i_gate, i_up])` =
//! silu(fp8_matmul(x, w_gate, ..)) · fp8_matmul(x, w_up, ..), gate and up rounded to x's dtype
//! first as the plain graph's silu_mul sees them. Decode: one FP8 GEMV launch whose epilogue
//! writes the product (gemv.cu's GEMV_GATED: gate and up never reach memory); otherwise cuBLASLt
//! into workspace chunks and the silu_mul kernel (fp8_run.rs). The shared contract is
//! fp8_grouped_matmul.rs's.

use crate::fp8_grouped_matmul::{create, example, infer_parts, Fp8FusedKernel, Fusion, DTYPES};
use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use rtllm_plugin_api::{Attrs, DType, DeviceKind, Op, OpExample, PluginError, TensorMeta};

/// Provider of `fp8_swiglu_matmul` on CUDA.
pub struct Fp8SwigluMatmul;

impl Op for Fp8SwigluMatmul {
    const NAME: &'static str = "fp8_swiglu_matmul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "y = silu(fp8_matmul(x, w_gate, ..)) · fp8_matmul(x, w_up, ..): x quantized once, \
                                   one FP8 GEMV launch writing the product for decode";
    type Kernel = Fp8FusedKernel;

    fn dtypes() -> Vec<DType> {
        DTYPES[..4].to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(infer_parts(Fusion::Swiglu, inputs, attrs)?.outputs)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8FusedKernel, PluginError> {
        create(Fusion::Swiglu, inputs, attrs)
    }

    fn examples() -> Vec<OpExample> {
        let dynamic = Fp8Activation::Dynamic { upper_bound: None };
        let capped = Fp8Activation::Dynamic { upper_bound: Some(0.5) };
        let st = Fp8Activation::Static;
        // (T, K, N, per-channel, activation, x dtype): decode rows on the GEMV, prefill on
        // cuBLASLt (one chunk, and more than one with a remainder), odd N on the fallback.
        let cases: [(usize, usize, usize, bool, Fp8Activation, DType); 7] = [
            (1, 2048, 8192, true, dynamic, DType::BF16),
            (2, 1024, 2048, false, st, DType::BF16),
            (5, 512, 1024, true, capped, DType::F16),
            (64, 1024, 2048, true, dynamic, DType::BF16),
            (48, 512, 512, false, st, DType::F16),
            (1100, 256, 512, true, dynamic, DType::BF16),
            (20, 96, 13, false, st, DType::BF16),
        ];
        cases
            .iter()
            .map(|&(t, k, n, pc, act, x)| example(Fusion::Swiglu, (t, k), &[n, n], pc, act, x, Attrs::new()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{blaslt_fp8, fp8_run, gemv};

    #[test]
    fn examples_infer_and_cover_every_path() {
        let mut paths = [0usize; 4];
        for e in Fp8SwigluMatmul::examples() {
            let y = Fp8SwigluMatmul::infer(&e.inputs, &e.attrs).unwrap();
            let (t, k) = (e.inputs[0].dims[0].known().unwrap(), e.inputs[0].dims[1].known().unwrap());
            let n = e.inputs[1].dims[0].known().unwrap();
            assert_eq!(y, vec![TensorMeta::of(e.inputs[0].dtype, &[t, n])]);
            let path = if gemv::preferred(t, 2 * n, k) {
                0
            } else if !blaslt_fp8::fits(k, n, &[]) {
                3
            } else if t > fp8_run::CHUNK_ROWS {
                2
            } else {
                1
            };
            paths[path] += 1;
        }
        assert!(paths.iter().all(|&c| c >= 1), "GEMV, cuBLASLt, chunked cuBLASLt, fallback: {paths:?}");
    }
}
