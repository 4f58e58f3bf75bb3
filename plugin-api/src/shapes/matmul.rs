//! Validation shared by the `matmul` providers: y[T, N] = x[T, K] · w[N, K]ᵀ (+ bias[N]).
//! Each provider states which dtypes it takes for x, and for w and bias given x's dtype; the
//! output has x's dtype. Also the launch-time check of the concrete (T, K, N).

use super::dtype_list;
use crate::{DType, PluginError, TensorMeta, TensorView};

/// The dtypes a matmul provider accepts.
#[derive(Clone, Copy, Debug)]
pub struct MatmulDtypes {
    /// Activation (x) dtypes; y has x's dtype.
    pub x: &'static [DType],
    /// Weight dtypes for an x dtype.
    pub w: fn(DType) -> &'static [DType],
    /// Bias dtypes for an x dtype.
    pub bias: fn(DType) -> &'static [DType],
}

/// `[d]` for a float dtype `d` (weights stored in the activation dtype), else nothing.
pub fn same_float(d: DType) -> &'static [DType] {
    match d {
        DType::F32 => &[DType::F32],
        DType::BF16 => &[DType::BF16],
        DType::F16 => &[DType::F16],
        _ => &[],
    }
}

fn err(msg: String) -> PluginError {
    PluginError::new(format!("matmul: {msg}"))
}

/// Checks input metas (dims may be symbolic) and returns the output meta `[T, N]`.
pub fn infer_matmul(inputs: &[TensorMeta], dtypes: &MatmulDtypes) -> Result<TensorMeta, PluginError> {
    let shapes = || inputs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
    if !(2..=3).contains(&inputs.len()) {
        return Err(err(format!("takes inputs (x, w) or (x, w, bias), got {} inputs: [{}]", inputs.len(), shapes())));
    }
    let (x, w) = (&inputs[0], &inputs[1]);
    if x.rank() != 2 || w.rank() != 2 {
        return Err(err(format!("x must be [T, K] and w [N, K], got x {x}, w {w}")));
    }
    if !dtypes.x.contains(&x.dtype) {
        return Err(err(format!("x must be {}, got x {x}", dtype_list(dtypes.x))));
    }
    let w_dtypes = (dtypes.w)(x.dtype);
    if !w_dtypes.contains(&w.dtype) {
        return Err(err(format!("w must be {}, got w {w}", dtype_list(w_dtypes))));
    }
    if x.dims[1] != w.dims[1] {
        return Err(err(format!("K mismatch: x {x} has K={}, w {w} has K={}", x.dims[1], w.dims[1])));
    }
    if let Some(bias) = inputs.get(2) {
        if bias.rank() != 1 || bias.dims[0] != w.dims[0] {
            return Err(err(format!("bias must be [N] with N={} (from w {w}), got bias {bias}", w.dims[0])));
        }
        let b_dtypes = (dtypes.bias)(x.dtype);
        if !b_dtypes.contains(&bias.dtype) {
            return Err(err(format!("bias must be {}, got bias {bias}", dtype_list(b_dtypes))));
        }
    }
    Ok(TensorMeta::new(x.dtype, [x.dims[0].clone(), w.dims[0].clone()]))
}

/// Concrete (rows, cols) of a rank-2 argument.
fn dims2(arg: &impl TensorView, what: &str) -> Result<(usize, usize), PluginError> {
    match arg.shape()?.as_slice() {
        &[a, b] => Ok((a, b)),
        _ => Err(err(format!("{what} must have rank 2, got {what} {}", arg.meta()))),
    }
}

/// Checks the argument counts and concrete shapes of a launch and returns `(T, K, N)`; the
/// bias (when given) must be `[N]`.
pub fn launch_dims(
    inputs: &[impl TensorView],
    outputs: &[impl TensorView],
) -> Result<(usize, usize, usize), PluginError> {
    if !(2..=3).contains(&inputs.len()) || outputs.len() != 1 {
        return Err(err(format!(
            "launch takes 2 or 3 inputs and 1 output, got {} and {}",
            inputs.len(),
            outputs.len()
        )));
    }
    let (x, w, y) = (&inputs[0], &inputs[1], &outputs[0]);
    let (t, k) = dims2(x, "x")?;
    let (n, kw) = dims2(w, "w")?;
    let (ty, ny) = dims2(y, "y")?;
    if kw != k || ty != t || ny != n {
        return Err(err(format!("launch shapes disagree: x {}, w {}, y {}", x.meta(), w.meta(), y.meta())));
    }
    if let Some(b) = inputs.get(2) {
        if b.shape()? != [n] {
            return Err(err(format!("bias must be [{n}], got bias {}", b.meta())));
        }
    }
    Ok((t, k, n))
}

