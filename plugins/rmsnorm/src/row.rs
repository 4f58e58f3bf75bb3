//! What the RMSNorm ops share: the per-row arithmetic (written so the compiler vectorises it),
//! the weight element types, the `eps` attribute, shape checks, and the row-parallel driver.

use half::{bf16, f16};
use rtllm_plugin_api::{DType, Element, LaunchContext, PluginError, TensorMeta};

pub use rtllm_plugin_api::shapes::norm::{eps, eps_or, rows_of, DEFAULT_EPS, WEIGHT_DTYPES};

/// Activation dtypes of the CPU norms.
pub const ACT_DTYPES: [DType; 1] = [DType::F32];

/// Rows of fewer elements than this in total are not worth a trip through the pool.
const MIN_CHUNK_ELEMS: usize = 16 * 1024;

/// A norm weight element, widened to f32 as it is read.
pub trait NormWeight: Element {
    fn to_f32(self) -> f32;
}

impl NormWeight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl NormWeight for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

impl NormWeight for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Checks an activation meta `[T, H]` (f32) and the weight meta `[H]`.
pub fn check_metas(op: &str, what: &str, x: &TensorMeta, w: &TensorMeta) -> Result<(), PluginError> {
    rtllm_plugin_api::shapes::norm::check_metas(op, what, x, w, &ACT_DTYPES)
}

/// Σ v² with 8 independent partial sums (vectorisable without reassociation).
#[inline(always)]
fn sum_squares(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] * c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|r| r * r).sum::<f32>()
}

/// `1 / sqrt(mean(v²) + eps)` from the sum of squares of `len` values.
#[inline(always)]
fn inv_rms(sum_sq: f32, len: usize, eps: f32) -> f32 {
    1.0 / (sum_sq / len as f32 + eps).sqrt()
}

/// `y = x * w * inv`, element by element.
#[inline(always)]
fn scale<W: NormWeight>(x: &[f32], w: &[W], inv: f32, y: &mut [f32]) {
    for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
        *o = v * inv * g.to_f32();
    }
}

/// One row of RMSNorm: `y = x / sqrt(mean(x²) + eps) * w`.
pub fn rms_row<W: NormWeight>(x: &[f32], w: &[W], eps: f32, y: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    scale(x, w, inv_rms(sum_squares(x), x.len(), eps), y);
}

/// One row of the fused op: `r = x + residual` (written to `r_out`), then `y = rmsnorm(r) * w`.
/// The sum of squares is taken while `r` is written, so the inputs are read once.
pub fn add_rms_row<W: NormWeight>(x: &[f32], residual: &[f32], w: &[W], eps: f32, r_out: &mut [f32], y: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let mut acc = [0.0f32; 8];
    let mut tail = 0.0f32;
    let n8 = x.len() / 8 * 8;
    for ((r8, x8), s8) in
        r_out[..n8].chunks_exact_mut(8).zip(x[..n8].chunks_exact(8)).zip(residual[..n8].chunks_exact(8))
    {
        for i in 0..8 {
            let r = x8[i] + s8[i];
            r8[i] = r;
            acc[i] += r * r;
        }
    }
    for ((r, &a), &b) in r_out[n8..].iter_mut().zip(&x[n8..]).zip(&residual[n8..]) {
        *r = a + b;
        tail += *r * *r;
    }
    let inv = inv_rms(acc.iter().sum::<f32>() + tail, x.len(), eps);
    scale(r_out, w, inv, y);
}

/// Runs `f(rows, outs)` over row chunks of `t` rows of `h` elements on the host's pool, where
/// `outs[i]` is the chunk's rows of `outputs[i]` (each `t * h` long).
pub fn for_row_chunks<const N: usize>(
    ctx: &LaunchContext<'_>,
    t: usize,
    h: usize,
    outputs: [&mut [f32]; N],
    f: impl Fn(std::ops::Range<usize>, [&mut [f32]; N]) + Sync,
) -> Result<(), PluginError> {
    if outputs.iter().any(|o| o.len() != t * h) {
        return Err(PluginError::new(format!("output buffers do not hold [{t}, {h}]")));
    }
    if t == 0 || h == 0 {
        return Ok(());
    }
    ctx.parallel_chunks_mut(outputs, h, (MIN_CHUNK_ELEMS / h).max(1), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::Attrs;

    #[test]
    fn row_math_matches_definition() {
        let x: Vec<f32> = (0..13).map(|i| i as f32 * 0.3 - 2.0).collect();
        let res: Vec<f32> = (0..13).map(|i| 1.0 - i as f32 * 0.1).collect();
        let w: Vec<f32> = (0..13).map(|i| 0.5 + i as f32 * 0.05).collect();
        let mut y = vec![0.0; 13];
        rms_row(&x, &w, 1e-6, &mut y);
        let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 13.0 + 1e-6).sqrt();
        for i in 0..13 {
            assert!((y[i] as f64 - x[i] as f64 / rms * w[i] as f64).abs() < 1e-5);
        }
        let (mut r, mut y2) = (vec![0.0; 13], vec![0.0; 13]);
        add_rms_row(&x, &res, &w, 1e-6, &mut r, &mut y2);
        let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
        assert_eq!(r, sum);
        rms_row(&sum, &w, 1e-6, &mut y);
        for i in 0..13 {
            assert!((y2[i] - y[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn eps_attribute_is_checked() {
        assert_eq!(eps("rmsnorm", &Attrs::new()).unwrap(), 1e-6);
        assert_eq!(eps("rmsnorm", &Attrs::new().with("eps", 1e-5)).unwrap(), 1e-5);
        let e = eps("rmsnorm", &Attrs::new().with("eps", -1.0)).unwrap_err();
        assert!(e.message().starts_with("rmsnorm: attribute 'eps'"), "{e}");
        assert!(eps("rmsnorm", &Attrs::new().with("eps", "x")).unwrap_err().message().contains("rmsnorm"));
    }
}
