//! Shape, dtype and attribute validation that an op's providers on every device share (the
//! CPU plugins and the CUDA plugin call the same checks, so a graph that infers on one device
//! infers the same way on the other). One file per op family; the helpers here are the
//! launch-time argument checks every family uses.

pub mod attention;
pub mod collective;
pub mod elementwise;
pub mod fp8;
pub mod matmul;
pub mod norm;
pub mod sampling;

use crate::{DType, PluginError, TensorView};

/// Checks the number of launch inputs (one of `in_counts`) and outputs.
pub fn expect_args(
    op: &str,
    inputs: &[impl TensorView],
    in_counts: &[usize],
    outputs: &[impl TensorView],
    out_count: usize,
) -> Result<(), PluginError> {
    if !in_counts.contains(&inputs.len()) {
        let want: Vec<String> = in_counts.iter().map(|c| c.to_string()).collect();
        return Err(PluginError::new(format!("{op}: launch takes {} inputs, got {}", want.join(" or "), inputs.len())));
    }
    if outputs.len() != out_count {
        return Err(PluginError::new(format!("{op}: launch takes {out_count} outputs, got {}", outputs.len())));
    }
    Ok(())
}

/// The concrete shape of a launch argument, checked against `want`.
pub fn expect_shape(op: &str, what: &str, arg: &impl TensorView, want: &[usize]) -> Result<(), PluginError> {
    let got = arg.shape().map_err(|e| e.context(format_args!("{op}: {what}")))?;
    if got != want {
        return Err(PluginError::new(format!("{op}: {what} has shape {got:?}, expected {want:?}")));
    }
    Ok(())
}

/// The concrete shape of a launch argument with a required rank.
pub fn shape_of_rank(op: &str, what: &str, arg: &impl TensorView, rank: usize) -> Result<Vec<usize>, PluginError> {
    let shape = arg.shape().map_err(|e| e.context(format_args!("{op}: {what}")))?;
    if shape.len() != rank {
        return Err(PluginError::new(format!("{op}: {what} must have rank {rank}, got {}", arg.meta())));
    }
    Ok(shape)
}

/// `a`, `a or b`, `a, b or c`: dtype names for messages.
pub fn dtype_list(dtypes: &[DType]) -> String {
    let names: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_lists_read_as_prose() {
        assert_eq!(dtype_list(&[DType::F32]), "f32");
        assert_eq!(dtype_list(&[DType::F32, DType::BF16]), "f32 or bf16");
        assert_eq!(dtype_list(&DType::FLOATS), "f32, f16 or bf16");
    }
}
