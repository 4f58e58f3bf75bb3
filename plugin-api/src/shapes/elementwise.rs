//! Validation shared by the elementwise ops' providers: output inference for `add`,
//! `argmax`, `gather_rows`, `embedding`, `silu_mul` and `rope` (each provider passes the
//! dtypes it accepts), and the `rope` attributes (style, rotary dims, frequency scaling).

use crate::{
    author::{expect_dtype, expect_inputs, expect_rank, same_dim},
    quant, Attrs, DType, Dim, PluginError, TensorMeta,
};

/// `add(a, b)`: same dtype (one of `dtypes`) and same dims → one output like `a`.
pub fn infer_add(inputs: &[TensorMeta], dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    const OP: &str = "add";
    expect_inputs(OP, inputs, &[2])?;
    let (a, b) = (&inputs[0], &inputs[1]);
    expect_dtype(OP, "a", a, dtypes)?;
    expect_dtype(OP, "b", b, &[a.dtype])?;
    if a.rank() != b.rank() {
        return Err(PluginError::new(format!("{OP}: a {a} and b {b} differ in rank")));
    }
    for (i, (da, db)) in a.dims.iter().zip(b.dims.iter()).enumerate() {
        same_dim(OP, &format!("dim {i} of a and b"), da, db)?;
    }
    Ok(vec![TensorMeta::new(a.dtype, a.dims.iter().cloned())])
}

/// `argmax(logits [S, V])` (one of `dtypes`) → `[S]` i32.
pub fn infer_argmax(inputs: &[TensorMeta], dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    const OP: &str = "argmax";
    expect_inputs(OP, inputs, &[1])?;
    expect_dtype(OP, "logits", &inputs[0], dtypes)?;
    expect_rank(OP, "logits", &inputs[0], 2)?;
    Ok(vec![TensorMeta::new(DType::I32, [inputs[0].dim(0).clone()])])
}

/// `gather_rows(x [T, H], index [S] i32)` → `[S, H]` of x's dtype (one of `dtypes`).
pub fn infer_gather_rows(inputs: &[TensorMeta], dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    const OP: &str = "gather_rows";
    expect_inputs(OP, inputs, &[2])?;
    let (x, index) = (&inputs[0], &inputs[1]);
    expect_dtype(OP, "x", x, dtypes)?;
    expect_rank(OP, "x", x, 2)?;
    expect_dtype(OP, "index", index, &[DType::I32])?;
    expect_rank(OP, "index", index, 1)?;
    Ok(vec![TensorMeta::new(x.dtype, [index.dim(0).clone(), x.dim(1).clone()])])
}

/// `embedding(ids [T] i32, table [V, H])` with a table of one of `table_dtypes` (quantized
/// tables need whole blocks per row) → `[T, H]` of `out_dtype`, or of the table's dtype when
/// `out_dtype` is `None`.
pub fn infer_embedding(
    inputs: &[TensorMeta],
    table_dtypes: &[DType],
    out_dtype: Option<DType>,
) -> Result<Vec<TensorMeta>, PluginError> {
    const OP: &str = "embedding";
    expect_inputs(OP, inputs, &[2])?;
    let (ids, table) = (&inputs[0], &inputs[1]);
    expect_dtype(OP, "ids", ids, &[DType::I32])?;
    expect_rank(OP, "ids", ids, 1)?;
    expect_dtype(OP, "table", table, table_dtypes)?;
    expect_rank(OP, "table", table, 2)?;
    if let Dim::Known(h) = table.dim(1) {
        quant::row_bytes(table.dtype, *h as usize).map_err(|e| e.context(format_args!("{OP}: table")))?;
    }
    let dtype = out_dtype.unwrap_or(table.dtype);
    Ok(vec![TensorMeta::new(dtype, [ids.dim(0).clone(), table.dim(1).clone()])])
}

