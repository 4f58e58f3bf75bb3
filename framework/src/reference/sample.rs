//! Reference `sample`: the op's per-row rules (plugin-api `shapes::sampling`) written out
//! naively in f64 — weights, a full sort for the top-k and top-p thresholds, and a sequential
//! draw with the shared random stream.

use super::{RefResult, ReferenceError};
use rtllm_plugin_api::shapes::sampling::{is_greedy, uniform};

/// The first index of the largest non-NaN value (0 when all are NaN).
fn argmax(row: &[f32]) -> usize {
    let mut best: Option<usize> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.map_or(true, |b| v > row[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

/// One row: the token under (temperature, top_k, top_p, seed).
pub fn sample_row(row: &[f32], temperature: f32, top_k: i32, top_p: f32, seed: i64) -> usize {
    let a = argmax(row);
    let m = row.get(a).copied().unwrap_or(f32::NAN);
    if is_greedy(temperature) || !m.is_finite() {
        return a;
    }
    let w: Vec<f64> = row
        .iter()
        .map(|&l| if l.is_finite() { ((l as f64 - m as f64) / temperature as f64).exp() } else { 0.0 })
        .collect();
    let mut desc = w.clone();
    desc.sort_by(|x, y| y.total_cmp(x));
    let mut t = 0f64;
    if top_k > 0 && (top_k as usize) < w.len() {
        t = t.max(desc[top_k as usize - 1]);
    }
    if top_p < 1.0 {
        let target = top_p as f64 * w.iter().sum::<f64>();
        let mut cum = 0f64;
        // The first value (descending) whose running mass reaches the target: mass{w >= it}
        // includes its ties, so it is the largest value whose mass does.
        let mut t_p = 0f64;
        for &x in &desc {
            cum += x;
            if cum >= target {
                t_p = x;
                break;
            }
        }
        t = t.max(t_p);
    }
    let kept = |x: f64| x >= t && x > 0.0;
    let total: f64 = w.iter().filter(|&&x| kept(x)).sum();
    let goal = uniform(seed) * total;
    let mut cum = 0f64;
    for (i, &x) in w.iter().enumerate() {
        if kept(x) {
            cum += x;
            if cum > goal {
                return i;
            }
        }
    }
    a
}

/// `logits` `[L, V]` (as f32) and the per-row parameters → `[L]` tokens.
pub fn sample(
    logits: &[f32],
    v: usize,
    temperature: &[f32],
    top_k: &[i32],
    top_p: &[f32],
    seeds: &[i64],
) -> RefResult<Vec<i32>> {
    let l = temperature.len();
    if v == 0 || v > i32::MAX as usize || logits.len() != l * v {
        return Err(ReferenceError::Shape(format!("sample: {} logits are not {l} rows of {v}", logits.len())));
    }
    if top_k.len() != l || top_p.len() != l || seeds.len() != l {
        return Err(ReferenceError::Shape(format!("sample: per-row inputs must all have {l} entries")));
    }
    Ok((0..l)
        .map(|r| sample_row(&logits[r * v..(r + 1) * v], temperature[r], top_k[r], top_p[r], seeds[r]) as i32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_hand() {
        let row = [3.0f32, 2.0, 2.0, 2.0, -1.0];
        assert_eq!(sample_row(&row, 0.0, 0, 1.0, 1), 0, "greedy");
        assert_eq!(sample_row(&[f32::NAN, 1.0, 1.0], f32::NAN, 0, 1.0, 1), 1, "greedy ties: lowest index");
        // top_k 2 keeps the three tied 2.0s as well; top_p tiny keeps only the max.
        let drawn: Vec<usize> = (0..500).map(|s| sample_row(&row, 1.0, 2, 1.0, s)).collect();
        assert!((0..4).all(|t| drawn.contains(&t)) && !drawn.contains(&4));
        assert!((0..50).all(|s| sample_row(&row, 1.0, 0, 0.1, s) == 0));
        // Seed 0's draw, by hand: u from the shared stream, walking the kept mass in order.
        let w: Vec<f64> = row.iter().map(|&l| (l as f64 - 3.0).exp()).collect();
        let goal = uniform(0) * w.iter().sum::<f64>();
        let mut cum = 0.0;
        let want = w.iter().position(|&x| {
            cum += x;
            cum > goal
        });
        assert_eq!(Some(sample_row(&row, 1.0, 0, 1.0, 0)), want);
        assert!(sample(&[0.0; 6], 3, &[1.0], &[0], &[1.0], &[0]).is_err());
    }
}
