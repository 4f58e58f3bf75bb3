//! `rope`: rotary position embedding of packed per-token heads, neox (rotate-half) or
//! interleaved pairs, optional partial rotary and linear/llama3 frequency scaling. The angle
//! `position * inv_freq` is rounded to f32 as in HF before its cosine and sine.

use crate::rope_freqs::{RopeConfig, RopeStyle};
use crate::util::{expect_args, expect_shape, par_rows, shape_of_rank};
use rtllm_plugin_api::{
    register_op, shapes, Attrs, DType, Dim, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta,
};

/// Output elements per pool task below which the kernel runs on one thread.
const MIN_CHUNK: usize = 1 << 13;
/// Frequencies whose cos/sin are computed at once into a stack buffer.
const FREQ_CHUNK: usize = 64;

pub struct Rope;

pub struct RopeKernel {
    cfg: RopeConfig,
}

impl Op for Rope {
    const NAME: &'static str = "rope";
    const SUMMARY: &'static str = "rotary embedding: x [T, heads*head_dim] f32, positions [T] i32 (>= 0) -> like x; \
        attrs head_dim, theta, style neox|interleaved, rotary_dim, scaling_type none|linear|llama3, scaling_factor, \
        low_freq_factor, high_freq_factor, original_max_position_embeddings";
    type Kernel = RopeKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::I32]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::elementwise::infer_rope(inputs, attrs, &[DType::F32])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<RopeKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(RopeKernel { cfg: RopeConfig::from_attrs(attrs)? })
    }

    fn examples() -> Vec<OpExample> {
        let ex = |t: usize, heads: usize, attrs: Attrs| {
            let hd = attrs.usize("head_dim").unwrap_or(1);
            OpExample {
                inputs: vec![TensorMeta::of(DType::F32, &[t, heads * hd]), TensorMeta::of(DType::I32, &[t])].into(),
                attrs,
            }
        };
        let llama3 = Attrs::new()
            .with("head_dim", 128usize)
            .with("theta", 500000.0)
            .with("scaling_type", "llama3")
            .with("scaling_factor", 8.0)
            .with("low_freq_factor", 1.0)
            .with("high_freq_factor", 4.0)
            .with("original_max_position_embeddings", 8192usize);
        vec![
            ex(1, 9, Attrs::new().with("head_dim", 64usize)),
            ex(7, 3, Attrs::new().with("head_dim", 64usize).with("theta", 100000.0)),
            ex(5, 4, Attrs::new().with("head_dim", 18usize).with("style", "interleaved")),
            ex(3, 2, Attrs::new().with("head_dim", 80usize).with("rotary_dim", 32usize)),
            ex(4, 2, Attrs::new().with("head_dim", 32usize).with("scaling_type", "linear").with("scaling_factor", 2.0)),
            ex(2, 8, llama3),
        ]
    }
}

/// Rotates every head of one token's row `x` into `out`.
fn rope_row(cfg: &RopeConfig, pos: f32, x: &[f32], out: &mut [f32]) {
    let (hd, rd, half) = (cfg.head_dim, cfg.rotary_dim, cfg.rotary_dim / 2);
    if rd < hd {
        for (xh, oh) in x.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            oh[rd..].copy_from_slice(&xh[rd..]);
        }
    }
    let (mut cos, mut sin) = ([0f32; FREQ_CHUNK], [0f32; FREQ_CHUNK]);
    for c0 in (0..half).step_by(FREQ_CHUNK) {
        let n = (half - c0).min(FREQ_CHUNK);
        for ((c, s), f) in cos.iter_mut().zip(sin.iter_mut()).zip(&cfg.inv_freq[c0..c0 + n]) {
            let angle = (pos * f) as f64;
            let (sv, cv) = angle.sin_cos();
            (*c, *s) = (cv as f32, sv as f32);
        }
        let (cos, sin) = (&cos[..n], &sin[..n]);
        for (xh, oh) in x.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            match cfg.style {
                RopeStyle::Neox => {
                    let (x1, x2) = (&xh[c0..c0 + n], &xh[half + c0..half + c0 + n]);
                    let (o1, o2) = oh[..rd].split_at_mut(half);
                    let (o1, o2) = (&mut o1[c0..c0 + n], &mut o2[c0..c0 + n]);
                    for j in 0..n {
                        o1[j] = x1[j] * cos[j] - x2[j] * sin[j];
                        o2[j] = x2[j] * cos[j] + x1[j] * sin[j];
                    }
                }
                RopeStyle::Interleaved => {
                    let xs = &xh[2 * c0..2 * (c0 + n)];
                    let os = &mut oh[2 * c0..2 * (c0 + n)];
                    for (j, (xp, op)) in xs.chunks_exact(2).zip(os.chunks_exact_mut(2)).enumerate() {
                        op[0] = xp[0] * cos[j] - xp[1] * sin[j];
                        op[1] = xp[1] * cos[j] + xp[0] * sin[j];
                    }
                }
            }
        }
    }
}

