//! Validation shared by the collective ops (`all_reduce`, `all_gather`, `reduce_scatter`) that
//! every device's provider calls: the attributes (`group`, `rank`, `world_size`, `axis`),
//! output inference, the launch-time argument checks, and the `[outer, axis, inner]` split of
//! a concrete shape around the collective's axis that the kernels index by.
//!
//! Contract (one input `x` of f32/bf16/f16, rank >= 1):
//! - `all_reduce` → x's meta; every rank gets the elementwise sum over ranks.
//! - `all_gather` → x's shape with `dim[axis] * world_size`; rank r's x is slice r.
//! - `reduce_scatter` → x's shape with `dim[axis] / world_size` (must divide); rank r gets
//!   slice r of the sum.
//!
//! `axis` (int, default 0, negative counts from the end) is read by all_gather and
//! reduce_scatter only. `world_size` 1 is an identity copy.
//! all_reduce may run in place (output == x); the other two need distinct buffers.

use super::dtype_list;
use crate::{Attrs, DType, Dim, OpExample, PluginError, TensorMeta, TensorView};

/// The dtypes every collective provider accepts.
pub const DTYPES: [DType; 3] = DType::FLOATS;

/// Which collective an op is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collective {
    AllReduce,
    AllGather,
    ReduceScatter,
}

impl Collective {
    pub const ALL: [Collective; 3] = [Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter];

    /// The op name.
    pub const fn name(self) -> &'static str {
        match self {
            Collective::AllReduce => "all_reduce",
            Collective::AllGather => "all_gather",
            Collective::ReduceScatter => "reduce_scatter",
        }
    }

    /// Whether the op reads the `axis` attribute.
    pub const fn has_axis(self) -> bool {
        !matches!(self, Collective::AllReduce)
    }
}

/// The parsed attributes of one collective op call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveAttrs {
    /// Process-unique id of the rank group (chosen by the runtime).
    pub group: String,
    pub rank: usize,
    pub world_size: usize,
    /// The axis, normalised to `0..rank_of_x` (0 for all_reduce).
    pub axis: usize,
}

/// Parses and checks the attributes for an input of rank `x_rank`.
pub fn parse_attrs(kind: Collective, attrs: &Attrs, x_rank: usize) -> Result<CollectiveAttrs, PluginError> {
    let op = kind.name();
    let group = attrs.str("group").map_err(|e| e.context(op))?;
    if group.is_empty() {
        return Err(PluginError::new(format!("{op}: attribute 'group' must be a non-empty string")));
    }
    let world = attrs.int("world_size").map_err(|e| e.context(op))?;
    if world < 1 {
        return Err(PluginError::new(format!("{op}: attribute 'world_size' must be >= 1, got {world}")));
    }
    let rank = attrs.int("rank").map_err(|e| e.context(op))?;
    if rank < 0 || rank >= world {
        return Err(PluginError::new(format!(
            "{op}: attribute 'rank' must be in 0..{world} (world_size {world}), got {rank}"
        )));
    }
    let axis = if kind.has_axis() {
        normalize_axis(op, attrs.int_or("axis", 0).map_err(|e| e.context(op))?, x_rank)?
    } else {
        0
    };
    Ok(CollectiveAttrs { group: group.to_string(), rank: rank as usize, world_size: world as usize, axis })
}

fn normalize_axis(op: &str, axis: i64, x_rank: usize) -> Result<usize, PluginError> {
    let r = x_rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(PluginError::new(format!(
            "{op}: attribute 'axis' must be in -{r}..{r} for x of rank {x_rank}, got {axis}"
        )));
    }
    Ok(a as usize)
}

/// Checks x's meta (one input, a float dtype, rank >= 1).
fn check_x<'a>(op: &str, inputs: &'a [TensorMeta]) -> Result<&'a TensorMeta, PluginError> {
    let [x] = inputs else {
        return Err(PluginError::new(format!("{op}: takes one input (x), got {} inputs", inputs.len())));
    };
    if !DTYPES.contains(&x.dtype) || x.rank() == 0 {
        return Err(PluginError::new(format!("{op}: x must be {} of rank >= 1, got x {x}", dtype_list(&DTYPES))));
    }
    Ok(x)
}

