//! Helpers for comparing engines on the same prompts: pseudo-random prompts, the last-position
//! logits of several prompts packed into one prefill step, and the distances between results.

use rtllm::engine::{EngineError, StepBatch};
use rtllm::parallel::ModelRunner;

/// One prompt of each length in `lengths`, token ids below `vocab` from an xorshift of `seed`.
pub fn random_prompts(vocab: usize, lengths: &[usize], seed: u64) -> Vec<Vec<u32>> {
    let mut x = seed.max(1);
    lengths
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % vocab.max(1) as u64) as u32
                })
                .collect()
        })
        .collect()
}

/// Last-position logits of every prompt, all prompts packed into one prefill step (each
/// sequence in fresh blocks from 0 on).
pub fn prefill_logits(engine: &mut dyn ModelRunner, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
    let mut batch = StepBatch::default();
    let bs = engine.limits().tokens_per_block;
    let mut next_block = 0u32;
    for p in prompts {
        let blocks: Vec<u32> = (0..p.len().div_ceil(bs) as u32).map(|i| next_block + i).collect();
        next_block += blocks.len() as u32;
        batch.push_sequence(p, 0, &blocks, true);
    }
    let vocab = engine.vocab_size();
    let logits = engine.forward(&batch)?;
    Ok(logits.chunks_exact(vocab).map(|r| r.to_vec()).collect())
}

/// The index of the largest value (the first of equals).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// max |a - b| / max |b| over every row.
pub fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let scale = b.iter().flatten().fold(0f64, |m, &x| m.max(x.abs() as f64)).max(1e-30);
    let diff = a.iter().flatten().zip(b.iter().flatten()).fold(0f64, |m, (&x, &y)| m.max((x - y).abs() as f64));
    diff / scale
}
