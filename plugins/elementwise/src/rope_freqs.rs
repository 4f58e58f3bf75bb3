//! Rotary embedding parameters: attribute parsing and the inverse frequencies, computed in
//! f32 operation for operation as HF transformers' `_compute_default_rope_parameters`,
//! `_compute_linear_scaling_rope_parameters` and `_compute_llama3_parameters` do.

use rtllm_plugin_api::{Attrs, PluginError};

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

/// Everything a rope kernel needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub style: RopeStyle,
    /// `rotary_dim / 2` inverse frequencies, scaling applied.
    pub inv_freq: Vec<f32>,
}

fn bad(msg: String) -> PluginError {
    PluginError::new(format!("rope: {msg}"))
}

fn positive(attrs: &Attrs, name: &str) -> Result<f32, PluginError> {
    let v = attrs.float(name).map_err(|e| e.context("rope"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(bad(format!("attribute '{name}' must be a positive number, got {v}")));
    }
    Ok(v as f32)
}

impl RopeConfig {
    pub fn from_attrs(attrs: &Attrs) -> Result<RopeConfig, PluginError> {
        let head_dim = attrs.usize("head_dim").map_err(|e| e.context("rope"))?;
        let rotary_dim = usize::try_from(attrs.int_or("rotary_dim", head_dim as i64).map_err(|e| e.context("rope"))?)
            .map_err(|_| bad("attribute 'rotary_dim' must be >= 0".into()))?;
        if head_dim == 0 {
            return Err(bad("head_dim must be positive".into()));
        }
        if rotary_dim == 0 || rotary_dim > head_dim || rotary_dim % 2 != 0 {
            return Err(bad(format!("rotary_dim must be even and in 2..={head_dim}, got {rotary_dim}")));
        }
        let theta = attrs.float_or("theta", 10000.0).map_err(|e| e.context("rope"))?;
        if !(theta.is_finite() && theta > 1.0) {
            return Err(bad(format!("theta must be a number above 1, got {theta}")));
        }
        let style = match attrs.str_or("style", "neox").map_err(|e| e.context("rope"))? {
            "neox" => RopeStyle::Neox,
            "interleaved" => RopeStyle::Interleaved,
            other => return Err(bad(format!("style must be \"neox\" or \"interleaved\", got {other:?}"))),
        };
        let scaling = match attrs.str_or("scaling_type", "none").map_err(|e| e.context("rope"))? {
            "none" | "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: positive(attrs, "scaling_factor")? },
            "llama3" => {
                let low = positive(attrs, "low_freq_factor")?;
                let high = positive(attrs, "high_freq_factor")?;
                if high <= low {
                    return Err(bad(format!("high_freq_factor {high} must exceed low_freq_factor {low}")));
                }
                RopeScaling::Llama3 {
                    factor: positive(attrs, "scaling_factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: positive(attrs, "original_max_position_embeddings")?,
                }
            }
            other => return Err(bad(format!("scaling_type must be none, linear or llama3, got {other:?}"))),
        };
        let inv_freq = scaled_inv_freq(&default_inv_freq(theta as f32, rotary_dim), scaling);
        Ok(RopeConfig { head_dim, rotary_dim, style, inv_freq })
    }
}

/// `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))` in f32.
pub fn default_inv_freq(theta: f32, dim: usize) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim as f32;
            1.0 / theta.powf(exponent)
        })
        .collect()
}

/// Applies `scaling` to the default inverse frequencies.
pub fn scaled_inv_freq(inv_freq: &[f32], scaling: RopeScaling) -> Vec<f32> {
    match scaling {
        RopeScaling::None => inv_freq.to_vec(),
        RopeScaling::Linear { factor } => inv_freq.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let old = original_max_position_embeddings;
            let low_freq_wavelen = old / low_freq_factor;
            let high_freq_wavelen = old / high_freq_factor;
            inv_freq
                .iter()
                .map(|&f| {
                    // torch evaluates `scalar / tensor` as `tensor.reciprocal() * scalar`.
                    let wavelen = (1.0 / f) * std::f32::consts::TAU;
                    let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if !medium {
                        return scaled;
                    }
                    let smooth = ((1.0 / wavelen) * old - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies() {
        let f = default_inv_freq(10000.0, 64);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        let want = 1.0 / 10000f64.powf(62.0 / 64.0);
        assert!(((f[31] as f64 - want) / want).abs() < 1e-6);
    }

    #[test]
    fn llama3_scaling_matches_the_formula() {
        let base = default_inv_freq(500000.0, 128);
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let f = scaled_inv_freq(&base, s);
        let mut kinds = [0; 3];
        for (&b, &g) in base.iter().zip(&f) {
            let wavelen = 2.0 * std::f64::consts::PI / b as f64;
            let want = if wavelen < 2048.0 {
                kinds[0] += 1;
                b as f64
            } else if wavelen > 8192.0 {
                kinds[2] += 1;
                b as f64 / 8.0
            } else {
                kinds[1] += 1;
                let smooth = (8192.0 / wavelen - 1.0) / 3.0;
                (1.0 - smooth) * b as f64 / 8.0 + smooth * b as f64
            };
            assert!(((g as f64 - want) / want).abs() < 1e-5, "{g} vs {want}");
        }
        assert!(kinds.iter().all(|&k| k > 0), "all three bands exercised: {kinds:?}");
    }

    #[test]
    fn attribute_errors() {
        let a = Attrs::new().with("head_dim", 64usize);
        assert_eq!(RopeConfig::from_attrs(&a).unwrap().inv_freq.len(), 32);
        let e = RopeConfig::from_attrs(&a.clone().with("rotary_dim", 65usize)).unwrap_err();
        assert!(e.message().contains("rotary_dim"), "{e}");
        let e = RopeConfig::from_attrs(&a.clone().with("style", "gptj")).unwrap_err();
        assert!(e.message().contains("style"), "{e}");
        let e = RopeConfig::from_attrs(&a.clone().with("scaling_type", "linear")).unwrap_err();
        assert!(e.message().contains("scaling_factor"), "{e}");
        let lin = RopeConfig::from_attrs(&a.with("scaling_type", "linear").with("scaling_factor", 4.0)).unwrap();
        assert_eq!(lin.inv_freq[0], 0.25);
    }
}
