//! The contract of `fp8_matmul`, shared by its providers on every device (docs/quantization.md):
//!
//! ```text
//! fp8_matmul(x [T, K] float, w [N, K] f8_e4m3, w_scale [1] or [N] f32,
//!            input_scale [1] f32   (only with activation = "static"),
//!            bias [N]              (optional; f32 or x's dtype))  -> y [T, N], x's dtype
//! attrs: activation = "static" | "dynamic"   (required)
//!        activation_scale_ub: float > 0      (optional, dynamic only: caps each row's amax)
//! ```
//!
//! y[t, n] = (Σ_k e4m3(x[t, k] / s_x[t]) · w[n, k]) · s_x[t] · w_scale[n or 0] (+ bias[n]),
//! the products accumulated in f32, where s_x is `input_scale` (static) or, per row,
//! `max(min(amax(x[t]), ub) / 448, 1 / (448 · 512))` (dynamic per token).

use super::dtype_list;
use crate::{Attrs, DType, PluginError, TensorMeta};

/// How activations are quantized to E4M3 before the product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fp8Activation {
    /// One calibrated scale for the whole tensor (`input_scale`).
    Static,
    /// A scale per row (token), `amax / 448`, amax capped at `upper_bound` when given.
    Dynamic { upper_bound: Option<f32> },
}

fn err(msg: String) -> PluginError {
    PluginError::new(format!("fp8_matmul: {msg}"))
}

impl Fp8Activation {
    /// Reads `activation` and `activation_scale_ub` from an op's attributes.
    pub fn from_attrs(attrs: &Attrs) -> Result<Fp8Activation, PluginError> {
        let ub = match attrs.get("activation_scale_ub") {
            None => None,
            Some(_) => {
                let v = attrs.float("activation_scale_ub").map_err(|e| e.context("fp8_matmul"))?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(err(format!("activation_scale_ub must be a positive finite number, got {v}")));
                }
                Some(v as f32)
            }
        };
        match attrs.str("activation").map_err(|e| e.context("fp8_matmul"))? {
            "static" if ub.is_some() => Err(err("activation_scale_ub applies to dynamic activations only".into())),
            "static" => Ok(Fp8Activation::Static),
            "dynamic" => Ok(Fp8Activation::Dynamic { upper_bound: ub }),
            other => Err(err(format!("activation must be \"static\" or \"dynamic\", got {other:?}"))),
        }
    }

    /// The attributes that say this.
    pub fn attrs(self) -> Attrs {
        match self {
            Fp8Activation::Static => Attrs::new().with("activation", "static"),
            Fp8Activation::Dynamic { upper_bound: None } => Attrs::new().with("activation", "dynamic"),
            Fp8Activation::Dynamic { upper_bound: Some(ub) } => {
                Attrs::new().with("activation", "dynamic").with("activation_scale_ub", ub as f64)
            }
        }
    }

    /// Scale inputs after `w_scale`: one (`input_scale`) when static.
    pub fn scale_inputs(self) -> usize {
        match self {
            Fp8Activation::Static => 1,
            Fp8Activation::Dynamic { .. } => 0,
        }
    }
}

/// Where the inputs of an `fp8_matmul` call are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fp8MatmulInputs {
    pub activation: Fp8Activation,
    /// Index of `input_scale` (static only).
    pub input_scale: Option<usize>,
    /// Index of the bias, when there is one.
    pub bias: Option<usize>,
}

