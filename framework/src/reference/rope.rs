//! Reference rotary position embedding: neox (halves) or interleaved (pairs) style, partial
//! rotary dims, and the none / linear / llama3 frequency scalings (as HF transformers).

use super::{RefResult, ReferenceError};
use rtllm_plugin_api::Attrs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate element `i` with `i + rotary_dim/2` (GPT-NeoX, Llama in HF layout).
    Neox,
    /// Rotate element `2i` with `2i + 1` (GPT-J, Llama's original layout).
    Interleaved,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high kept, smooth in between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
}

/// Rope parameters as op attributes spell them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub theta: f64,
    pub style: RopeStyle,
    pub scaling: RopeScaling,
}

fn attr_err(e: rtllm_plugin_api::PluginError) -> ReferenceError {
    ReferenceError::Attr(e.to_string())
}

impl RopeParams {
    /// From attrs `head_dim`, `theta` (default 10000), `style` ("neox" | "interleaved"),
    /// `rotary_dim` (default head_dim), `scaling_type` ("none" | "linear" | "llama3"),
    /// `scaling_factor`, `low_freq_factor`, `high_freq_factor`,
    /// `original_max_position_embeddings`.
    pub fn from_attrs(attrs: &Attrs) -> RefResult<RopeParams> {
        let head_dim = attrs.usize("head_dim").map_err(attr_err)?;
        let rotary_dim = attrs.int_or("rotary_dim", head_dim as i64).map_err(attr_err)?;
        let rotary_dim =
            usize::try_from(rotary_dim).ok().filter(|&r| r <= head_dim && r % 2 == 0).ok_or_else(|| {
                ReferenceError::Attr(format!("rotary_dim {rotary_dim} must be even and <= head_dim {head_dim}"))
            })?;
        if head_dim == 0 {
            return Err(ReferenceError::Attr("head_dim must be > 0".into()));
        }
        let theta = attrs.float_or("theta", 10000.0).map_err(attr_err)?;
        let style = match attrs.str_or("style", "neox").map_err(attr_err)? {
            "neox" => RopeStyle::Neox,
            "interleaved" => RopeStyle::Interleaved,
            other => return Err(ReferenceError::Attr(format!("rope style '{other}' is not neox or interleaved"))),
        };
        let factor = attrs.float_or("scaling_factor", 1.0).map_err(attr_err)?;
        let scaling = match attrs.str_or("scaling_type", "none").map_err(attr_err)? {
            "none" | "" | "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor },
            "llama3" => RopeScaling::Llama3 {
                factor,
                low_freq_factor: attrs.float_or("low_freq_factor", 1.0).map_err(attr_err)?,
                high_freq_factor: attrs.float_or("high_freq_factor", 4.0).map_err(attr_err)?,
                original_max_position: attrs.float_or("original_max_position_embeddings", 8192.0).map_err(attr_err)?,
            },
            other => {
                return Err(ReferenceError::Attr(format!("rope scaling_type '{other}' is not none, linear or llama3")))
            }
        };
        Ok(RopeParams { head_dim, rotary_dim, theta, style, scaling })
    }

    /// The rotation frequency of each of the `rotary_dim / 2` pairs, after scaling.
    pub fn inv_freqs(&self) -> Vec<f64> {
        let d = self.rotary_dim as f64;
        (0..self.rotary_dim / 2)
            .map(|i| {
                let f = 1.0 / self.theta.powf(2.0 * i as f64 / d);
                match self.scaling {
                    RopeScaling::None => f,
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                        let low_wavelen = original_max_position / low_freq_factor;
                        let high_wavelen = original_max_position / high_freq_factor;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_max_position / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                }
            })
            .collect()
    }
}

/// Rotates every head of every row of `x` (`[T, heads·head_dim]`) by its position.
pub fn rope(x: &[f32], positions: &[i32], p: &RopeParams) -> RefResult<Vec<f32>> {
    let t = positions.len();
    if t == 0 {
        return if x.is_empty() { Ok(Vec::new()) } else { Err(ReferenceError::Shape("rope: no positions".into())) };
    }
    let cols = x.len() / t;
    if x.len() % t != 0 || cols % p.head_dim != 0 {
        return Err(ReferenceError::Shape(format!(
            "rope: {} elements are not {t} rows of whole heads of {}",
            x.len(),
            p.head_dim
        )));
    }
    let freqs = p.inv_freqs();
    let half = p.rotary_dim / 2;
    let mut y = x.to_vec();
    for (row, &pos) in y.chunks_mut(cols).zip(positions) {
        for head in row.chunks_mut(p.head_dim) {
            for (i, &f) in freqs.iter().enumerate() {
                let (a, b) = match p.style {
                    RopeStyle::Neox => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (sin, cos) = (pos as f64 * f).sin_cos();
                let (x1, x2) = (head[a] as f64, head[b] as f64);
                head[a] = (x1 * cos - x2 * sin) as f32;
                head[b] = (x2 * cos + x1 * sin) as f32;
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_hand() {
        let p = RopeParams::from_attrs(&Attrs::new().with("head_dim", 4usize).with("theta", 100.0)).unwrap();
        assert_eq!(p.style, RopeStyle::Neox);
        // Pair 0 (elements 0,2) at freq 1, pair 1 (1,3) at freq 0.1; position 1.
        let y = rope(&[1., 1., 0., 0.], &[1], &p).unwrap();
        assert!((y[0] as f64 - 1f64.cos()).abs() < 1e-6 && (y[2] as f64 - 1f64.sin()).abs() < 1e-6);
        assert!((y[1] as f64 - 0.1f64.cos()).abs() < 1e-6 && (y[3] as f64 - 0.1f64.sin()).abs() < 1e-6);
        // Position 0 is the identity; partial rotary leaves the tail alone.
        let q = RopeParams::from_attrs(&Attrs::new().with("head_dim", 4usize).with("rotary_dim", 2usize)).unwrap();
        assert_eq!(rope(&[1., 2., 3., 4.], &[0], &q).unwrap(), vec![1., 2., 3., 4.]);
        assert_eq!(rope(&[1., 2., 3., 4.], &[5], &q).unwrap()[2..], [3., 4.]);
        assert!(RopeParams::from_attrs(&Attrs::new().with("head_dim", 4usize).with("style", "odd")).is_err());
    }

    #[test]
    fn llama3_scaling_bands() {
        let attrs = Attrs::new()
            .with("head_dim", 128usize)
            .with("theta", 500000.0)
            .with("scaling_type", "llama3")
            .with("scaling_factor", 8.0)
            .with("original_max_position_embeddings", 8192usize);
        let scaled = RopeParams::from_attrs(&attrs).unwrap().inv_freqs();
        let plain = RopeParams::from_attrs(&Attrs::new().with("head_dim", 128usize).with("theta", 500000.0))
            .unwrap()
            .inv_freqs();
        assert_eq!(scaled[0], plain[0]); // high frequency kept
        assert!((scaled[63] - plain[63] / 8.0).abs() < 1e-15); // low frequency divided
    }
}
