//! CUDA providers of the fused FP8 linear ops (docs/quantization.md, "Fused FP8 ops"): 2 to 4
//! bias-free FP8 linears sharing x, as the fusion pass groups q/k/v or gate/up, and the two
//! with an epilogue:
//!
//! ```text
//! fp8_grouped_matmul(x, w_0..w_{n-1}, s_0..s_{n-1}[, i_0..i_{n-1}])  -> y_0..y_{n-1}
//! fp8_qkv_rope_matmul(x, wq, wk, wv, sq, sk, sv[, iq, ik, iv], positions) -> rope(q), rope(k), v
//! fp8_swiglu_matmul(x, w_gate, w_up, s_gate, s_up[, i_gate, i_up])   -> silu(gate) · up
//! attrs: activation (and activation_scale_ub) as fp8_matmul's; the rope op's for qkv
//! ```
//!
//! y_j = fp8_matmul(x, w_j, s_j[, i_j]) exactly: each part keeps its own weight scale, and the
//! epilogues see each part rounded to x's dtype, as the plain graph's rope / silu_mul would. x
//! is quantized once, so static parts share one input scale: the fusion pass groups static parts
//! only when they read the same `input_scale` tensor, and these providers, like the built-in
//! references, quantize x with i_0. Decode runs one FP8 GEMV launch over every part with the
//! epilogue fused (fp8_run.rs). This file owns the shared contract (inference, the kernel);
//! fp8_qkv_rope_matmul.rs and fp8_swiglu_matmul.rs declare the two epilogue ops.

use crate::blaslt;
use crate::devargs::{check_ctx, device_ptr, device_ptr_mut};
use crate::elementwise;
use crate::fp8_kernels::{Fp8Kernels, Scale, Segment};
use crate::fp8_run::{self, Fp8Call, Post};
use crate::runtime::Function;
use rtllm_plugin_api::shapes::elementwise::{check_rope_width, RopeAttrs};
use rtllm_plugin_api::shapes::fp8::{infer_fp8_matmul, Fp8Activation};
use rtllm_plugin_api::shapes::{expect_shape, shape_of_rank};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

const X_DTYPES: [DType; 2] = [DType::BF16, DType::F16];
/// Input dtypes of the fused FP8 ops: x bf16/f16 (`infer` checks), E4M3 weights, f32 scales,
/// i32 positions.
pub const DTYPES: [DType; 5] = [DType::BF16, DType::F16, DType::F8_E4M3, DType::F32, DType::I32];

/// Which fused FP8 op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    Grouped,
    QkvRope,
    Swiglu,
}

impl Fusion {
    pub fn name(self) -> &'static str {
        match self {
            Fusion::Grouped => "fp8_grouped_matmul",
            Fusion::QkvRope => "fp8_qkv_rope_matmul",
            Fusion::Swiglu => "fp8_swiglu_matmul",
        }
    }

    fn parts_allowed(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Fusion::Grouped => 2..=4,
            Fusion::QkvRope => 3..=3,
            Fusion::Swiglu => 2..=2,
        }
    }
}

/// A checked call of a fused FP8 op: its parts, activation scheme and outputs.
#[derive(Debug)]
pub struct Parts {
    pub count: usize,
    pub activation: Fp8Activation,
    pub outputs: Vec<TensorMeta>,
}

fn err(f: Fusion, msg: impl std::fmt::Display) -> PluginError {
    PluginError::new(format!("{}: {msg}", f.name()))
}

