//! `embedding`: token embedding lookup from a float (f32/f16/bf16) or GGUF block-quantized
//! (Q8_0/Q4_0/Q4_1/Q4_K/Q6_K) table into f32 rows.

use crate::util::{expect_args, expect_shape, par_rows, shape_of_rank};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rtllm_plugin_api::{
    quant, register_op, shapes, Attrs, DType, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta, TensorView,
};

/// Output elements per pool task below which the lookup runs on one thread.
const MIN_CHUNK: usize = 1 << 14;

pub struct Embedding;

pub struct EmbeddingKernel;

fn table_dtypes() -> Vec<DType> {
    DType::FLOATS.into_iter().chain(DType::QUANTIZED).collect()
}

impl Op for Embedding {
    const NAME: &'static str = "embedding";
    const SUMMARY: &'static str = "ids [T] i32, table [V, H] (f32/f16/bf16/q8_0/q4_0/q4_1/q4_k/q6_k) -> [T, H] f32; \
                                   every id must lie in 0..V";
    type Kernel = EmbeddingKernel;

    fn dtypes() -> Vec<DType> {
        let mut d = table_dtypes();
        d.push(DType::I32);
        d
    }

    fn infer(inputs: &[TensorMeta], _attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        shapes::elementwise::infer_embedding(inputs, &table_dtypes(), Some(DType::F32))
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<EmbeddingKernel, PluginError> {
        Self::infer(inputs, attrs)?;
        Ok(EmbeddingKernel)
    }

    fn examples() -> Vec<OpExample> {
        let mut out = Vec::new();
        for dtype in table_dtypes() {
            let shapes: &[(usize, usize, usize)] = if dtype.is_quantized() {
                &[(1, 50, 256), (7, 33, 512)]
            } else {
                &[(1, 50, 576), (7, 33, 17), (64, 1000, 64)]
            };
            for &(t, v, h) in shapes {
                out.push(OpExample {
                    inputs: vec![TensorMeta::of(DType::I32, &[t]), TensorMeta::of(dtype, &[v, h])].into(),
                    attrs: Attrs::new(),
                });
            }
        }
        out
    }
}

/// A typed view of the whole table, built once per launch.
enum Table<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    /// Block-quantized rows of `row_bytes` bytes each.
    Quant {
        dtype: DType,
        bytes: &'a [u8],
        row_bytes: usize,
    },
}

impl<'a> Table<'a> {
    fn new(arg: &'a InputView<'_>, h: usize) -> Result<Table<'a>, PluginError> {
        Ok(match arg.meta().dtype {
            DType::F32 => Table::F32(arg.slice()?),
            DType::F16 => Table::F16(arg.slice()?),
            DType::BF16 => Table::BF16(arg.slice()?),
            dtype if dtype.is_quantized() => {
                Table::Quant { dtype, bytes: arg.bytes()?, row_bytes: quant::row_bytes(dtype, h)? }
            }
            other => return Err(PluginError::new(format!("unsupported table dtype {other}"))),
        })
    }

    /// Writes row `id` (validated below V) into `dst` (one row of `h` = `dst.len()` values).
    fn row(&self, id: usize, dst: &mut [f32]) -> Result<(), PluginError> {
        let span = id * dst.len()..(id + 1) * dst.len();
        match self {
            Table::F32(t) => dst.copy_from_slice(&t[span]),
            Table::F16(t) => t[span].convert_to_f32_slice(dst),
            Table::BF16(t) => t[span].convert_to_f32_slice(dst),
            Table::Quant { dtype, bytes, row_bytes } => {
                quant::dequantize_row(*dtype, &bytes[id * row_bytes..(id + 1) * row_bytes], dst)?
            }
        }
        Ok(())
    }
}

impl Kernel for EmbeddingKernel {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let op = Embedding::NAME;
        expect_args(op, inputs, &[2], outputs, 1)?;
        let t = shape_of_rank(op, "ids", &inputs[0], 1)?[0];
        let ts = shape_of_rank(op, "table", &inputs[1], 2)?;
        let (v, h) = (ts[0], ts[1]);
        expect_shape(op, "out", &outputs[0], &[t, h])?;
        let table = Table::new(&inputs[1], h).map_err(|e| e.context(op))?;
        let ids = inputs[0].slice::<i32>()?;
        if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id < 0 || id as usize >= v) {
            return Err(PluginError::new(format!(
                "{op}: token id {bad} (ids[{i}]) is out of range for a vocabulary of {v}"
            )));
        }
        let out = outputs[0].slice_mut::<f32>()?;
        let failed = std::sync::Mutex::new(None);
        par_rows(ctx, out, h, MIN_CHUNK, |r, o| {
            for (i, dst) in r.zip(o.chunks_exact_mut(h)) {
                if let Err(e) = table.row(ids[i] as usize, dst) {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(e);
                    }
                    return;
                }
            }
        })?;
        match failed.into_inner() {
            Ok(Some(e)) => Err(e.context(op)),
            _ => Ok(()),
        }
    }
}