/// `silu_mul(gate [T, I], up [T, I])` or `silu_mul(gate_up [T, 2I])` (gate first), all of one
/// dtype among `dtypes` → `[T, I]` of that dtype.
pub fn infer_silu_mul(inputs: &[TensorMeta], dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    const OP: &str = "silu_mul";
    expect_inputs(OP, inputs, &[1, 2])?;
    for (i, m) in inputs.iter().enumerate() {
        let what = if inputs.len() == 1 { "gate_up" } else { ["gate", "up"][i] };
        expect_dtype(OP, what, m, if i == 0 { dtypes } else { std::slice::from_ref(&inputs[0].dtype) })?;
        expect_rank(OP, what, m, 2)?;
    }
    let x = &inputs[0];
    if inputs.len() == 2 {
        same_dim(OP, "gate/up rows", x.dim(0), inputs[1].dim(0))?;
        same_dim(OP, "gate/up width", x.dim(1), inputs[1].dim(1))?;
        return Ok(vec![x.clone()]);
    }
    let width = match x.dim(1) {
        Dim::Known(w) if w % 2 == 0 => Dim::Known(w / 2),
        Dim::Known(w) => return Err(PluginError::new(format!("{OP}: fused gate|up width {w} is odd"))),
        Dim::Sym(s) => return Err(PluginError::new(format!("{OP}: fused gate|up width must be known, got {s}"))),
    };
    Ok(vec![TensorMeta::new(x.dtype, [x.dim(0).clone(), width])])
}

/// Which elements of a head form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate-half: pairs `(i, i + rotary_dim / 2)` (HF Llama, GPT-NeoX).
    Neox,
    /// Adjacent pairs `(2i, 2i + 1)` (GPT-J, llama.cpp's permuted Llama weights).
    Interleaved,
}

/// Frequency scaling for long contexts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (applied to the frequencies, as HF does).
    Linear {
        factor: f32,
    },
    /// Llama 3.1's piecewise scaling of low and medium frequencies.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// The validated attributes of `rope`: `head_dim`, `rotary_dim` (default head_dim, even),
/// `theta` (default 10000), `style` (neox | interleaved), `scaling_type` (none | linear |
/// llama3) with `scaling_factor`, `low_freq_factor`, `high_freq_factor`,
/// `original_max_position_embeddings`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeAttrs {
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub theta: f64,
    pub style: RopeStyle,
    pub scaling: RopeScaling,
}

fn rope_err(msg: String) -> PluginError {
    PluginError::new(format!("rope: {msg}"))
}

