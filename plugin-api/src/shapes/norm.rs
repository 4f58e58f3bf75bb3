//! Validation shared by the RMSNorm-family ops (`rmsnorm`, `fused_add_rmsnorm`, `layer_norm`):
//! the `eps` attribute, activation `[T, H]` + weight `[H]` metas, output inference, and the
//! concrete `[T, H]` of launch arguments. Providers pass the activation dtypes they accept.

use super::dtype_list;
use crate::{Attrs, DType, PluginError, TensorMeta, TensorView};

/// Weight dtypes the norms accept (any of them with any accepted activation dtype).
pub const WEIGHT_DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// Default of the `eps` attribute of the RMSNorms.
pub const DEFAULT_EPS: f64 = 1e-6;

/// The `eps` attribute (default [`DEFAULT_EPS`]); it must be finite and >= 0.
pub fn eps(op: &str, attrs: &Attrs) -> Result<f32, PluginError> {
    eps_or(op, attrs, DEFAULT_EPS)
}

/// The `eps` attribute with this default; it must be finite and >= 0.
pub fn eps_or(op: &str, attrs: &Attrs, default: f64) -> Result<f32, PluginError> {
    let eps = attrs.float_or("eps", default).map_err(|e| e.context(op))?;
    if !eps.is_finite() || eps < 0.0 {
        return Err(PluginError::new(format!("{op}: attribute 'eps' must be finite and >= 0, got {eps}")));
    }
    Ok(eps as f32)
}

/// Checks an activation meta `[T, H]` (one of `act` dtypes) and the weight meta `[H]`.
pub fn check_metas(op: &str, what: &str, x: &TensorMeta, w: &TensorMeta, act: &[DType]) -> Result<(), PluginError> {
    if x.rank() != 2 || !act.contains(&x.dtype) {
        return Err(PluginError::new(format!("{op}: {what} must be {} [T, H], got {what} {x}", dtype_list(act))));
    }
    if w.rank() != 1 || w.dims[0] != x.dims[1] {
        return Err(PluginError::new(format!("{op}: w must be [H] with H={} (from {what} {x}), got w {w}", x.dims[1])));
    }
    if !WEIGHT_DTYPES.contains(&w.dtype) {
        return Err(PluginError::new(format!("{op}: w must be {}, got w {w}", dtype_list(&WEIGHT_DTYPES))));
    }
    Ok(())
}

/// `rmsnorm(x [T, H], w [H])` → `[y]` of x's dtype and shape; checks `eps` too.
pub fn infer_rmsnorm(
    op: &str,
    inputs: &[TensorMeta],
    attrs: &Attrs,
    act: &[DType],
) -> Result<Vec<TensorMeta>, PluginError> {
    let [x, w] = inputs else {
        return Err(PluginError::new(format!("{op}: takes inputs (x, w), got {} inputs", inputs.len())));
    };
    check_metas(op, "x", x, w, act)?;
    eps(op, attrs)?;
    Ok(vec![TensorMeta::new(x.dtype, x.dims.iter().cloned())])
}

/// `fused_add_rmsnorm(x [T, H], residual [T, H], w [H])` → `[y, residual_out]`, both of x's
/// dtype and shape (residual must match x in both); checks `eps` too.
pub fn infer_fused_add_rmsnorm(
    op: &str,
    inputs: &[TensorMeta],
    attrs: &Attrs,
    act: &[DType],
) -> Result<Vec<TensorMeta>, PluginError> {
    let [x, residual, w] = inputs else {
        return Err(PluginError::new(format!("{op}: takes inputs (x, residual, w), got {} inputs", inputs.len())));
    };
    check_metas(op, "x", x, w, act)?;
    if residual.dtype != x.dtype || residual.dims != x.dims {
        return Err(PluginError::new(format!(
            "{op}: residual must be {} with the shape of x {x}, got residual {residual}",
            x.dtype
        )));
    }
    eps(op, attrs)?;
    let out = TensorMeta::new(x.dtype, x.dims.iter().cloned());
    Ok(vec![out.clone(), out])
}

/// The concrete `[T, H]` of a launch argument, checked against `want` when given.
pub fn rows_of(
    op: &str,
    what: &str,
    arg: &impl TensorView,
    want: Option<(usize, usize)>,
) -> Result<(usize, usize), PluginError> {
    let shape = arg.shape().map_err(|e| e.context(format_args!("{op}: {what}")))?;
    match (shape.as_slice(), want) {
        (&[t, h], None) => Ok((t, h)),
        (&[t, h], Some(w)) if (t, h) == w => Ok((t, h)),
        _ => {
            let want = want.map_or("[T, H]".to_string(), |(t, h)| format!("[{t}, {h}]"));
            Err(PluginError::new(format!("{op}: {what} must be {want}, got {what} {}", arg.meta())))
        }
    }
}

/// The weight `[H]` of a launch, checked against the rows' `h`.
pub fn check_weight_arg(op: &str, w: &impl TensorView, h: usize) -> Result<(), PluginError> {
    if w.shape()? != [h] {
        return Err(PluginError::new(format!("{op}: w must be [{h}], got w {}", w.meta())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dim;

    #[test]
    fn eps_attribute_is_checked() {
        assert_eq!(eps("rmsnorm", &Attrs::new()).unwrap(), 1e-6);
        assert_eq!(eps_or("layer_norm", &Attrs::new(), 1e-5).unwrap(), 1e-5);
        let e = eps("rmsnorm", &Attrs::new().with("eps", -1.0)).unwrap_err();
        assert!(e.message().starts_with("rmsnorm: attribute 'eps'"), "{e}");
    }

    #[test]
    fn metas_by_activation_dtype() {
        let x = TensorMeta::new(DType::BF16, [Dim::sym("T"), Dim::from(64)]);
        let w = TensorMeta::of(DType::F32, &[64]);
        let out = infer_rmsnorm("rmsnorm", &[x.clone(), w.clone()], &Attrs::new(), &DType::FLOATS).unwrap();
        assert_eq!(out, vec![x.clone()]);
        let e = infer_rmsnorm("rmsnorm", &[x.clone(), w.clone()], &Attrs::new(), &[DType::F32]).unwrap_err();
        assert!(e.message().contains("x must be f32 [T, H]"), "{e}");
        let r = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(64)]);
        let e = infer_fused_add_rmsnorm("f", &[x.clone(), r, w.clone()], &Attrs::new(), &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("residual must be bf16"), "{e}");
        let outs = infer_fused_add_rmsnorm("f", &[x.clone(), x.clone(), w], &Attrs::new(), &DType::FLOATS).unwrap();
        assert_eq!(outs, vec![x.clone(), x]);
    }
}