register_op!(Embedding);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rand_f32, run, Buf};

    fn ids() -> Vec<i32> {
        vec![0, 5, 2, 5, 9, 1, 3]
    }

    #[test]
    fn float_tables() {
        let (v, h) = (10usize, 67usize);
        let table = rand_f32(v * h, 11);
        let want: Vec<f32> = ids().iter().flat_map(|&i| table[i as usize * h..(i as usize + 1) * h].to_vec()).collect();
        let out = |b: Buf| {
            run::<Embedding>(&Attrs::new(), &mut [Buf::from_slice(&[7], &ids()), b]).unwrap()[0].to_vec::<f32>()
        };
        assert_eq!(out(Buf::from_slice(&[v, h], &table)), want);
        let t16: Vec<f16> = table.iter().map(|&x| f16::from_f32(x)).collect();
        let w16: Vec<f32> = want.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(out(Buf::from_slice(&[v, h], &t16)), w16);
        let tb: Vec<bf16> = table.iter().map(|&x| bf16::from_f32(x)).collect();
        let wb: Vec<f32> = want.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert_eq!(out(Buf::from_slice(&[v, h], &tb)), wb);
    }

    #[test]
    fn quantized_tables_match_dequantize_row() {
        let (v, h) = (10usize, 512usize);
        let table = rand_f32(v * h, 12);
        for dtype in DType::QUANTIZED {
            let bytes: Vec<u8> =
                table.chunks(h).flat_map(|row| quant::quantize_row_to_vec(dtype, row).unwrap()).collect();
            let rb = quant::row_bytes(dtype, h).unwrap();
            let mut ins = [Buf::from_slice(&[7], &ids()), Buf::from_bytes(TensorMeta::of(dtype, &[v, h]), &bytes)];
            let out = run::<Embedding>(&Attrs::new(), &mut ins).unwrap()[0].to_vec::<f32>();
            for (k, &id) in ids().iter().enumerate() {
                let row = &bytes[id as usize * rb..(id as usize + 1) * rb];
                let want = quant::dequantize_row_to_vec(dtype, row, h).unwrap();
                assert_eq!(&out[k * h..(k + 1) * h], &want[..], "{dtype} row {id}");
            }
        }
    }

    #[test]
    fn many_tokens_in_parallel() {
        let (t, v, h) = (300usize, 64usize, 129usize);
        let ids: Vec<i32> = (0..t as i32).map(|i| (i * 7) % v as i32).collect();
        let table = rand_f32(v * h, 13);
        let out = run::<Embedding>(&Attrs::new(), &mut [Buf::from_slice(&[t], &ids), Buf::from_slice(&[v, h], &table)])
            .unwrap()[0]
            .to_vec::<f32>();
        for (k, &id) in ids.iter().enumerate() {
            assert_eq!(&out[k * h..(k + 1) * h], &table[id as usize * h..(id as usize + 1) * h]);
        }
    }

    #[test]
    fn out_of_range_id_names_id_and_vocab() {
        let mut ins = [Buf::from_slice(&[2], &[1i32, 10]), Buf::from_slice(&[10, 4], &[0.0f32; 40])];
        let err = run::<Embedding>(&Attrs::new(), &mut ins).unwrap_err();
        assert!(err.message().contains("token id 10") && err.message().contains("vocabulary of 10"), "{err}");
        let mut ins = [Buf::from_slice(&[1], &[-3i32]), Buf::from_slice(&[10, 4], &[0.0f32; 40])];
        assert!(run::<Embedding>(&Attrs::new(), &mut ins).unwrap_err().message().contains("token id -3"));
    }

    #[test]
    fn quantized_width_must_be_whole_blocks() {
        let err = Embedding::infer(
            &[TensorMeta::of(DType::I32, &[1]), TensorMeta::of(DType::Q4_K, &[4, 100])],
            &Attrs::new(),
        )
        .unwrap_err();
        assert!(err.message().contains("blocks"), "{err}");
    }
}