/// Weights a `grouped_matmul` takes: y_i = x · w_iᵀ for i in 0..n, n in this range.
pub const GROUPED_WEIGHTS: std::ops::RangeInclusive<usize> = 2..=4;

fn grouped_err(msg: String) -> PluginError {
    PluginError::new(format!("grouped_matmul: {msg}"))
}

/// Checks the inputs of `grouped_matmul` — `[x [T, K], w_0 [N_0, K], .., w_{n-1} [N_{n-1}, K]]`
/// with n in [`GROUPED_WEIGHTS`], no bias, every weight of x's dtype (one of `x_dtypes`) —
/// and returns the n outputs `y_i [T, N_i]` of x's dtype.
pub fn infer_grouped_matmul(inputs: &[TensorMeta], x_dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    let shapes = || inputs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
    let weights = inputs.len().saturating_sub(1);
    if !GROUPED_WEIGHTS.contains(&weights) {
        return Err(grouped_err(format!(
            "takes x and {} to {} weights (no bias), got {} inputs: [{}]",
            GROUPED_WEIGHTS.start(),
            GROUPED_WEIGHTS.end(),
            inputs.len(),
            shapes()
        )));
    }
    let x = &inputs[0];
    if x.rank() != 2 {
        return Err(grouped_err(format!("x must be [T, K], got x {x}")));
    }
    if !x_dtypes.contains(&x.dtype) {
        return Err(grouped_err(format!("x must be {}, got x {x}", dtype_list(x_dtypes))));
    }
    inputs[1..]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if w.rank() != 2 {
                return Err(grouped_err(format!("w_{i} must be [N_{i}, K], got w_{i} {w}")));
            }
            if w.dtype != x.dtype {
                return Err(grouped_err(format!("w_{i} must be {} like x, got w_{i} {w}", x.dtype)));
            }
            if w.dims[1] != x.dims[1] {
                return Err(grouped_err(format!(
                    "K mismatch: x {x} has K={}, w_{i} {w} has K={}",
                    x.dims[1], w.dims[1]
                )));
            }
            Ok(TensorMeta::new(x.dtype, [x.dims[0].clone(), w.dims[0].clone()]))
        })
        .collect()
}

/// The concrete shapes of a `grouped_matmul` launch: `(T, K, [N_0, .., N_{n-1}, 0, ..])` and n.
/// Each output must be `[T, N_i]`.
pub fn grouped_launch_dims(
    inputs: &[impl TensorView],
    outputs: &[impl TensorView],
) -> Result<(usize, usize, [usize; 4], usize), PluginError> {
    let weights = inputs.len().saturating_sub(1);
    if !GROUPED_WEIGHTS.contains(&weights) || outputs.len() != weights {
        return Err(grouped_err(format!(
            "launch takes x, 2 to 4 weights and one output per weight, got {} inputs and {} outputs",
            inputs.len(),
            outputs.len()
        )));
    }
    let (t, k) = dims2(&inputs[0], "x")?;
    let mut ns = [0usize; 4];
    for (i, (w, y)) in inputs[1..].iter().zip(outputs).enumerate() {
        let (n, kw) = dims2(w, "w")?;
        let (ty, ny) = dims2(y, "y")?;
        if kw != k || ty != t || ny != n {
            return Err(grouped_err(format!(
                "launch shapes disagree: x {}, w_{i} {}, y_{i} {}",
                inputs[0].meta(),
                w.meta(),
                y.meta()
            )));
        }
        ns[i] = n;
    }
    Ok((t, k, ns, weights))
}

/// Checks the inputs of `swiglu_matmul` — `[x [T, K], w_gate [N, K], w_up [N, K]]`, one dtype
/// (one of `x_dtypes`) — and returns its output `[T, N]`: silu(x·w_gateᵀ) ⊙ (x·w_upᵀ).
pub fn infer_swiglu_matmul(inputs: &[TensorMeta], x_dtypes: &[DType]) -> Result<TensorMeta, PluginError> {
    let err = |msg: String| PluginError::new(format!("swiglu_matmul: {msg}"));
    if inputs.len() != 3 {
        let shapes = inputs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
        return Err(err(format!("takes x, w_gate and w_up, got {} inputs: [{shapes}]", inputs.len())));
    }
    let ys =
        infer_grouped_matmul(inputs, x_dtypes).map_err(|e| err(e.message().replacen("grouped_matmul: ", "", 1)))?;
    if inputs[1].dims[0] != inputs[2].dims[0] {
        return Err(err(format!("w_gate {} and w_up {} must have the same rows", inputs[1], inputs[2])));
    }
    Ok(ys[0].clone())
}

