//! `silu_mul`: SwiGLU's activation, `silu(gate) * up`, from two tensors or from one fused
//! gate|up projection output (gate in the first half of each row, up in the second).

use crate::util::{expect_args, expect_shape, par_rows};
use rtllm_plugin_api::{
    register_op, shapes, Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta, TensorView,
};

/// Output elements per pool task below which the kernel runs on one thread.
const MIN_CHUNK: usize = 1 << 14;

pub struct SiluMul;

pub struct SiluMulKernel;

/// `x * sigmoid(x)` written as torch's CPU kernel does: `x / (1 + exp(-x))`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn silu_mul_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(*g) * u;
    }
}

impl Op for SiluMul {
    const NAME: &'static str = "silu_mul";
    const SUMMARY: &'static str =
        "silu(gate) * up: inputs gate [T, I] and up [T, I], or one fused [T, 2I] (gate first) -> [T, I] f32";
    type Kernel = SiluMulKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::elementwise::infer_silu_mul(inputs, &[DType::F32])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<SiluMulKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(SiluMulKernel)
    }

    fn examples() -> Vec<OpExample> {
        let two = |t: usize, i: usize| vec![TensorMeta::of(DType::F32, &[t, i]), TensorMeta::of(DType::F32, &[t, i])];
        let one = |t: usize, i: usize| vec![TensorMeta::of(DType::F32, &[t, 2 * i])];
        [two(1, 1536), two(5, 37), one(1, 1536), one(9, 13), two(64, 1536)]
            .into_iter()
            .map(|inputs| OpExample { inputs: inputs.into(), attrs: Attrs::new() })
            .collect()
    }
}

impl Kernel for SiluMulKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        expect_args(SiluMul::NAME, inputs, &[1, 2], outputs, 1)?;
        let shape = inputs[0].shape()?;
        if shape.len() != 2 {
            return Err(PluginError::new(format!(
                "{}: input must have rank 2, got {}",
                SiluMul::NAME,
                inputs[0].meta()
            )));
        }
        let (rows, width) = (shape[0], if inputs.len() == 2 { shape[1] } else { shape[1] / 2 });
        if inputs.len() == 2 {
            expect_shape(SiluMul::NAME, "up", &inputs[1], &shape)?;
        } else if shape[1] % 2 != 0 {
            return Err(PluginError::new(format!("{}: fused gate|up width {} is odd", SiluMul::NAME, shape[1])));
        }
        expect_shape(SiluMul::NAME, "out", &outputs[0], &[rows, width])?;
        let out = outputs[0].slice_mut::<f32>()?;
        if inputs.len() == 2 {
            let (gate, up) = (inputs[0].slice::<f32>()?, inputs[1].slice::<f32>()?);
            par_rows(ctx, out, width, MIN_CHUNK, |r, o| {
                let span = r.start * width..r.end * width;
                silu_mul_row(&gate[span.clone()], &up[span], o);
            })
        } else {
            let x = inputs[0].slice::<f32>()?;
            par_rows(ctx, out, width, MIN_CHUNK, |r, o| {
                for (row, o) in r.zip(o.chunks_exact_mut(width)) {
                    let (gate, up) = x[row * 2 * width..(row + 1) * 2 * width].split_at(width);
                    silu_mul_row(gate, up, o);
                }
            })
        }
    }
}

register_op!(SiluMul);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, rand_f32, run, Buf};

    fn naive(g: f32, u: f32) -> f32 {
        (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32
    }

    #[test]
    fn two_inputs_match_naive() {
        for (t, i) in [(1usize, 1), (3, 37), (40, 1000)] {
            let (g, u) = (rand_f32(t * i, 3), rand_f32(t * i, 4));
            let g: Vec<f32> = g.iter().map(|x| x * 12.0).collect();
            let mut ins = [Buf::from_slice(&[t, i], &g), Buf::from_slice(&[t, i], &u)];
            let out = run::<SiluMul>(&Attrs::new(), &mut ins).unwrap()[0].to_vec::<f32>();
            let want: Vec<f32> = g.iter().zip(&u).map(|(g, u)| naive(*g, *u)).collect();
            assert_close(&out, &want, 1e-6);
        }
    }

    #[test]
    fn fused_input_equals_split_inputs() {
        let (t, i) = (33usize, 517usize);
        let x = rand_f32(t * 2 * i, 5);
        let (mut g, mut u) = (Vec::new(), Vec::new());
        for row in x.chunks(2 * i) {
            g.extend_from_slice(&row[..i]);
            u.extend_from_slice(&row[i..]);
        }
        let fused = run::<SiluMul>(&Attrs::new(), &mut [Buf::from_slice(&[t, 2 * i], &x)]).unwrap()[0].to_vec::<f32>();
        let split = run::<SiluMul>(&Attrs::new(), &mut [Buf::from_slice(&[t, i], &g), Buf::from_slice(&[t, i], &u)])
            .unwrap()[0]
            .to_vec::<f32>();
        assert_eq!(fused, split);
    }

    #[test]
    fn extremes_stay_finite() {
        let g = [-1000.0f32, -90.0, 0.0, 90.0, 1000.0];
        let out =
            run::<SiluMul>(&Attrs::new(), &mut [Buf::from_slice(&[1, 5], &g), Buf::from_slice(&[1, 5], &[1.0f32; 5])])
                .unwrap()[0]
                .to_vec::<f32>();
        assert_eq!(out, vec![-0.0, -0.0, 0.0, 90.0, 1000.0]);
    }

    #[test]
    fn odd_fused_width_is_an_error() {
        let err = SiluMul::infer(&[TensorMeta::of(DType::F32, &[2, 7])], &Attrs::new()).unwrap_err();
        assert!(err.message().contains("odd"), "{err}");
    }
}
