//! A plain f64 forward pass of `TinyGpt2ForCausalLM` (full causal attention over the whole
//! sequence, no cache), random weights, and writing them as an HF directory (config.json +
//! model.safetensors): what the tests compare the engine's logits with.

use crate::names;
use rtllm_models::ModelConfig;
use rtllm_plugin_api::DType;
use std::collections::BTreeMap;
use std::path::Path;

/// The hyper-parameters of a tiny model.
#[derive(Clone, Debug, PartialEq)]
pub struct TinyGpt2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub eps: f64,
}

impl TinyGpt2Config {
    /// The HF `config.json` text.
    pub fn to_hf_json(&self) -> String {
        serde_json::json!({
            "architectures": [crate::HF_NAME],
            "model_type": "tiny_gpt2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_positions,
            crate::EPS_KEY: self.eps,
            "tie_word_embeddings": true,
        })
        .to_string()
    }

    /// The parsed config, as rtllm sees it.
    pub fn model_config(&self) -> Result<ModelConfig, String> {
        ModelConfig::from_hf_json(&self.to_hf_json()).map_err(|e| e.to_string())
    }
}

/// Named f32 tensors: shape and row-major values.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A model's weights and hyper-parameters.
#[derive(Clone, Debug)]
pub struct TinyGpt2Weights {
    pub config: TinyGpt2Config,
    pub tensors: Tensors,
}

/// A small deterministic generator (64-bit LCG), uniform in `[-1, 1)`.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn values(&mut self, n: usize, center: f32, spread: f32) -> Vec<f32> {
        (0..n).map(|_| center + spread * self.next()).collect()
    }
}

impl Lcg {
    /// Adds a tensor of `shape` with values uniform in `center ± spread`.
    fn put(&mut self, t: &mut Tensors, name: String, shape: Vec<usize>, center: f32, spread: f32) {
        let n = shape.iter().product();
        t.insert(name, (shape, self.values(n, center, spread)));
    }

    /// Adds a LayerNorm module's weight (around 1) and bias (around 0) of `h` elements.
    fn put_norm(&mut self, t: &mut Tensors, module: &str, h: usize) {
        self.put(t, format!("{module}.weight"), vec![h], 1.0, 0.2);
        self.put(t, format!("{module}.bias"), vec![h], 0.0, 0.1);
    }
}

impl TinyGpt2Weights {
    /// Random weights of a plausible scale (unit-ish LayerNorm gains, small biases).
    pub fn random(config: &TinyGpt2Config, seed: u64) -> TinyGpt2Weights {
        let (v, h, i) = (config.vocab_size, config.hidden_size, config.intermediate_size);
        let mut rng = Lcg(seed);
        let mut t = Tensors::new();
        rng.put(&mut t, names::WTE.into(), vec![v, h], 0.0, 0.5);
        rng.put(&mut t, names::WPE.into(), vec![config.max_positions, h], 0.0, 0.2);
        for layer in 0..config.num_layers {
            for ln in names::LAYER_NORMS {
                rng.put_norm(&mut t, &names::layer(layer, ln), h);
            }
            for (module, [out, inp]) in names::linear_shapes(h, i) {
                let module = names::layer(layer, module);
                let scale = 1.0 / (inp as f32).sqrt();
                rng.put(&mut t, format!("{module}.weight"), vec![out, inp], 0.0, scale);
                rng.put(&mut t, format!("{module}.bias"), vec![out], 0.0, 0.05);
            }
        }
        rng.put_norm(&mut t, names::LN_F, h);
        TinyGpt2Weights { config: config.clone(), tensors: t }
    }