fn positive(attrs: &Attrs, name: &str) -> Result<f32, PluginError> {
    let v = attrs.float(name).map_err(|e| e.context("rope"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(rope_err(format!("attribute '{name}' must be a positive number, got {v}")));
    }
    Ok(v as f32)
}

impl RopeAttrs {
    pub fn from_attrs(attrs: &Attrs) -> Result<RopeAttrs, PluginError> {
        let head_dim = attrs.usize("head_dim").map_err(|e| e.context("rope"))?;
        let rotary_dim = usize::try_from(attrs.int_or("rotary_dim", head_dim as i64).map_err(|e| e.context("rope"))?)
            .map_err(|_| rope_err("attribute 'rotary_dim' must be >= 0".into()))?;
        if head_dim == 0 {
            return Err(rope_err("head_dim must be positive".into()));
        }
        if rotary_dim == 0 || rotary_dim > head_dim || rotary_dim % 2 != 0 {
            return Err(rope_err(format!("rotary_dim must be even and in 2..={head_dim}, got {rotary_dim}")));
        }
        let theta = attrs.float_or("theta", 10000.0).map_err(|e| e.context("rope"))?;
        if !(theta.is_finite() && theta > 1.0) {
            return Err(rope_err(format!("theta must be a number above 1, got {theta}")));
        }
        let style = match attrs.str_or("style", "neox").map_err(|e| e.context("rope"))? {
            "neox" => RopeStyle::Neox,
            "interleaved" => RopeStyle::Interleaved,
            other => return Err(rope_err(format!("style must be \"neox\" or \"interleaved\", got {other:?}"))),
        };
        let scaling = match attrs.str_or("scaling_type", "none").map_err(|e| e.context("rope"))? {
            "none" | "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: positive(attrs, "scaling_factor")? },
            "llama3" => {
                let low = positive(attrs, "low_freq_factor")?;
                let high = positive(attrs, "high_freq_factor")?;
                if high <= low {
                    return Err(rope_err(format!("high_freq_factor {high} must exceed low_freq_factor {low}")));
                }
                RopeScaling::Llama3 {
                    factor: positive(attrs, "scaling_factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: positive(attrs, "original_max_position_embeddings")?,
                }
            }
            other => return Err(rope_err(format!("scaling_type must be none, linear or llama3, got {other:?}"))),
        };
        Ok(RopeAttrs { head_dim, rotary_dim, theta, style, scaling })
    }

    /// Checks that a row width holds whole heads.
    pub fn check_width(&self, width: &Dim) -> Result<(), PluginError> {
        check_rope_width(self.head_dim, width)
    }
}

/// Checks that a rope row width holds whole heads of `head_dim`.
// `is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn check_rope_width(head_dim: usize, width: &Dim) -> Result<(), PluginError> {
    if let Dim::Known(w) = width {
        if head_dim == 0 || (*w as usize) % head_dim != 0 {
            return Err(rope_err(format!("x width {w} is not a multiple of head_dim {head_dim}")));
        }
    }
    Ok(())
}

/// `rope(x [T, heads·head_dim], positions [T] i32)` with x of one of `dtypes` → one output like
/// x; validates the attributes too.
pub fn infer_rope(inputs: &[TensorMeta], attrs: &Attrs, dtypes: &[DType]) -> Result<Vec<TensorMeta>, PluginError> {
    const OP: &str = "rope";
    expect_inputs(OP, inputs, &[2])?;
    let (x, pos) = (&inputs[0], &inputs[1]);
    expect_dtype(OP, "x", x, dtypes)?;
    expect_rank(OP, "x", x, 2)?;
    expect_dtype(OP, "positions", pos, &[DType::I32])?;
    expect_rank(OP, "positions", pos, 1)?;
    same_dim(OP, "token count of x and positions", x.dim(0), pos.dim(0))?;
    RopeAttrs::from_attrs(attrs)?.check_width(x.dim(1))?;
    Ok(vec![x.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_the_activation_dtype() {
        let m = |d, dims: &[usize]| TensorMeta::of(d, dims);
        let out = infer_add(&[m(DType::BF16, &[2, 3]), m(DType::BF16, &[2, 3])], &DType::FLOATS).unwrap();
        assert_eq!(out[0].dtype, DType::BF16);
        let e = infer_add(&[m(DType::BF16, &[2, 3]), m(DType::F32, &[2, 3])], &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("b must be bf16"), "{e}");
        let out = infer_embedding(&[m(DType::I32, &[3]), m(DType::F16, &[10, 8])], &DType::FLOATS, None).unwrap();
        assert_eq!(out[0], m(DType::F16, &[3, 8]));
        let out = infer_silu_mul(&[m(DType::F16, &[3, 8])], &DType::FLOATS).unwrap();
        assert_eq!(out[0], m(DType::F16, &[3, 4]));
        let e = infer_silu_mul(&[m(DType::F16, &[3, 8]), m(DType::F32, &[3, 8])], &DType::FLOATS).unwrap_err();
        assert!(e.message().contains("up must be f16"), "{e}");
        assert_eq!(infer_argmax(&[m(DType::BF16, &[2, 9])], &DType::FLOATS).unwrap()[0], m(DType::I32, &[2]));
        assert_eq!(
            infer_gather_rows(&[m(DType::F16, &[5, 9]), m(DType::I32, &[2])], &DType::FLOATS).unwrap()[0],
            m(DType::F16, &[2, 9])
        );
    }

    #[test]
    fn rope_attrs() {
        let a = Attrs::new().with("head_dim", 64usize);
        let r = RopeAttrs::from_attrs(&a).unwrap();
        assert_eq!((r.rotary_dim, r.style, r.scaling), (64, RopeStyle::Neox, RopeScaling::None));
        assert!(RopeAttrs::from_attrs(&a.clone().with("rotary_dim", 65usize)).is_err());
        let e =
            infer_rope(&[TensorMeta::of(DType::F16, &[2, 100]), TensorMeta::of(DType::I32, &[2])], &a, &DType::FLOATS)
                .unwrap_err();
        assert!(e.message().contains("multiple of head_dim"), "{e}");
    }
}