impl Kernel for RopeKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        expect_args(Rope::NAME, inputs, &[2], outputs, 1)?;
        let shape = shape_of_rank(Rope::NAME, "x", &inputs[0], 2)?;
        let (t, width) = (shape[0], shape[1]);
        shapes::elementwise::check_rope_width(self.cfg.head_dim, &Dim::from(width))?;
        expect_shape(Rope::NAME, "positions", &inputs[1], &[t])?;
        expect_shape(Rope::NAME, "out", &outputs[0], &shape)?;
        let (x, positions) = (inputs[0].slice::<f32>()?, inputs[1].slice::<i32>()?);
        if let Some((i, p)) = positions.iter().enumerate().find(|(_, &p)| p < 0) {
            return Err(PluginError::new(format!("{}: positions[{i}] = {p} is negative", Rope::NAME)));
        }
        let out = outputs[0].slice_mut::<f32>()?;
        par_rows(ctx, out, width, MIN_CHUNK, |r, o| {
            for (row, o) in r.zip(o.chunks_exact_mut(width)) {
                rope_row(&self.cfg, positions[row] as f32, &x[row * width..(row + 1) * width], o);
            }
        })
    }
}

register_op!(Rope);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, rand_f32, run, Buf};

    /// Rotates pairs `pair(i)` of each head by `pos * inv_freq[i]`, in f64.
    fn naive(x: &[f32], positions: &[i32], hd: usize, inv: &[f32], pair: impl Fn(usize) -> (usize, usize)) -> Vec<f32> {
        let mut out = x.to_vec();
        let width = x.len() / positions.len();
        for (t, &p) in positions.iter().enumerate() {
            for h in 0..width / hd {
                let base = t * width + h * hd;
                for (i, &f) in inv.iter().enumerate() {
                    let (a, b) = pair(i);
                    let angle = (p as f32 * f) as f64;
                    let (xa, xb) = (x[base + a] as f64, x[base + b] as f64);
                    out[base + a] = (xa * angle.cos() - xb * angle.sin()) as f32;
                    out[base + b] = (xb * angle.cos() + xa * angle.sin()) as f32;
                }
            }
        }
        out
    }

    fn case(t: usize, heads: usize, attrs: &Attrs) -> (Vec<f32>, Vec<i32>, Vec<f32>) {
        let hd = attrs.usize("head_dim").unwrap();
        let x = rand_f32(t * heads * hd, 21);
        let positions: Vec<i32> = (0..t as i32).map(|i| i * 37 + 3).collect();
        let mut ins = [Buf::from_slice(&[t, heads * hd], &x), Buf::from_slice(&[t], &positions)];
        let out = run::<Rope>(attrs, &mut ins).unwrap()[0].to_vec::<f32>();
        (x, positions, out)
    }

    #[test]
    fn neox_matches_naive() {
        let attrs = Attrs::new().with("head_dim", 64usize);
        let (x, pos, out) = case(70, 9, &attrs);
        let inv = RopeConfig::from_attrs(&attrs).unwrap().inv_freq;
        assert_close(&out, &naive(&x, &pos, 64, &inv, |i| (i, i + 32)), 1e-6);
    }

    #[test]
    fn interleaved_and_partial_match_naive() {
        let attrs = Attrs::new().with("head_dim", 18usize).with("style", "interleaved");
        let (x, pos, out) = case(5, 3, &attrs);
        let inv = RopeConfig::from_attrs(&attrs).unwrap().inv_freq;
        assert_close(&out, &naive(&x, &pos, 18, &inv, |i| (2 * i, 2 * i + 1)), 1e-6);

        let attrs = Attrs::new().with("head_dim", 160usize).with("rotary_dim", 140usize);
        let (x, pos, out) = case(4, 2, &attrs);
        let inv = RopeConfig::from_attrs(&attrs).unwrap().inv_freq;
        assert_eq!(inv.len(), 70);
        assert_close(&out, &naive(&x, &pos, 160, &inv, |i| (i, i + 70)), 1e-6);
    }

    #[test]
    fn position_zero_is_identity_and_linear_scaling_divides_positions() {
        let attrs = Attrs::new().with("head_dim", 32usize);
        let x = rand_f32(2 * 64, 22);
        let mut ins = [Buf::from_slice(&[2, 64], &x), Buf::from_slice(&[2], &[0i32, 8])];
        let plain = run::<Rope>(&attrs, &mut ins).unwrap()[0].to_vec::<f32>();
        assert_eq!(&plain[..64], &x[..64]);
        let scaled = attrs.with("scaling_type", "linear").with("scaling_factor", 4.0);
        let mut ins = [Buf::from_slice(&[2, 64], &x), Buf::from_slice(&[2], &[0i32, 32])];
        let lin = run::<Rope>(&scaled, &mut ins).unwrap()[0].to_vec::<f32>();
        assert_close(&lin, &plain, 1e-5);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let attrs = Attrs::new().with("head_dim", 64usize);
        let err = Rope::infer(&[TensorMeta::of(DType::F32, &[2, 100]), TensorMeta::of(DType::I32, &[2])], &attrs)
            .unwrap_err();
        assert!(err.message().contains("multiple of head_dim"), "{err}");
        let mut ins = [Buf::from_slice(&[1, 64], &[0.5f32; 64]), Buf::from_slice(&[1], &[-1i32])];
        assert!(run::<Rope>(&attrs, &mut ins).unwrap_err().message().contains("negative"));
    }
}