    /// Writes `config.json` and `model.safetensors` (f32) into `dir`.
    pub fn write_hf_dir(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("config.json"), self.config.to_hf_json()).map_err(|e| e.to_string())?;
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                (name.clone(), shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect())
            })
            .collect();
        let entries: Vec<_> =
            bytes.iter().map(|(n, s, b)| (n.as_str(), DType::F32, s.as_slice(), b.as_slice())).collect();
        rtllm::weights::write_safetensors(&dir.join("model.safetensors"), &entries, &BTreeMap::new())
            .map_err(|e| e.to_string())
    }

    fn get(&self, name: &str) -> Result<&[f32], String> {
        self.tensors.get(name).map(|(_, v)| v.as_slice()).ok_or_else(|| format!("no weight {name}"))
    }

    /// The logits `[vocab]` at every position of `tokens`, computed in f64.
    pub fn forward(&self, tokens: &[u32]) -> Result<Vec<Vec<f64>>, String> {
        let c = &self.config;
        let (h, heads) = (c.hidden_size, c.num_heads);
        let wte = self.get(names::WTE)?;
        let wpe = self.get(names::WPE)?;
        let mut x: Vec<Vec<f64>> = Vec::with_capacity(tokens.len());
        for (pos, &tok) in tokens.iter().enumerate() {
            let (t, p) = (tok as usize, pos);
            if t >= c.vocab_size || p >= c.max_positions {
                return Err(format!("token {t} at position {p} is out of range"));
            }
            x.push((0..h).map(|j| wte[t * h + j] as f64 + wpe[p * h + j] as f64).collect());
        }
        for layer in 0..c.num_layers {
            let m = |module: &str| names::layer(layer, module);
            let a = self.layer_norm(&x, &m("ln_1"))?;
            let q = self.linear(&a, &m("attn.q_proj"))?;
            let k = self.linear(&a, &m("attn.k_proj"))?;
            let v = self.linear(&a, &m("attn.v_proj"))?;
            let attn = causal_attention(&q, &k, &v, heads, h / heads);
            let o = self.linear(&attn, &m("attn.out_proj"))?;
            add_into(&mut x, &o);
            let a = self.layer_norm(&x, &m("ln_2"))?;
            let up = self.linear(&a, &m("mlp.fc_in"))?;
            let act: Vec<Vec<f64>> = up.iter().map(|r| r.iter().map(|&u| gelu_tanh(u)).collect()).collect();
            let down = self.linear(&act, &m("mlp.fc_out"))?;
            add_into(&mut x, &down);
        }
        let x = self.layer_norm(&x, names::LN_F)?;
        Ok(x.iter().map(|r| (0..c.vocab_size).map(|t| dot(r, &wte[t * h..(t + 1) * h])).collect()).collect())
    }

    fn linear(&self, x: &[Vec<f64>], module: &str) -> Result<Vec<Vec<f64>>, String> {
        let w = self.get(&format!("{module}.weight"))?;
        let b = self.get(&format!("{module}.bias"))?;
        let k = x.first().map_or(0, Vec::len);
        Ok(x.iter()
            .map(|r| b.iter().enumerate().map(|(n, &bn)| bn as f64 + dot(r, &w[n * k..(n + 1) * k])).collect())
            .collect())
    }

    fn layer_norm(&self, x: &[Vec<f64>], module: &str) -> Result<Vec<Vec<f64>>, String> {
        let w = self.get(&format!("{module}.weight"))?;
        let b = self.get(&format!("{module}.bias"))?;
        Ok(x.iter()
            .map(|r| {
                let n = r.len() as f64;
                let mean = r.iter().sum::<f64>() / n;
                let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                let inv = 1.0 / (var + self.config.eps).sqrt();
                r.iter().enumerate().map(|(j, v)| (v - mean) * inv * w[j] as f64 + b[j] as f64).collect()
            })
            .collect())
    }
}

fn dot(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, &y)| x * y as f64).sum()
}

fn add_into(x: &mut [Vec<f64>], y: &[Vec<f64>]) {
    for (r, s) in x.iter_mut().zip(y) {
        for (a, b) in r.iter_mut().zip(s) {
            *a += b;
        }
    }
}

/// GELU, tanh approximation (PyTorch's `gelu(x, approximate="tanh")`).
pub fn gelu_tanh(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// Softmax attention of every position over itself and the positions before it.
fn causal_attention(q: &[Vec<f64>], k: &[Vec<f64>], v: &[Vec<f64>], heads: usize, d: usize) -> Vec<Vec<f64>> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![vec![0.0; heads * d]; q.len()];
    for (i, o) in out.iter_mut().enumerate() {
        for hd in 0..heads {
            let cols = hd * d..(hd + 1) * d;
            let scores: Vec<f64> = (0..=i)
                .map(|j| q[i][cols.clone()].iter().zip(&k[j][cols.clone()]).map(|(a, b)| a * b).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for (j, e) in exps.iter().enumerate() {
                for (c, col) in cols.clone().enumerate() {
                    o[hd * d + c] += e / total * v[j][col];
                }
            }
        }
    }
    out
}
