//! Naive references of the dense built-in ops: matmul, rmsnorm, fused_add_rmsnorm,
//! embedding, silu_mul, add, argmax and gather_rows. Plain loops, f64 accumulation.

use super::{RefResult, ReferenceError};
use rtllm_plugin_api::{quant, DType};

fn check_len(what: &str, got: usize, want: usize) -> RefResult<()> {
    if got != want {
        return Err(ReferenceError::Shape(format!("{what} has {got} elements, expected {want}")));
    }
    Ok(())
}

/// `y[t][n] = Σ_k x[t][k] · w[n][k] (+ bias[n])`: x `[T,K]`, w `[N,K]` (already f32).
pub fn matmul(x: &[f32], w: &[f32], bias: Option<&[f32]>, t: usize, k: usize, n: usize) -> RefResult<Vec<f32>> {
    check_len("matmul x", x.len(), t * k)?;
    check_len("matmul w", w.len(), n * k)?;
    if let Some(b) = bias {
        check_len("matmul bias", b.len(), n)?;
    }
    let mut y = vec![0f32; t * n];
    for i in 0..t {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                acc += x[i * k + p] as f64 * w[j * k + p] as f64;
            }
            y[i * n + j] = acc as f32;
        }
    }
    Ok(y)
}

/// `y = x / sqrt(mean(x²) + eps) · w` per row of `h` elements.
pub fn rmsnorm(x: &[f32], w: &[f32], h: usize, eps: f64) -> RefResult<Vec<f32>> {
    check_len("rmsnorm weight", w.len(), h)?;
    if h == 0 || x.len() % h != 0 {
        return Err(ReferenceError::Shape(format!("rmsnorm: {} elements are not rows of {h}", x.len())));
    }
    let mut y = vec![0f32; x.len()];
    for (row, out) in x.chunks(h).zip(y.chunks_mut(h)) {
        let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
            *o = (v as f64 * inv * g as f64) as f32;
        }
    }
    Ok(y)
}

/// `(rmsnorm(x + residual) · w, x + residual)`.
pub fn fused_add_rmsnorm(
    x: &[f32],
    residual: &[f32],
    w: &[f32],
    h: usize,
    eps: f64,
) -> RefResult<(Vec<f32>, Vec<f32>)> {
    let sum = add(x, residual)?;
    Ok((rmsnorm(&sum, w, h, eps)?, sum))
}

/// Rows `ids` of a `[V,H]` table stored as `dtype` bytes, dequantized with
/// `rtllm_plugin_api::quant::dequantize_row`.
pub fn embedding(ids: &[i32], table: &[u8], dtype: DType, v: usize, h: usize) -> RefResult<Vec<f32>> {
    let row_bytes = quant::row_bytes(dtype, h).map_err(|e| ReferenceError::Shape(e.to_string()))?;
    check_len("embedding table bytes", table.len(), v * row_bytes)?;
    let mut y = vec![0f32; ids.len() * h];
    for (out, &id) in y.chunks_mut(h.max(1)).zip(ids) {
        let row = usize::try_from(id)
            .ok()
            .filter(|&r| r < v)
            .ok_or_else(|| ReferenceError::Input(format!("embedding id {id} is outside the table's {v} rows")))?;
        quant::dequantize_row(dtype, &table[row * row_bytes..(row + 1) * row_bytes], out)
            .map_err(|e| ReferenceError::Input(e.to_string()))?;
    }
    Ok(y)
}

/// `silu(gate) · up`, elementwise.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> RefResult<Vec<f32>> {
    check_len("silu_mul up", up.len(), gate.len())?;
    Ok(gate
        .iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            (g / (1.0 + (-g).exp()) * u as f64) as f32
        })
        .collect())
}

/// `silu_mul` of one `[T,2I]` input: gate is the first half of each row, up the second.
pub fn silu_mul_packed(x: &[f32], i: usize) -> RefResult<Vec<f32>> {
    if i == 0 || x.len() % (2 * i) != 0 {
        return Err(ReferenceError::Shape(format!("silu_mul: {} elements are not rows of 2×{i}", x.len())));
    }
    let (mut gate, mut up) = (Vec::new(), Vec::new());
    for row in x.chunks(2 * i) {
        gate.extend_from_slice(&row[..i]);
        up.extend_from_slice(&row[i..]);
    }
    silu_mul(&gate, &up)
}

