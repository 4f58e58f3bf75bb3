//! `sample` on the CPU: one token per logits row — greedy argmax, or temperature + top-k +
//! top-p + a seeded draw — with exactly the semantics and random stream of plugin-api
//! `shapes::sampling` (shared with the CUDA provider and the framework's reference). The
//! threshold is found like the GPU does it: a radix select over the weights' f32 bit patterns
//! (4 passes of 8-bit digits, counts and f64 masses), then a sequential f64 draw.

use crate::argmax::argmax_row;
use crate::util::par_rows;
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rtllm_plugin_api::shapes::sampling::{self, is_greedy, uniform, LOGITS, OP, SEEDS, TEMPERATURE, TOP_K, TOP_P};
use rtllm_plugin_api::{
    register_op, Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

/// Logits per pool task below which the kernel runs on one thread.
const MIN_CHUNK: usize = 1 << 15;

/// One row's sampling parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowParams {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub seed: i64,
}

/// The threshold `t`: the largest `w_j` with `count{w >= w_j} >= k` (when `k` is given) or
/// `mass{w >= w_j} >= target` (when `target` is given); 0 when neither is given or rounding
/// keeps the mass from reaching `target`. `w` are non-negative (so they order like their bits).
pub fn threshold(w: &[f32], k: Option<usize>, target: Option<f64>) -> f32 {
    if k.is_none() && target.is_none() {
        return 0.0;
    }
    let (mut prefix, mut mask) = (0u32, 0u32);
    let (mut above_cnt, mut above_mass) = (0usize, 0f64);
    for pass in 0..4 {
        let shift = 24 - 8 * pass;
        let mut cnt = [0usize; 256];
        let mut mass = [0f64; 256];
        for &x in w {
            let bits = x.to_bits();
            if bits & mask == prefix {
                let d = ((bits >> shift) & 255) as usize;
                cnt[d] += 1;
                mass[d] += x as f64;
            }
        }
        let (mut c, mut ms, mut chosen, mut lowest) = (above_cnt, above_mass, None, 0usize);
        for d in (0..256).rev() {
            if cnt[d] == 0 {
                continue;
            }
            lowest = d;
            let hit = k.is_some_and(|k| c + cnt[d] >= k) || target.is_some_and(|t| ms + mass[d] >= t);
            if hit {
                chosen = Some(d);
                break;
            }
            c += cnt[d];
            ms += mass[d];
        }
        let chosen = match chosen {
            Some(d) => d,
            None if pass == 0 => return 0.0,
            None => lowest,
        };
        for d in chosen + 1..256 {
            above_cnt += cnt[d];
            above_mass += mass[d];
        }
        prefix |= (chosen as u32) << shift;
        mask |= 255 << shift;
    }
    f32::from_bits(prefix)
}

/// Samples one row of f32 logits; `w` is scratch (overwritten with the weights).
pub fn sample_row(logits: &[f32], p: RowParams, w: &mut Vec<f32>) -> usize {
    let a = argmax_row(logits);
    let m = logits.get(a).copied().unwrap_or(f32::NAN);
    if is_greedy(p.temperature) || !m.is_finite() {
        return a;
    }
    w.clear();
    w.extend(logits.iter().map(|&l| if l.is_finite() { ((l - m) / p.temperature).exp() } else { 0.0 }));
    let v = w.len();
    let k = (p.top_k > 0 && (p.top_k as usize) < v).then_some(p.top_k as usize);
    let target = (p.top_p < 1.0).then(|| p.top_p as f64 * w.iter().map(|&x| x as f64).sum::<f64>());
    let t = threshold(w, k, target);
    let kept = |x: f32| x >= t && x > 0.0;
    let total: f64 = w.iter().filter(|&&x| kept(x)).map(|&x| x as f64).sum();
    let goal = uniform(p.seed) * total;
    let mut cum = 0f64;
    for (i, &x) in w.iter().enumerate() {
        if kept(x) {
            cum += x as f64;
            if cum > goal {
                return i;
            }
        }
    }
    a
}

pub struct Sample;

pub struct SampleKernel;

impl Op for Sample {
    const NAME: &'static str = OP;
    const SUMMARY: &'static str = "one token per logits row: logits [L, V] (f32/bf16/f16), temperature [L] f32 \
        (<= 0: greedy argmax), top_k [L] i32 (0 = off), top_p [L] f32 (1 = off), seeds [L] i64 -> tokens [L] i32. \
        Ties at the top-k/top-p threshold are kept; the draw is u = (splitmix64(seed) >> 11) * 2^-53 over the kept \
        mass in vocabulary order (exact rules: plugin-api shapes::sampling).";
    type Kernel = SampleKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        sampling::infer(inputs, &DType::FLOATS)
    }

    fn create(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<SampleKernel, PluginError> {
        sampling::infer(inputs, &DType::FLOATS)?;
        Ok(SampleKernel)
    }

    fn examples() -> Vec<OpExample> {
        [(DType::F32, 6, 1000), (DType::BF16, 8, 4099), (DType::F16, 5, 515), (DType::F32, 3, 32000)]
            .into_iter()
            .map(|(d, l, v)| OpExample {
                inputs: vec![
                    TensorMeta::of(d, &[l, v]),
                    TensorMeta::of(DType::F32, &[l]),
                    TensorMeta::of(DType::I32, &[l]),
                    TensorMeta::of(DType::F32, &[l]),
                    TensorMeta::of(DType::I64, &[l]),
                ]
                .into(),
                attrs: Attrs::new(),
            })
            .collect()
    }
}

/// Row `r` of the logits as f32 in `buf` (or borrowed when already f32).
fn row_f32<'a>(logits: &'a InputView<'_>, r: usize, v: usize, buf: &'a mut Vec<f32>) -> Result<&'a [f32], PluginError> {
    let range = r * v..(r + 1) * v;
    match logits.meta().dtype {
        DType::F32 => Ok(&logits.slice::<f32>()?[range]),
        DType::BF16 => {
            buf.resize(v, 0.0);
            logits.slice::<bf16>()?[range].convert_to_f32_slice(buf);
            Ok(buf)
        }
        DType::F16 => {
            buf.resize(v, 0.0);
            logits.slice::<f16>()?[range].convert_to_f32_slice(buf);
            Ok(buf)
        }
        other => Err(PluginError::new(format!("{OP}: logits dtype {other} is not f32, bf16 or f16"))),
    }
}

impl Kernel for SampleKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let (_, v) = sampling::check_launch(inputs, outputs)?;
        let logits = &inputs[LOGITS];
        let (temp, top_k) = (inputs[TEMPERATURE].slice::<f32>()?, inputs[TOP_K].slice::<i32>()?);
        let (top_p, seeds) = (inputs[TOP_P].slice::<f32>()?, inputs[SEEDS].slice::<i64>()?);
        row_f32(logits, 0, 0, &mut Vec::new())?; // dtype and view checks before the pool runs
        let out = outputs[0].slice_mut::<i32>()?;
        let failed = std::sync::Mutex::new(None);
        par_rows(ctx, out, 1, MIN_CHUNK.div_ceil(v), |rows, o| {
            let (mut buf, mut w) = (Vec::new(), Vec::new());
            for (r, o) in rows.zip(o.iter_mut()) {
                let p = RowParams { temperature: temp[r], top_k: top_k[r], top_p: top_p[r], seed: seeds[r] };
                match row_f32(logits, r, v, &mut buf) {
                    Ok(row) => *o = sample_row(row, p, &mut w) as i32,
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            }
        })?;
        match failed.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

register_op!(Sample);

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