/// Checks the inputs of `f` (every part as an `fp8_matmul` without bias; the positions and rope
/// widths for qkv; equal gate/up widths for swiglu) and infers its outputs.
pub fn infer_parts(f: Fusion, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Parts, PluginError> {
    let activation = Fp8Activation::from_attrs(attrs).map_err(|e| e.context(f.name()))?;
    let per_part = 2 + activation.scale_inputs();
    let linear = if f == Fusion::QkvRope { inputs.len().saturating_sub(1) } else { inputs.len() };
    let count = linear.saturating_sub(1) / per_part;
    if linear == 0 || (linear - 1) % per_part != 0 || !f.parts_allowed().contains(&count) {
        let (lo, hi) = (f.parts_allowed().start().to_owned(), f.parts_allowed().end().to_owned());
        return Err(err(
            f,
            format_args!(
                "takes x and {} parts of (w, w_scale{}){}, got {} inputs",
                if lo == hi { lo.to_string() } else { format!("{lo} to {hi}") },
                if activation == Fp8Activation::Static { ", input_scale" } else { "" },
                if f == Fusion::QkvRope { " and positions" } else { "" },
                inputs.len()
            ),
        ));
    }
    let mut outputs = Vec::with_capacity(count);
    for j in 0..count {
        let mut part = vec![inputs[0].clone(), inputs[1 + j].clone(), inputs[1 + count + j].clone()];
        if activation == Fp8Activation::Static {
            part.push(inputs[1 + 2 * count + j].clone());
        }
        let (y, _) =
            infer_fp8_matmul(&part, attrs, &X_DTYPES).map_err(|e| e.context(format_args!("{} part {j}", f.name())))?;
        outputs.push(y);
    }
    match f {
        Fusion::Grouped => {}
        Fusion::QkvRope => {
            let pos = &inputs[linear];
            if pos.dtype != DType::I32 || pos.rank() != 1 || pos.dims[0] != inputs[0].dims[0] {
                return Err(err(f, format_args!("positions must be i32 [T] for x {}, got {pos}", inputs[0])));
            }
            let a = RopeAttrs::from_attrs(attrs)?;
            for y in &outputs {
                check_rope_width(a.head_dim, &y.dims[1])?;
            }
            if a.head_dim % 2 != 0 || a.rotary_dim % 2 != 0 || a.rotary_dim == 0 {
                return Err(err(
                    f,
                    format_args!("head_dim {} and rotary_dim {} must be even", a.head_dim, a.rotary_dim),
                ));
            }
        }
        Fusion::Swiglu => {
            if outputs[0] != outputs[1] {
                return Err(err(f, format_args!("gate and up give {} and {}", outputs[0], outputs[1])));
            }
            outputs.truncate(1);
        }
    }
    Ok(Parts { count, activation, outputs })
}

/// A CUDA instance of one of the fused FP8 ops.
pub struct Fp8FusedKernel {
    fusion: Fusion,
    dtype: DType,
    parts: usize,
    activation: Fp8Activation,
    kernels: Fp8Kernels,
    /// qkv: the rope attributes and kernel; swiglu: the silu_mul kernel.
    rope: Option<(RopeAttrs, Function)>,
    silu_mul: Option<Function>,
}

/// `Op::create` of the fused FP8 ops.
pub fn create(f: Fusion, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8FusedKernel, PluginError> {
    let parts = infer_parts(f, inputs, attrs)?;
    if inputs[0].dims[1].known() == Some(0) {
        return Err(err(f, format_args!("K must be positive, got x {}", inputs[0])));
    }
    let dtype = inputs[0].dtype;
    blaslt::handle()?;
    let rope = match f {
        Fusion::QkvRope => Some((RopeAttrs::from_attrs(attrs)?, elementwise::function(f.name(), "rope", dtype)?)),
        _ => None,
    };
    let silu_mul = match f {
        Fusion::Swiglu => Some(elementwise::function(f.name(), "silu_mul", dtype)?),
        _ => None,
    };
    Ok(Fp8FusedKernel {
        fusion: f,
        dtype,
        parts: parts.count,
        activation: parts.activation,
        kernels: Fp8Kernels::new(f.name(), dtype)?,
        rope,
        silu_mul,
    })
}

/// Example inputs of a fused FP8 op: x [t, k] of `x`, one weight of each of `rows`, per-channel
/// or per-tensor scales, the input scales when static; positions [t] for qkv.
pub fn example(
    f: Fusion,
    (t, k): (usize, usize),
    rows: &[usize],
    per_channel: bool,
    act: Fp8Activation,
    x: DType,
    extra: Attrs,
) -> OpExample {
    let mut inputs = vec![TensorMeta::of(x, &[t, k])];
    inputs.extend(rows.iter().map(|&n| TensorMeta::of(DType::F8_E4M3, &[n, k])));
    inputs.extend(rows.iter().map(|&n| TensorMeta::of(DType::F32, &[if per_channel { n } else { 1 }])));
    if act == Fp8Activation::Static {
        inputs.extend(rows.iter().map(|_| TensorMeta::of(DType::F32, &[1])));
    }
    if f == Fusion::QkvRope {
        inputs.push(TensorMeta::of(DType::I32, &[t]));
    }
    let mut attrs = act.attrs();
    for (name, value) in extra.iter() {
        attrs.set(name, value.clone());
    }
    OpExample { inputs: inputs.into(), attrs }
}

impl Kernel for Fp8FusedKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let f = self.fusion;
        let (t, k) = (inputs[0].dims[0].known(), inputs[0].dims[1].known());
        let n = inputs[1..=self.parts].iter().map(|w| w.dims[0].known()).collect::<Option<Vec<_>>>();
        let (Some(t), Some(k), Some(n)) = (t, k, n) else {
            return Err(err(f, format_args!("workspace needs concrete T, K and N, got x {}", inputs[0])));
        };
        let n_max = n.into_iter().max().unwrap_or(0);
        fp8_run::workspace_bytes(f.name(), t, k, n_max, self.dtype, f == Fusion::Swiglu)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let (f, p) = (self.fusion, self.parts);
        let op = f.name();
        check_ctx(op, ctx)?;
        let linear = 1 + p * (2 + self.activation.scale_inputs());
        let want_in = linear + usize::from(f == Fusion::QkvRope);
        let want_out = if f == Fusion::Swiglu { 1 } else { p };
        if inputs.len() != want_in || outputs.len() != want_out {
            return Err(err(
                f,
                format_args!(
                    "launch takes {want_in} inputs and {want_out} outputs, got {} and {}",
                    inputs.len(),
                    outputs.len()
                ),
            ));
        }
        let xs = shape_of_rank(op, "x", &inputs[0], 2)?;
        let (t, k) = (xs[0], xs[1]);
        let x = device_ptr(op, "x", &inputs[0], self.dtype)?;
        let mut segs = Vec::with_capacity(p);
        for j in 0..p {
            let ws = shape_of_rank(op, "w", &inputs[1 + j], 2)?;
            let n = ws[0];
            let scale_len = shape_of_rank(op, "w_scale", &inputs[1 + p + j], 1)?[0];
            if ws[1] != k || (scale_len != 1 && scale_len != n) {
                return Err(err(
                    f,
                    format_args!(
                        "part {j}: x {}, w {}, w_scale {} disagree",
                        inputs[0].meta(),
                        inputs[1 + j].meta(),
                        inputs[1 + p + j].meta()
                    ),
                ));
            }
            let y = match f {
                Fusion::Swiglu => 0,
                _ => {
                    expect_shape(op, "y", &outputs[j], &[t, n])?;
                    device_ptr_mut(op, "y", &mut outputs[j], self.dtype)?
                }
            };
            segs.push(Segment {
                w: device_ptr(op, "w", &inputs[1 + j], DType::F8_E4M3)?,
                ws: Scale {
                    ptr: device_ptr(op, "w_scale", &inputs[1 + p + j], DType::F32)?,
                    per_index: scale_len == n && n > 1,
                },
                y,
                n,
            });
        }
        let (input_scale, ub) = match self.activation {
            Fp8Activation::Static => (Some(device_ptr(op, "input_scale", &inputs[1 + 2 * p], DType::F32)?), None),
            Fp8Activation::Dynamic { upper_bound } => (None, upper_bound),
        };
        let post = match (f, &self.rope, self.silu_mul) {
            (Fusion::QkvRope, Some((attrs, kernel)), _) => {
                expect_shape(op, "positions", &inputs[linear], &[t])?;
                let positions = device_ptr(op, "positions", &inputs[linear], DType::I32)?;
                Post::Rope { attrs, positions, kernel: *kernel }
            }
            (Fusion::Swiglu, _, Some(kernel)) => {
                expect_shape(op, "y", &outputs[0], &[t, segs[0].n])?;
                Post::Gated { out: device_ptr_mut(op, "y", &mut outputs[0], self.dtype)?, kernel }
            }
            _ => Post::Plain,
        };
        let call = Fp8Call { op, dtype: self.dtype, x, t, k, input_scale, ub, segs: &segs, bias: None, post };
        // SAFETY: every tensor checked above (x [t, k], each w [n, k] E4M3 with its scale, each y
        // [t, n], positions [t] i32); the static input scale is f32 [1].
        unsafe { fp8_run::run(&self.kernels, ctx, &call) }
    }
}

