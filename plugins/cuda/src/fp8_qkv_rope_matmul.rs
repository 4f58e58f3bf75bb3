//! CUDA provider of `fp8_qkv_rope_matmul(x, wq, wk, wv, sq, sk, sv[, iq, ik, iv], positions)`:
//! the attention's FP8 input projections and rotary embedding in one op, q = rope(fp8_matmul(x,
//! wq, sq[, iq])), k likewise, v = fp8_matmul(x, wv, sv[, iv]), with the `rope` op's attributes
//! besides fp8_matmul's activation ones. Decode: one FP8 GEMV launch whose epilogue rotates each
//! q/k pair (gemv.cu's GEMV_ROPE); otherwise cuBLASLt and the rope kernel (fp8_run.rs). The
//! shared contract is fp8_grouped_matmul.rs's.

use crate::fp8_grouped_matmul::{create, example, infer_parts, Fp8FusedKernel, Fusion, DTYPES};
use crate::rope::llama3_rope_attrs;
use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use rtllm_plugin_api::{Attrs, DType, DeviceKind, Op, OpExample, PluginError, TensorMeta};

/// Provider of `fp8_qkv_rope_matmul` on CUDA.
pub struct Fp8QkvRopeMatmul;

impl Op for Fp8QkvRopeMatmul {
    const NAME: &'static str = "fp8_qkv_rope_matmul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "q, k, v = rope(fp8_matmul(x, wq, ..)), rope(fp8_matmul(x, wk, ..)), \
                                   fp8_matmul(x, wv, ..): x quantized once, one FP8 GEMV launch with the rotation \
                                   fused for decode";
    type Kernel = Fp8FusedKernel;

    fn dtypes() -> Vec<DType> {
        DTYPES.to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(infer_parts(Fusion::QkvRope, inputs, attrs)?.outputs)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8FusedKernel, PluginError> {
        create(Fusion::QkvRope, inputs, attrs)
    }

    fn examples() -> Vec<OpExample> {
        let llama3 = llama3_rope_attrs(64, 32.0);
        let plain = |d: usize| Attrs::new().with("head_dim", d);
        let dynamic = Fp8Activation::Dynamic { upper_bound: None };
        let st = Fp8Activation::Static;
        // (T, K, heads, kv heads, per-channel, activation, x dtype, rope attrs): decode on the
        // GEMV, prefill on cuBLASLt, an odd K on the fallback.
        let cases: Vec<(usize, usize, usize, usize, bool, Fp8Activation, DType, Attrs)> = vec![
            (1, 2048, 32, 8, true, dynamic, DType::BF16, llama3.clone()),
            (2, 2048, 32, 8, false, st, DType::BF16, llama3.clone()),
            (3, 256, 4, 2, true, dynamic, DType::F16, plain(32).with("rotary_dim", 16usize)),
            (1, 128, 4, 2, false, st, DType::BF16, plain(16).with("style", "interleaved")),
            (40, 512, 8, 2, true, dynamic, DType::BF16, llama3),
            (37, 96, 4, 4, false, st, DType::F16, plain(24).with("theta", 100000.0)),
        ];
        cases
            .into_iter()
            .map(|(t, k, h, kvh, pc, act, x, attrs)| {
                let d = attrs.usize("head_dim").unwrap_or(1);
                example(Fusion::QkvRope, (t, k), &[h * d, kvh * d, kvh * d], pc, act, x, attrs)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemv;

    #[test]
    fn examples_infer_and_cover_both_paths() {
        let mut paths = [false, false];
        for e in Fp8QkvRopeMatmul::examples() {
            let outs = Fp8QkvRopeMatmul::infer(&e.inputs, &e.attrs).unwrap();
            assert_eq!(outs.len(), 3);
            let (t, k) = (e.inputs[0].dims[0].known().unwrap(), e.inputs[0].dims[1].known().unwrap());
            let rows: usize = e.inputs[1..4].iter().map(|w| w.dims[0].known().unwrap()).sum();
            paths[usize::from(gemv::preferred(t, rows, k))] = true;
        }
        assert_eq!(paths, [true, true], "examples for the GEMV and for cuBLASLt");
    }
}
