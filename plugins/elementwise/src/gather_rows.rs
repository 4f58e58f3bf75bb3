//! `gather_rows`: picks rows of a [T, H] tensor by index, e.g. each sequence's last token's
//! hidden state before the LM head.

use crate::util::{expect_args, expect_shape, par_rows, shape_of_rank};
use rtllm_plugin_api::{
    register_op, shapes, Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta,
};

/// Copied elements per pool task below which the kernel runs on one thread.
const MIN_CHUNK: usize = 1 << 16;

pub struct GatherRows;

pub struct GatherRowsKernel;

impl Op for GatherRows {
    const NAME: &'static str = "gather_rows";
    const SUMMARY: &'static str =
        "x [T, H] f32, index [S] i32 -> [S, H] with out[s] = x[index[s]]; every index must lie in 0..T";
    type Kernel = GatherRowsKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::I32]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::elementwise::infer_gather_rows(inputs, &[DType::F32])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<GatherRowsKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(GatherRowsKernel)
    }

    fn examples() -> Vec<OpExample> {
        [(1usize, 576usize, 1usize), (7, 33, 3), (64, 576, 64), (5, 1, 9)]
            .iter()
            .map(|&(t, h, s)| OpExample {
                inputs: vec![TensorMeta::of(DType::F32, &[t, h]), TensorMeta::of(DType::I32, &[s])].into(),
                attrs: Attrs::new(),
            })
            .collect()
    }
}

impl Kernel for GatherRowsKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        expect_args(GatherRows::NAME, inputs, &[2], outputs, 1)?;
        let xs = shape_of_rank(GatherRows::NAME, "x", &inputs[0], 2)?;
        let is = shape_of_rank(GatherRows::NAME, "index", &inputs[1], 1)?;
        let (t, h) = (xs[0], xs[1]);
        expect_shape(GatherRows::NAME, "out", &outputs[0], &[is[0], h])?;
        let (x, index) = (inputs[0].slice::<f32>()?, inputs[1].slice::<i32>()?);
        if let Some((s, &bad)) = index.iter().enumerate().find(|(_, &i)| i < 0 || i as usize >= t) {
            return Err(PluginError::new(format!(
                "{}: index[{s}] = {bad} is out of range for {t} rows",
                GatherRows::NAME
            )));
        }
        let out = outputs[0].slice_mut::<f32>()?;
        par_rows(ctx, out, h, MIN_CHUNK, |r, o| {
            for (s, o) in r.zip(o.chunks_exact_mut(h)) {
                let row = index[s] as usize;
                o.copy_from_slice(&x[row * h..(row + 1) * h]);
            }
        })
    }
}

register_op!(GatherRows);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_f32, run, Buf};

    #[test]
    fn gathers_rows_in_index_order() {
        let (t, h) = (300usize, 257usize);
        let x = rand_f32(t * h, 9);
        let mut index: Vec<i32> = vec![299, 0, 17, 17, 150];
        index.extend((0..400).map(|i| (i * 7919) % t as i32));
        let s = index.len();
        let out = run::<GatherRows>(&Attrs::new(), &mut [Buf::from_slice(&[t, h], &x), Buf::from_slice(&[s], &index)])
            .unwrap()[0]
            .to_vec::<f32>();
        let want: Vec<f32> = index.iter().flat_map(|&i| x[i as usize * h..(i as usize + 1) * h].to_vec()).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        for bad in [3i32, -1] {
            let mut ins = [Buf::from_slice(&[3, 2], &[0.0f32; 6]), Buf::from_slice(&[2], &[0, bad])];
            let err = run::<GatherRows>(&Attrs::new(), &mut ins).unwrap_err();
            assert!(err.message().contains(&format!("index[1] = {bad} is out of range for 3 rows")), "{err}");
        }
    }
}