/// `a + b`; `b` may also be a suffix shape of `a` repeated over the leading dims.
pub fn add(a: &[f32], b: &[f32]) -> RefResult<Vec<f32>> {
    if b.is_empty() || a.len() % b.len() != 0 {
        return Err(ReferenceError::Shape(format!("add: {} elements cannot broadcast over {}", b.len(), a.len())));
    }
    Ok(a.iter().enumerate().map(|(i, &x)| (x as f64 + b[i % b.len()] as f64) as f32).collect())
}

/// Index of the first maximum of each row of `v` elements.
pub fn argmax(x: &[f32], v: usize) -> RefResult<Vec<i32>> {
    if v == 0 || x.len() % v != 0 {
        return Err(ReferenceError::Shape(format!("argmax: {} elements are not rows of {v}", x.len())));
    }
    let mut out = Vec::with_capacity(x.len() / v);
    for row in x.chunks(v) {
        let mut best = 0;
        for (j, &val) in row.iter().enumerate() {
            if val > row[best] || (row[best].is_nan() && !val.is_nan()) {
                best = j;
            }
        }
        out.push(i32::try_from(best).map_err(|_| ReferenceError::Shape(format!("argmax: vocab of {v} exceeds i32")))?);
    }
    Ok(out)
}

/// Rows `index` of `x` (`[T,H]`).
pub fn gather_rows(x: &[f32], index: &[i32], h: usize) -> RefResult<Vec<f32>> {
    if h == 0 || x.len() % h != 0 {
        return Err(ReferenceError::Shape(format!("gather_rows: {} elements are not rows of {h}", x.len())));
    }
    let rows = x.len() / h;
    let mut out = Vec::with_capacity(index.len() * h);
    for &i in index {
        let r = usize::try_from(i)
            .ok()
            .filter(|&r| r < rows)
            .ok_or_else(|| ReferenceError::Input(format!("gather_rows index {i} is outside the {rows} rows")))?;
        out.extend_from_slice(&x[r * h..(r + 1) * h]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases_by_hand() {
        // x [2,3] · w [2,3]ᵀ + b
        let y = matmul(&[1., 2., 3., 4., 5., 6.], &[1., 0., 0., 0., 1., 1.], Some(&[10., 20.]), 2, 3, 2).unwrap();
        assert_eq!(y, vec![11., 25., 14., 31.]);
        let y = rmsnorm(&[3., 4.], &[1., 2.], 2, 0.0).unwrap();
        let r = (12.5f64).sqrt();
        assert!((y[0] as f64 - 3. / r).abs() < 1e-6 && (y[1] as f64 - 8. / r).abs() < 1e-6);
        let (n, s) = fused_add_rmsnorm(&[1., 2.], &[2., 2.], &[1., 1.], 2, 0.0).unwrap();
        assert_eq!(s, vec![3., 4.]);
        assert!((n[0] as f64 - 3. / r).abs() < 1e-6);
        assert_eq!(argmax(&[0., 5., 5., 9., 1., 2.], 3).unwrap(), vec![1, 0]);
        assert_eq!(gather_rows(&[1., 2., 3., 4.], &[1, 1, 0], 2).unwrap(), vec![3., 4., 3., 4., 1., 2.]);
        assert!(gather_rows(&[1., 2.], &[1], 2).is_err());
        assert_eq!(add(&[1., 2., 3., 4.], &[10., 20.]).unwrap(), vec![11., 22., 13., 24.]);
        let s = silu_mul_packed(&[0., 1., 2., 3.], 2).unwrap();
        assert_eq!(s[0], 0.0);
        assert!((s[1] as f64 - 1.0 / (1.0 + (-1f64).exp()) * 3.0).abs() < 1e-6);
        let table: Vec<u8> = [1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(embedding(&[1, 0], &table, DType::F32, 2, 2).unwrap(), vec![3., 4., 1., 2.]);
        assert!(embedding(&[2], &table, DType::F32, 2, 2).is_err());
    }
}
