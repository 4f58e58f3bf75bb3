//! CUDA provider of `qkv_rope_matmul`: the attention's input projections and rotary embedding in
//! one op. x [T, K], w_q [Nq, K], w_k [Nkv, K], w_v [Nkv, K], positions [T] i32 → q = rope(x·w_qᵀ),
//! k = rope(x·w_kᵀ), v = x·w_vᵀ (one dtype, f32/bf16/f16, no bias), with the `rope` op's
//! attributes (head_dim, theta, style, rotary_dim, scaling). For decode-sized T it is ONE GEMV
//! launch whose epilogue rotates each q/k pair (kernels/cuda/gemv.cu, GEMV_ROPE: a warp owns the
//! two rows of a pair); otherwise one cuBLASLt matmul per weight and the rope kernel on q and k
//! in place. Both paths round q and k to the dtype before rotating, as `grouped_matmul` + `rope`
//! do.

use crate::blaslt;
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut, to_i32};
use crate::elementwise;
use crate::gemv::{self, Epilogue, Gemv, RopeEpilogue, Segment};
use crate::grouped_matmul::blaslt_segments_in;
use crate::rope::{launch_rope, llama3_rope_attrs, scaling_args};
use crate::runtime::Function;
use rtllm_plugin_api::shapes::elementwise::{check_rope_width, RopeAttrs, RopeStyle};
use rtllm_plugin_api::shapes::matmul::{grouped_launch_dims, infer_grouped_matmul};
use rtllm_plugin_api::shapes::{expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Dim, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];
const OP: &str = "qkv_rope_matmul";

/// Provider of `qkv_rope_matmul` on CUDA.
pub struct QkvRopeMatmul;

/// A CUDA `qkv_rope_matmul` instance.
pub struct QkvRopeMatmulKernel {
    dtype: DType,
    attrs: RopeAttrs,
    gemv: Gemv,
    rope: Function,
}

fn err(msg: String) -> PluginError {
    PluginError::new(format!("{OP}: {msg}"))
}

/// The GEMV's rope epilogue for the `rope` attributes `a` at `positions` (device i32 [T]).
pub fn rope_epilogue(a: &RopeAttrs, positions: u64) -> RopeEpilogue {
    RopeEpilogue {
        positions,
        head_dim: a.head_dim,
        rotary_dim: a.rotary_dim,
        interleaved: a.style == RopeStyle::Interleaved,
        scaling: scaling_args(a.scaling),
        theta: a.theta as f32,
    }
}

impl Op for QkvRopeMatmul {
    const NAME: &'static str = OP;
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "q, k, v = rope(x·w_qᵀ), rope(x·w_kᵀ), x·w_vᵀ for x [T, K], positions [T] i32, no \
                                   bias, one dtype (bf16/f16/f32), the rope op's attributes; one GEMV launch for \
                                   decode-sized T";
    type Kernel = QkvRopeMatmulKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = DTYPES.to_vec();
        d.push(DType::I32);
        d
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        if inputs.len() != 5 {
            return Err(err(format!("takes x, w_q, w_k, w_v and positions, got {} inputs", inputs.len())));
        }
        let outs = infer_grouped_matmul(&inputs[..4], &DTYPES)
            .map_err(|e| err(e.message().replacen("grouped_matmul: ", "", 1)))?;
        let pos = &inputs[4];
        if pos.dtype != DType::I32 || pos.rank() != 1 || pos.dims[0] != inputs[0].dims[0] {
            return Err(err(format!("positions must be i32 [T] for x {}, got {pos}", inputs[0])));
        }
        let a = RopeAttrs::from_attrs(attrs)?;
        for y in &outs {
            check_rope_width(a.head_dim, &y.dims[1])?;
        }
        if a.head_dim % 2 != 0 || a.rotary_dim % 2 != 0 || a.rotary_dim == 0 {
            return Err(err(format!("head_dim {} and rotary_dim {} must be even", a.head_dim, a.rotary_dim)));
        }
        Ok(outs)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<QkvRopeMatmulKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        if inputs[0].dims[1] == Dim::Known(0) {
            return Err(err(format!("K must be positive, got x {}", inputs[0])));
        }
        let dtype = inputs[0].dtype;
        blaslt::handle()?;
        Ok(QkvRopeMatmulKernel {
            dtype,
            attrs: RopeAttrs::from_attrs(attrs)?,
            gemv: Gemv::new(OP, dtype)?,
            rope: elementwise::function(OP, "rope", dtype)?,
        })
    }

    fn examples() -> Vec<OpExample> {
        let llama3 = llama3_rope_attrs(64, 32.0);
        let plain = |d: usize| Attrs::new().with("head_dim", d);
        // (T, K, heads, kv_heads, dtype, attrs)
        let cases: Vec<(usize, usize, usize, usize, DType, Attrs)> = vec![
            (1, 2048, 32, 8, DType::BF16, llama3.clone()),
            (2, 2048, 32, 8, DType::BF16, llama3.clone()),
            (1, 96, 4, 2, DType::F32, plain(16).with("style", "interleaved")),
            (3, 130, 6, 2, DType::F16, plain(32).with("rotary_dim", 16usize)),
            (8, 64, 2, 1, DType::F32, plain(8).with("scaling_type", "linear").with("scaling_factor", 2.0)),
            (37, 256, 8, 2, DType::BF16, llama3),
            (37, 96, 4, 4, DType::F16, plain(24).with("theta", 100000.0)),
        ];
        cases
            .into_iter()
            .map(|(t, k, h, kvh, d, attrs)| {
                let hd = attrs.usize("head_dim").unwrap_or(1);
                let inputs = vec![
                    TensorMeta::of(d, &[t, k]),
                    TensorMeta::of(d, &[h * hd, k]),
                    TensorMeta::of(d, &[kvh * hd, k]),
                    TensorMeta::of(d, &[kvh * hd, k]),
                    TensorMeta::of(DType::I32, &[t]),
                ];
                OpExample { inputs: inputs.into(), attrs }
            })
            .collect()
    }
}

