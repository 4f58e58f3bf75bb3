//! `add`: elementwise sum of two f32 tensors of the same shape (residual connections).

use crate::util::{expect_args, expect_shape, par_rows};
use rtllm_plugin_api::{
    register_op, shapes, Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta, TensorView,
};

/// Elements per pool task below which the sum runs on one thread.
const MIN_CHUNK: usize = 1 << 15;

pub struct Add;

pub struct AddKernel;

impl Op for Add {
    const NAME: &'static str = "add";
    const SUMMARY: &'static str = "out = a + b for two f32 tensors of the same shape";
    type Kernel = AddKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32]
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::elementwise::infer_add(inputs, &[DType::F32])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<AddKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(AddKernel)
    }

    fn examples() -> Vec<OpExample> {
        [&[1usize, 576][..], &[7, 33], &[3, 5, 129], &[4096]]
            .iter()
            .map(|dims| OpExample {
                inputs: vec![TensorMeta::of(DType::F32, dims), TensorMeta::of(DType::F32, dims)].into(),
                attrs: Attrs::new(),
            })
            .collect()
    }
}

impl Kernel for AddKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        expect_args(Add::NAME, inputs, &[2], outputs, 1)?;
        let shape = inputs[0].shape()?;
        expect_shape(Add::NAME, "b", &inputs[1], &shape)?;
        expect_shape(Add::NAME, "out", &outputs[0], &shape)?;
        let (a, b) = (inputs[0].slice::<f32>()?, inputs[1].slice::<f32>()?);
        let out = outputs[0].slice_mut::<f32>()?;
        par_rows(ctx, out, 1, MIN_CHUNK, |r, o| {
            for ((o, x), y) in o.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
                *o = x + y;
            }
        })
    }
}

register_op!(Add);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_f32, run, Buf};

    #[test]
    fn adds_small_and_large() {
        for n in [1usize, 7, 100_003] {
            let (a, b) = (rand_f32(n, 1), rand_f32(n, 2));
            let mut ins = [Buf::from_slice(&[n], &a), Buf::from_slice(&[n], &b)];
            let out = run::<Add>(&Attrs::new(), &mut ins).unwrap()[0].to_vec::<f32>();
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let err =
            Add::infer(&[TensorMeta::of(DType::F32, &[2, 3]), TensorMeta::of(DType::F32, &[3, 2])], &Attrs::new())
                .unwrap_err();
        assert!(err.message().contains("mismatch"), "{err}");
        let err = Add::infer(&[TensorMeta::of(DType::F32, &[2]), TensorMeta::of(DType::F16, &[2])], &Attrs::new())
            .unwrap_err();
        assert!(err.message().contains("must be f32"), "{err}");
    }
}