/// The output dim along the axis for an input dim `d`.
fn out_axis_dim(kind: Collective, op: &str, d: &Dim, spec: &CollectiveAttrs) -> Result<Dim, PluginError> {
    if spec.world_size == 1 || kind == Collective::AllReduce {
        return Ok(d.clone());
    }
    let Some(n) = d.known() else {
        return Err(PluginError::new(format!(
            "{op}: dim {} of x is symbolic ({d}); the axis of a collective with world_size {} must be known",
            spec.axis, spec.world_size
        )));
    };
    out_axis_len(kind, op, n, spec).map(Dim::from)
}

/// The output length along the axis for an input length `n`.
fn out_axis_len(kind: Collective, op: &str, n: usize, spec: &CollectiveAttrs) -> Result<usize, PluginError> {
    let (w, axis) = (spec.world_size, spec.axis);
    match kind {
        Collective::AllReduce => Ok(n),
        Collective::AllGather => n
            .checked_mul(w)
            .ok_or_else(|| PluginError::new(format!("{op}: dim {axis} of x ({n}) times world_size {w} overflows"))),
        Collective::ReduceScatter if !n.is_multiple_of(w) => {
            Err(PluginError::new(format!("{op}: dim {axis} of x ({n}) is not divisible by world_size {w}")))
        }
        Collective::ReduceScatter => Ok(n / w),
    }
}

/// Output metas of `kind` for `inputs`, plus the parsed attributes.
pub fn infer_with_attrs(
    kind: Collective,
    inputs: &[TensorMeta],
    attrs: &Attrs,
) -> Result<(Vec<TensorMeta>, CollectiveAttrs), PluginError> {
    let op = kind.name();
    let x = check_x(op, inputs)?;
    let spec = parse_attrs(kind, attrs, x.rank())?;
    let mut dims: Vec<Dim> = x.dims.iter().cloned().collect();
    dims[spec.axis] = out_axis_dim(kind, op, &dims[spec.axis], &spec)?;
    Ok((vec![TensorMeta::new(x.dtype, dims)], spec))
}

/// Output metas of `kind` for `inputs`.
pub fn infer(kind: Collective, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
    infer_with_attrs(kind, inputs, attrs).map(|(out, _)| out)
}

/// A concrete shape around the axis: `[outer, len, inner]` with `outer` the product of the
/// dims before the axis, `len` the axis dim and `inner` the product of the dims after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Split {
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
}

impl Split {
    /// Splits `shape` at `axis` (< shape.len()); `None` if the element count overflows.
    pub fn of(shape: &[usize], axis: usize) -> Option<Split> {
        let prod = |d: &[usize]| d.iter().try_fold(1usize, |n, &v| n.checked_mul(v));
        let split = Split { outer: prod(&shape[..axis])?, len: shape[axis], inner: prod(&shape[axis + 1..])? };
        split.numel().map(|_| split)
    }

    pub fn numel(&self) -> Option<usize> {
        self.outer.checked_mul(self.len)?.checked_mul(self.inner)
    }

    /// Elements of one outer row (`len * inner`).
    pub fn row(&self) -> usize {
        self.len * self.inner
    }
}

/// Checks a launch's arguments (one contiguous x and one output of x's dtype with the inferred
/// shape, both of `device`) and returns x's split around the axis.
pub fn check_launch(
    kind: Collective,
    spec: &CollectiveAttrs,
    dtype: DType,
    inputs: &[impl TensorView],
    outputs: &[impl TensorView],
) -> Result<Split, PluginError> {
    let op = kind.name();
    super::expect_args(op, inputs, &[1], outputs, 1)?;
    let (x, y) = (&inputs[0], &outputs[0]);
    if x.meta().dtype != dtype || y.meta().dtype != dtype {
        return Err(PluginError::new(format!(
            "{op}: the kernel was created for {dtype}, got x {} and output {}",
            x.meta(),
            y.meta()
        )));
    }
    if !x.meta().is_contiguous() || !y.meta().is_contiguous() {
        return Err(PluginError::new(format!(
            "{op}: x and the output must be contiguous, got x {} and output {}",
            x.meta(),
            y.meta()
        )));
    }
    let shape = x.shape().map_err(|e| e.context(format_args!("{op}: x")))?;
    if shape.len() <= spec.axis {
        return Err(PluginError::new(format!(
            "{op}: x {} has no axis {} (the kernel was created for it)",
            x.meta(),
            spec.axis
        )));
    }
    let split = Split::of(&shape, spec.axis)
        .ok_or_else(|| PluginError::new(format!("{op}: the element count of x {} overflows", x.meta())))?;
    let mut want = shape.clone();
    want[spec.axis] = out_axis_len(kind, op, shape[spec.axis], spec)?;
    super::expect_shape(op, "output", y, &want)?;
    Ok(split)
}

