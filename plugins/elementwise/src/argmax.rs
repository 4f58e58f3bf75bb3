//! `argmax`: greedy token choice, the first index of each row's maximum (NaN never wins).

use crate::util::{expect_args, expect_shape, par_rows, shape_of_rank};
use rtllm_plugin_api::{
    register_op, shapes, Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta,
};

/// Logits per pool task below which the kernel runs on one thread.
const MIN_CHUNK: usize = 1 << 16;

pub struct Argmax;

pub struct ArgmaxKernel;

/// The first index of the largest non-NaN value; 0 for an empty or all-NaN row.
pub fn argmax_row(row: &[f32]) -> usize {
    let mut best = 0usize;
    let mut best_v = f32::NAN;
    for (i, &v) in row.iter().enumerate() {
        // `!(v <= best_v)` would let NaN win; this takes v only when it is a strictly larger number.
        if v > best_v || (best_v.is_nan() && !v.is_nan()) {
            best = i;
            best_v = v;
        }
    }
    best
}

impl Op for Argmax {
    const NAME: &'static str = "argmax";
    const SUMMARY: &'static str = "logits [S, V] f32 -> [S] i32, the first index of each row's max (NaN never wins)";
    type Kernel = ArgmaxKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::I32]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::elementwise::infer_argmax(inputs, &[DType::F32])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<ArgmaxKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(ArgmaxKernel)
    }

    fn examples() -> Vec<OpExample> {
        [(1usize, 49152usize), (3, 7), (17, 1001), (4, 1)]
            .iter()
            .map(|&(s, v)| OpExample { inputs: vec![TensorMeta::of(DType::F32, &[s, v])].into(), attrs: Attrs::new() })
            .collect()
    }
}

impl Kernel for ArgmaxKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        expect_args(Argmax::NAME, inputs, &[1], outputs, 1)?;
        let shape = shape_of_rank(Argmax::NAME, "logits", &inputs[0], 2)?;
        expect_shape(Argmax::NAME, "out", &outputs[0], &shape[..1])?;
        let (v, logits) = (shape[1], inputs[0].slice::<f32>()?);
        if v > i32::MAX as usize {
            return Err(PluginError::new(format!("{}: vocabulary of {v} does not fit i32 indices", Argmax::NAME)));
        }
        let out = outputs[0].slice_mut::<i32>()?;
        par_rows(ctx, out, 1, MIN_CHUNK.div_ceil(v.max(1)), |r, o| {
            for (row, o) in r.zip(o.iter_mut()) {
                *o = argmax_row(&logits[row * v..(row + 1) * v]) as i32;
            }
        })
    }
}

register_op!(Argmax);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_f32, run, Buf};

    #[test]
    fn first_max_and_nan_rules() {
        assert_eq!(argmax_row(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax_row(&[f32::NAN, -5.0, f32::NAN, -4.0]), 3);
        assert_eq!(argmax_row(&[f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax_row(&[2.0, f32::NAN, 7.0, f32::INFINITY, f32::NAN]), 3);
        assert_eq!(argmax_row(&[f32::NAN, f32::NAN]), 0);
    }

    #[test]
    fn rows_through_the_kernel() {
        let (s, v) = (9usize, 20_011usize);
        let mut logits = rand_f32(s * v, 7);
        for row in 0..s {
            logits[row * v + (row * 997) % v] = 5.0;
            logits[row * v + 13] = f32::NAN;
        }
        let out = run::<Argmax>(&Attrs::new(), &mut [Buf::from_slice(&[s, v], &logits)]).unwrap()[0].to_vec::<i32>();
        let want: Vec<i32> = (0..s).map(|row| ((row * 997) % v) as i32).collect();
        assert_eq!(out, want);
    }
}