/// The concrete shapes of a `swiglu_matmul` launch: `(T, K, N)`; the output must be `[T, N]`.
pub fn swiglu_launch_dims(
    inputs: &[impl TensorView],
    outputs: &[impl TensorView],
) -> Result<(usize, usize, usize), PluginError> {
    let err = |msg: String| PluginError::new(format!("swiglu_matmul: {msg}"));
    if inputs.len() != 3 || outputs.len() != 1 {
        return Err(err(format!(
            "launch takes x, w_gate, w_up and one output, got {} inputs and {} outputs",
            inputs.len(),
            outputs.len()
        )));
    }
    let (t, k) = dims2(&inputs[0], "x")?;
    let (n, kg) = dims2(&inputs[1], "w_gate")?;
    let (nu, ku) = dims2(&inputs[2], "w_up")?;
    let (ty, ny) = dims2(&outputs[0], "y")?;
    if (kg, ku, nu, ty, ny) != (k, k, n, t, n) {
        return Err(err(format!(
            "launch shapes disagree: x {}, w_gate {}, w_up {}, y {}",
            inputs[0].meta(),
            inputs[1].meta(),
            inputs[2].meta(),
            outputs[0].meta()
        )));
    }
    Ok((t, k, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_takes_two_weights_of_one_shape() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let (x, w) = (m(DType::BF16, &[3, 8]), m(DType::BF16, &[5, 8]));
        let y = infer_swiglu_matmul(&[x.clone(), w.clone(), w.clone()], &DType::FLOATS).unwrap();
        assert_eq!(y, m(DType::BF16, &[3, 5]));
        let e = infer_swiglu_matmul(&[x.clone(), w.clone(), m(DType::BF16, &[4, 8])], &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("same rows"), "{e}");
        let e = infer_swiglu_matmul(&[x.clone(), w.clone()], &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("takes x, w_gate and w_up"), "{e}");
        let e = infer_swiglu_matmul(&[x, w.clone(), m(DType::F16, &[5, 8])], &DType::FLOATS).unwrap_err();
        assert!(e.message().starts_with("swiglu_matmul: w_1 must be bf16"), "{e}");
    }

    const SAME: MatmulDtypes = MatmulDtypes { x: &DType::FLOATS, w: same_float, bias: |_| &[DType::F32] };

    #[test]
    fn output_has_x_dtype_and_rules_apply() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let y = infer_matmul(&[m(DType::BF16, &[3, 8]), m(DType::BF16, &[5, 8])], &SAME).unwrap();
        assert_eq!(y, m(DType::BF16, &[3, 5]));
        let e = infer_matmul(&[m(DType::BF16, &[3, 8]), m(DType::F16, &[5, 8])], &SAME).unwrap_err();
        assert!(e.message().contains("w must be bf16"), "{e}");
        let e =
            infer_matmul(&[m(DType::F16, &[3, 8]), m(DType::F16, &[5, 8]), m(DType::F16, &[5])], &SAME).unwrap_err();
        assert!(e.message().contains("bias must be f32"), "{e}");
    }

    #[test]
    fn grouped_outputs_follow_each_weight() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let x = m(DType::BF16, &[3, 8]);
        let ys = infer_grouped_matmul(&[x.clone(), m(DType::BF16, &[5, 8]), m(DType::BF16, &[2, 8])], &DType::FLOATS);
        assert_eq!(ys.unwrap(), vec![m(DType::BF16, &[3, 5]), m(DType::BF16, &[3, 2])]);
        let e = infer_grouped_matmul(&[x.clone(), m(DType::BF16, &[5, 8])], &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("2 to 4 weights"), "{e}");
        let e = infer_grouped_matmul(&[x.clone(), m(DType::BF16, &[5, 8]), m(DType::F16, &[2, 8])], &DType::FLOATS);
        assert!(e.unwrap_err().message().contains("w_1 must be bf16"));
        let e = infer_grouped_matmul(&[x.clone(), m(DType::BF16, &[5, 8]), m(DType::BF16, &[2, 9])], &DType::FLOATS);
        assert!(e.unwrap_err().message().contains("K mismatch"));
        let e = infer_grouped_matmul(&[x, m(DType::BF16, &[5, 8]), m(DType::BF16, &[5])], &DType::FLOATS);
        assert!(e.unwrap_err().message().contains("w_1 must be [N_1, K]"));
        let e = infer_grouped_matmul(
            &[m(DType::I32, &[3, 8]), m(DType::I32, &[5, 8]), m(DType::I32, &[2, 8])],
            &DType::FLOATS,
        );
        assert!(e.unwrap_err().message().contains("x must be"));
    }
}
