//! Naive reference of `layer_norm`: `y = (x - mean) / sqrt(var + eps) · w (+ b)` per row
//! (biased variance, as torch.nn.LayerNorm), f64 accumulation.

use super::{RefResult, ReferenceError};

/// Default `eps` of `layer_norm` (PyTorch's).
pub const DEFAULT_EPS: f64 = 1e-5;

/// LayerNorm over rows of `h` elements of `x`, with weight `w` `[h]` and optional bias `[h]`.
pub fn layer_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, h: usize, eps: f64) -> RefResult<Vec<f32>> {
    if w.len() != h || b.is_some_and(|b| b.len() != h) {
        return Err(ReferenceError::Shape(format!(
            "layer_norm: weight has {} and bias {:?} elements, expected {h}",
            w.len(),
            b.map(|b| b.len())
        )));
    }
    if h == 0 || !x.len().is_multiple_of(h) {
        return Err(ReferenceError::Shape(format!("layer_norm: {} elements are not rows of {h}", x.len())));
    }
    let mut y = vec![0f32; x.len()];
    for (row, out) in x.chunks(h).zip(y.chunks_mut(h)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, (o, &v)) in out.iter_mut().zip(row).enumerate() {
            let bias = b.map_or(0.0, |b| b[i] as f64);
            *o = ((v as f64 - mean) * inv * w[i] as f64 + bias) as f32;
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_rows() {
        let y = layer_norm(&[1.0, 3.0, 10.0, 12.0], &[1.0, 2.0], Some(&[0.5, -0.5]), 2, 0.0).unwrap();
        assert_eq!(y, vec![-0.5, 1.5, -0.5, 1.5]);
        // A constant row has zero variance: eps keeps it finite, y = bias.
        assert_eq!(layer_norm(&[4.0, 4.0], &[1.0, 1.0], Some(&[0.5, -0.5]), 2, 1e-5).unwrap(), vec![0.5, -0.5]);
        let y = layer_norm(&[1.0, 3.0], &[1.0, 1.0], None, 2, 0.0).unwrap();
        assert_eq!(y, vec![-1.0, 1.0]);
        assert!(layer_norm(&[1.0, 2.0, 3.0], &[1.0, 1.0], None, 2, 1e-5).is_err());
        assert!(layer_norm(&[1.0, 2.0], &[1.0, 1.0], Some(&[1.0]), 2, 1e-5).is_err());
    }
}