impl Kernel for QkvRopeMatmulKernel {
    fn workspace_bytes(&self, _inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        Ok(blaslt::WORKSPACE_BYTES)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        check_ctx(OP, ctx)?;
        if inputs.len() != 5 {
            return Err(err(format!("launch takes 5 inputs, got {}", inputs.len())));
        }
        let (t, k, ns, count) = grouped_launch_dims(&inputs[..4], outputs)?;
        if count != 3 {
            return Err(err(format!("launch takes 3 weights and 3 outputs, got {count}")));
        }
        shape_of_rank(OP, "positions", &inputs[4], 1)?;
        expect_shape(OP, "positions", &inputs[4], &[t])?;
        let x = device_ptr(OP, "x", &inputs[0], self.dtype)?;
        let positions = device_ptr(OP, "positions", &inputs[4], DType::I32)?;
        let mut segs = [Segment { w: 0, y: 0, n: 0 }; 3];
        for (i, seg) in segs.iter_mut().enumerate() {
            seg.w = device_ptr(OP, "w", &inputs[i + 1], self.dtype)?;
            seg.y = device_ptr_mut(OP, "y", &mut outputs[i], self.dtype)?;
            seg.n = ns[i];
            to_i32(OP, "T·N", t.saturating_mul(ns[i]))?;
        }
        if t == 0 {
            return Ok(());
        }
        let a = &self.attrs;
        if gemv::preferred(t, ns.iter().sum(), k) {
            let rope = rope_epilogue(a, positions);
            let p = gemv::Problem { x, m: t, k, segs: &segs, bias: None, epilogue: Epilogue::Rope(rope), fp8: None };
            // SAFETY: checked device tensors x [t, k], w_i [n_i, k], y_i [t, n_i] of the dtype
            // given at create, positions [t] i32, on the host's stream.
            return unsafe { self.gemv.launch(OP, ctx.stream(), &p) };
        }
        // SAFETY: as above; the rope kernel rotates q and k in place (it reads each pair before
        // writing it), all in order on the host's stream.
        unsafe {
            blaslt_segments_in(OP, self.dtype, ctx, x, t, k, &segs)?;
            for s in &segs[..2] {
                launch_rope(OP, self.rope, a, s.y, positions, s.y, t, s.n, ctx.stream())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_infer_and_cover_both_paths() {
        let ex = QkvRopeMatmul::examples();
        let mut paths = [false, false];
        for e in &ex {
            let outs = QkvRopeMatmul::infer(&e.inputs, &e.attrs).unwrap();
            assert_eq!(outs.len(), 3);
            let shape = |m: &TensorMeta| m.shape().unwrap();
            let (t, k) = (shape(&e.inputs[0])[0], shape(&e.inputs[0])[1]);
            let rows: usize = e.inputs[1..4].iter().map(|w| shape(w)[0]).sum();
            paths[usize::from(gemv::preferred(t, rows, k))] = true;
        }
        assert_eq!(paths, [true, true], "examples for the GEMV and for cuBLASLt");
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let w = m(DType::BF16, &[64, 32]);
        let x = m(DType::BF16, &[3, 32]);
        let attrs = Attrs::new().with("head_dim", 16usize);
        let e = QkvRopeMatmul::infer(&[x.clone(), w.clone(), w.clone(), w.clone(), m(DType::I32, &[4])], &attrs);
        assert!(e.unwrap_err().message().contains("positions must be i32 [T]"));
        let e = QkvRopeMatmul::infer(&[x.clone(), w.clone(), w.clone(), w.clone()], &attrs);
        assert!(e.unwrap_err().message().contains("takes x, w_q, w_k, w_v and positions"));
        let odd = m(DType::BF16, &[60, 32]);
        let e = QkvRopeMatmul::infer(&[x, odd, w.clone(), w, m(DType::I32, &[3])], &attrs);
        assert!(e.unwrap_err().message().contains("not a multiple of head_dim"));
    }
}