/// Example inputs for `rtllm plugins check`: world_size 1 (an identity copy), since a check
/// runs a single rank.
pub fn examples(kind: Collective) -> Vec<OpExample> {
    let mut out = Vec::new();
    for dtype in DTYPES {
        let attrs = Attrs::new().with("group", "plugins-check").with("rank", 0i64).with("world_size", 1i64);
        out.push(OpExample { inputs: vec![TensorMeta::of(dtype, &[4, 96])].into(), attrs: attrs.clone() });
        if kind.has_axis() {
            let attrs = attrs.with("axis", -1i64);
            out.push(OpExample { inputs: vec![TensorMeta::of(dtype, &[3, 5, 8])].into(), attrs });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(rank: i64, world: i64) -> Attrs {
        Attrs::new().with("group", "g").with("rank", rank).with("world_size", world)
    }

    #[test]
    fn output_shapes_follow_the_axis() {
        let x = TensorMeta::new(DType::BF16, [Dim::sym("T"), Dim::from(64)]);
        let a = attrs(1, 4);
        assert_eq!(infer(Collective::AllReduce, &[x.clone()], &a).unwrap(), vec![x.clone()]);
        let g = infer(Collective::AllGather, &[x.clone()], &a.clone().with("axis", -1i64)).unwrap();
        assert_eq!(g[0].to_string(), "bf16[T, 256]");
        let s = infer(Collective::ReduceScatter, &[x.clone()], &a.clone().with("axis", 1i64)).unwrap();
        assert_eq!(s[0].to_string(), "bf16[T, 16]");
        let e = infer(Collective::AllGather, &[x.clone()], &a).unwrap_err();
        assert!(e.message().contains("symbolic"), "{e}");
        // world_size 1 is an identity, symbolic axis or not.
        assert_eq!(infer(Collective::AllGather, &[x.clone()], &attrs(0, 1)).unwrap(), vec![x]);
    }

    #[test]
    fn bad_attributes_are_clear_errors() {
        let x = TensorMeta::of(DType::F32, &[6, 10]);
        let e = infer(Collective::AllReduce, &[x.clone()], &attrs(2, 2)).unwrap_err();
        assert!(e.message().contains("'rank' must be in 0..2"), "{e}");
        let e = infer(Collective::AllReduce, &[x.clone()], &attrs(0, 0)).unwrap_err();
        assert!(e.message().contains("'world_size' must be >= 1"), "{e}");
        let e = infer(Collective::ReduceScatter, &[x.clone()], &attrs(0, 4)).unwrap_err();
        assert!(e.message().contains("not divisible by world_size 4"), "{e}");
        let e = infer(Collective::AllGather, &[x.clone()], &attrs(0, 2).with("axis", 2i64)).unwrap_err();
        assert!(e.message().contains("'axis' must be in -2..2"), "{e}");
        let e = infer(Collective::AllGather, &[x.clone()], &Attrs::new().with("rank", 0i64)).unwrap_err();
        assert!(e.message().contains("missing attribute 'group'"), "{e}");
        let e = infer(Collective::AllReduce, &[TensorMeta::of(DType::I32, &[3])], &attrs(0, 1)).unwrap_err();
        assert!(e.message().contains("x must be f32, f16 or bf16"), "{e}");
    }

    #[test]
    fn splits_around_the_axis() {
        assert_eq!(Split::of(&[2, 3, 4], 1), Some(Split { outer: 2, len: 3, inner: 4 }));
        assert_eq!(Split::of(&[5], 0), Some(Split { outer: 1, len: 5, inner: 1 }));
        assert_eq!(Split::of(&[usize::MAX, 2], 0), None);
    }
}