/// Checks the input metas of `fp8_matmul` for activations of `x_dtypes` and returns the output
/// meta and where the optional inputs are.
pub fn infer_fp8_matmul(
    inputs: &[TensorMeta],
    attrs: &Attrs,
    x_dtypes: &[DType],
) -> Result<(TensorMeta, Fp8MatmulInputs), PluginError> {
    let activation = Fp8Activation::from_attrs(attrs)?;
    let fixed = 3 + activation.scale_inputs();
    let shapes = || inputs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
    if inputs.len() != fixed && inputs.len() != fixed + 1 {
        let names = match activation {
            Fp8Activation::Static => "(x, w, w_scale, input_scale[, bias])",
            Fp8Activation::Dynamic { .. } => "(x, w, w_scale[, bias])",
        };
        return Err(err(format!(
            "{activation:?} activations take inputs {names}, got {} inputs: [{}]",
            inputs.len(),
            shapes()
        )));
    }
    let (x, w, ws) = (&inputs[0], &inputs[1], &inputs[2]);
    if x.rank() != 2 || w.rank() != 2 {
        return Err(err(format!("x must be [T, K] and w [N, K], got x {x}, w {w}")));
    }
    if !x_dtypes.contains(&x.dtype) {
        return Err(err(format!("x must be {}, got x {x}", dtype_list(x_dtypes))));
    }
    if w.dtype != DType::F8_E4M3 {
        return Err(err(format!("w must be f8_e4m3, got w {w}")));
    }
    if x.dims[1] != w.dims[1] {
        return Err(err(format!("K mismatch: x {x} has K={}, w {w} has K={}", x.dims[1], w.dims[1])));
    }
    let n = &w.dims[0];
    let per_tensor = ws.rank() == 1 && ws.dims[0].known() == Some(1);
    if ws.dtype != DType::F32 || !(per_tensor || (ws.rank() == 1 && &ws.dims[0] == n)) {
        return Err(err(format!("w_scale must be f32 [1] (per tensor) or [N] with N={n} (per channel), got {ws}")));
    }
    let input_scale = (activation == Fp8Activation::Static).then_some(3);
    if let Some(i) = input_scale {
        let s = &inputs[i];
        if s.dtype != DType::F32 || s.rank() != 1 || s.dims[0].known() != Some(1) {
            return Err(err(format!("input_scale must be f32 [1], got {s}")));
        }
    }
    let bias = (inputs.len() == fixed + 1).then_some(fixed);
    if let Some(i) = bias {
        let b = &inputs[i];
        if b.rank() != 1 || &b.dims[0] != n || !(b.dtype == DType::F32 || b.dtype == x.dtype) {
            return Err(err(format!("bias must be [N] with N={n} of f32 or {}, got bias {b}", x.dtype)));
        }
    }
    let out = TensorMeta::new(x.dtype, [x.dims[0].clone(), n.clone()]);
    Ok((out, Fp8MatmulInputs { activation, input_scale, bias }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dim;

    fn m(d: DType, s: &[usize]) -> TensorMeta {
        TensorMeta::of(d, s)
    }

    #[test]
    fn static_and_dynamic_inputs_and_their_errors() {
        let x = TensorMeta::new(DType::F32, [Dim::sym("T"), 8.into()]);
        let w = m(DType::F8_E4M3, &[5, 8]);
        let st = Attrs::new().with("activation", "static");
        let dy = Attrs::new().with("activation", "dynamic").with("activation_scale_ub", 1200.0);
        let (y, at) =
            infer_fp8_matmul(&[x.clone(), w.clone(), m(DType::F32, &[1]), m(DType::F32, &[1])], &st, &[DType::F32])
                .unwrap();
        assert_eq!(y, TensorMeta::new(DType::F32, [Dim::sym("T"), 5.into()]));
        assert_eq!((at.input_scale, at.bias), (Some(3), None));
        let (_, at) =
            infer_fp8_matmul(&[x.clone(), w.clone(), m(DType::F32, &[5]), m(DType::F32, &[5])], &dy, &[DType::F32])
                .unwrap();
        assert_eq!(at.activation, Fp8Activation::Dynamic { upper_bound: Some(1200.0) });
        assert_eq!((at.input_scale, at.bias), (None, Some(3)));

        let e = |inputs: &[TensorMeta], a: &Attrs| infer_fp8_matmul(inputs, a, &[DType::F32]).unwrap_err().to_string();
        assert!(e(&[x.clone(), w.clone(), m(DType::F32, &[4])], &dy).contains("w_scale must be"));
        assert!(e(&[x.clone(), w.clone(), m(DType::F32, &[1])], &st).contains("take inputs"));
        assert!(e(&[x.clone(), m(DType::BF16, &[5, 8]), m(DType::F32, &[1])], &dy).contains("w must be f8_e4m3"));
        assert!(e(&[x.clone(), w.clone(), m(DType::F32, &[1])], &Attrs::new()).contains("activation"));
        let both = st.clone().with("activation_scale_ub", 3.0);
        assert!(e(&[x.clone(), w.clone(), m(DType::F32, &[1]), m(DType::F32, &[1])], &both).contains("dynamic"));
        let bad_ub = Attrs::new().with("activation", "dynamic").with("activation_scale_ub", -1.0);
        assert!(e(&[x, w, m(DType::F32, &[1])], &bad_ub).contains("positive"));
    }
}
