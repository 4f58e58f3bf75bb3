//! Rotary embedding parameters: the attributes (parsed by plugin-api's shared `shapes`) and
//! the inverse frequencies, computed in f32 operation for operation as HF transformers'
//! `_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters` and
//! `_compute_llama3_parameters` do.

use rtllm_plugin_api::{Attrs, PluginError};

pub use rtllm_plugin_api::shapes::elementwise::{RopeAttrs, RopeScaling, RopeStyle};

/// Everything a rope kernel needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub style: RopeStyle,
    /// `rotary_dim / 2` inverse frequencies, scaling applied.
    pub inv_freq: Vec<f32>,
}

impl RopeConfig {
    /// Validates the attributes (shared with every rope provider) and computes the frequencies.
    pub fn from_attrs(attrs: &Attrs) -> Result<RopeConfig, PluginError> {
        let a = RopeAttrs::from_attrs(attrs)?;
        let inv_freq = scaled_inv_freq(&default_inv_freq(a.theta as f32, a.rotary_dim), a.scaling);
        Ok(RopeConfig { head_dim: a.head_dim, rotary_dim: a.rotary_dim, style: a.style, inv_freq })
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