/// Provider of `fp8_grouped_matmul` on CUDA.
pub struct Fp8GroupedMatmul;

impl Op for Fp8GroupedMatmul {
    const NAME: &'static str = "fp8_grouped_matmul";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "y_j = fp8_matmul(x, w_j, s_j[, i_j]) for 2 to 4 FP8 weights sharing x (q/k/v, \
                                   gate/up): x quantized once, one FP8 GEMV launch for decode";
    type Kernel = Fp8FusedKernel;

    fn dtypes() -> Vec<DType> {
        DTYPES[..4].to_vec()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(infer_parts(Fusion::Grouped, inputs, attrs)?.outputs)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Fp8FusedKernel, PluginError> {
        create(Fusion::Grouped, inputs, attrs)
    }

    fn examples() -> Vec<OpExample> {
        // (T, K, rows of each part, per-channel scales, activation, x dtype): q/k/v and gate/up
        // shapes on the GEMV (decode) and cuBLASLt (prefill), odd rows on the fallback.
        let dynamic = Fp8Activation::Dynamic { upper_bound: None };
        let capped = Fp8Activation::Dynamic { upper_bound: Some(0.5) };
        let st = Fp8Activation::Static;
        let cases: [(usize, usize, &[usize], bool, Fp8Activation, DType); 6] = [
            (1, 1024, &[1024, 256, 256], true, dynamic, DType::BF16),
            (3, 512, &[2048, 2048], false, st, DType::F16),
            (8, 256, &[64, 32, 32], true, capped, DType::BF16),
            (64, 1024, &[512, 128, 128], true, dynamic, DType::BF16),
            (40, 512, &[1024, 1024], false, st, DType::BF16),
            (20, 96, &[13, 7, 7, 5], true, dynamic, DType::F16),
        ];
        cases
            .iter()
            .map(|&(t, k, rows, pc, act, x)| example(Fusion::Grouped, (t, k), rows, pc, act, x, Attrs::new()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_refusals() {
        for ex in Fp8GroupedMatmul::examples() {
            let parts = infer_parts(Fusion::Grouped, &ex.inputs, &ex.attrs).unwrap();
            assert_eq!(parts.outputs.len(), parts.count);
            assert!(parts.outputs.iter().all(|y| y.dtype == ex.inputs[0].dtype));
        }
        let m = |d, s: &[usize]| TensorMeta::of(d, s);
        let dy = Fp8Activation::Dynamic { upper_bound: None }.attrs();
        let x = m(DType::BF16, &[2, 32]);
        let w = m(DType::F8_E4M3, &[8, 32]);
        let one = [x.clone(), w.clone(), m(DType::F32, &[8])];
        assert!(infer_parts(Fusion::Grouped, &one, &dy).unwrap_err().message().contains("2 to 4 parts"));
        let bad = [x.clone(), w.clone(), m(DType::F8_E4M3, &[8, 16]), m(DType::F32, &[8]), m(DType::F32, &[8])];
        assert!(infer_parts(Fusion::Grouped, &bad, &dy).unwrap_err().message().contains("part 1"));
        let odd = [x.clone(), w.clone(), w.clone(), m(DType::F32, &[8])];
        assert!(infer_parts(Fusion::Grouped, &odd, &dy).is_err());
        // swiglu: gate and up of one width; qkv: positions last, whole heads.
        let up = m(DType::F8_E4M3, &[16, 32]);
        let s = |n| m(DType::F32, &[n]);
        let e = infer_parts(Fusion::Swiglu, &[x.clone(), w.clone(), up, s(8), s(16)], &dy).unwrap_err();
        assert!(e.message().contains("gate and up"), "{e}");
        let ok = infer_parts(Fusion::Swiglu, &[x.clone(), w.clone(), w.clone(), s(8), s(8)], &dy).unwrap();
        assert_eq!(ok.outputs, vec![m(DType::BF16, &[2, 8])]);
        let rope = dy.clone().with("head_dim", 4usize);
        let qkv = [x.clone(), w.clone(), w.clone(), w.clone(), s(8), s(8), s(8), m(DType::I32, &[2])];
        assert_eq!(infer_parts(Fusion::QkvRope, &qkv, &rope).unwrap().outputs.len(), 3);
        let mut bad_pos = qkv.clone();
        bad_pos[7] = m(DType::I32, &[3]);
        assert!(infer_parts(Fusion::QkvRope, &bad_pos, &rope).unwrap_err().message().contains("positions"));
        assert!(infer_parts(Fusion::QkvRope, &qkv[..7], &rope).unwrap_err().message().contains("and positions"));
    }
}
