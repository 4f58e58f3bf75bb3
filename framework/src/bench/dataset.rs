//! Benchmark datasets: synthetic requests (fixed or normally distributed input/output lengths
//! of random token ids, seeded) or a JSONL file with `prompt` or `input_ids` and
//! `output_tokens` per line.

use crate::tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// One request of a benchmark: prompt token ids and how many tokens to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRequest {
    pub input_ids: Vec<u32>,
    pub output_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error("invalid synthetic dataset: {0}")]
    Synthetic(String),
}

/// Synthetic dataset settings.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub num_requests: usize,
    pub input_len: usize,
    pub output_len: usize,
    /// Standard deviations of normally distributed lengths (0 = fixed).
    pub input_len_std: f64,
    pub output_len_std: f64,
    pub vocab_size: usize,
    pub seed: u64,
}

/// A normal sample (Box-Muller) rounded and clamped to at least 1.
fn normal_len(rng: &mut impl Rng, mean: usize, std: f64) -> usize {
    if std <= 0.0 {
        return mean.max(1);
    }
    let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mean as f64 + std * z).round().max(1.0) as usize
}

/// Random token ids from the vocabulary, lengths fixed or normal, reproducible from the seed.
pub fn synthetic(spec: &SyntheticSpec) -> Result<Vec<BenchRequest>, DatasetError> {
    if spec.num_requests == 0 || spec.input_len == 0 || spec.output_len == 0 || spec.vocab_size == 0 {
        return Err(DatasetError::Synthetic("num_requests, input_len, output_len and the vocab must be >= 1".into()));
    }
    if !(spec.input_len_std >= 0.0 && spec.output_len_std >= 0.0) {
        return Err(DatasetError::Synthetic("length standard deviations must be >= 0".into()));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    Ok((0..spec.num_requests)
        .map(|_| {
            let n_in = normal_len(&mut rng, spec.input_len, spec.input_len_std);
            let output_len = normal_len(&mut rng, spec.output_len, spec.output_len_std);
            let input_ids = (0..n_in).map(|_| rng.gen_range(0..spec.vocab_size as u32)).collect();
            BenchRequest { input_ids, output_len }
        })
        .collect())
}

/// Reads a JSONL dataset; `prompt` lines are encoded with `tokenizer` (with BOS as configured).
pub fn from_jsonl(
    path: &Path,
    tokenizer: &Tokenizer,
    default_output_len: usize,
) -> Result<Vec<BenchRequest>, DatasetError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| DatasetError::File { path: name.clone(), message: e.to_string() })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DatasetError::Line { path: name.clone(), line: i + 1, message };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let input_ids = match (v.get("input_ids"), v.get("prompt")) {
            (Some(ids), _) => ids
                .as_array()
                .ok_or_else(|| bad("`input_ids` must be an array of token ids".into()))?
                .iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| bad(format!("bad token id {x}"))))
                .collect::<Result<Vec<u32>, _>>()?,
            (None, Some(serde_json::Value::String(p))) => {
                tokenizer.encode(p, true).map_err(|e| bad(format!("encoding the prompt: {e}")))?
            }
            _ => return Err(bad("each line needs `prompt` (a string) or `input_ids`".into())),
        };
        let output_len = match v.get("output_tokens") {
            Some(n) => {
                n.as_u64().filter(|n| *n >= 1).ok_or_else(|| bad("`output_tokens` must be an integer >= 1".into()))?
                    as usize
            }
            None => default_output_len,
        };
        if input_ids.is_empty() {
            return Err(bad("empty prompt".into()));
        }
        out.push(BenchRequest { input_ids, output_len });
    }
    if out.is_empty() {
        return Err(DatasetError::File { path: name, message: "no requests".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_reproducible_and_shaped() {
        let spec = SyntheticSpec {
            num_requests: 50,
            input_len: 20,
            output_len: 8,
            input_len_std: 0.0,
            output_len_std: 0.0,
            vocab_size: 100,
            seed: 7,
        };
        let a = synthetic(&spec).unwrap();
        assert_eq!(a, synthetic(&spec).unwrap());
        assert!(a.iter().all(|r| r.input_ids.len() == 20 && r.output_len == 8 && r.input_ids.iter().all(|&t| t < 100)));
        let n = synthetic(&SyntheticSpec { input_len_std: 5.0, ..spec.clone() }).unwrap();
        let mean = n.iter().map(|r| r.input_ids.len()).sum::<usize>() as f64 / 50.0;
        assert!((mean - 20.0).abs() < 3.0 && n.iter().any(|r| r.input_ids.len() != 20), "{mean}");
        assert!(synthetic(&SyntheticSpec { num_requests: 0, ..spec }).is_err());
    }
}
