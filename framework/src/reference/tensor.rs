//! A host tensor for checks and references: a concrete contiguous shape, a dtype and 8-byte
//! aligned bytes, with conversions to and from f32 (dequantizing GGUF blocks row by row).

use rtllm_plugin_api::{quant, DType, Element, InputView, OutputView, TensorMeta};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("launch view: {0}")]
    View(String),
    #[error("tensor {meta} has symbolic dims; a concrete shape is needed")]
    Symbolic { meta: String },
    #[error("{dtype}{shape:?} is not a whole number of {block}-element blocks per row")]
    PartialBlocks { dtype: DType, shape: Vec<usize>, block: usize },
    #[error("tensor of {len} elements cannot hold {dtype}{shape:?}")]
    Length { dtype: DType, shape: Vec<usize>, len: usize },
    #[error("expected {expected} tensor, got {got}")]
    Dtype { expected: String, got: DType },
    #[error("{0}")]
    Quant(String),
}

/// An owned, contiguous host tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// 8-byte words so every element type is aligned; `bytes()` is the exact byte view.
    words: Vec<u64>,
    nbytes: usize,
}

impl HostTensor {
    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<HostTensor, TensorError> {
        let numel: usize = shape.iter().product();
        let nbytes = dtype.bytes_for(numel).ok_or_else(|| TensorError::PartialBlocks {
            dtype,
            shape: shape.to_vec(),
            block: dtype.block_size(),
        })?;
        Ok(HostTensor { dtype, shape: shape.to_vec(), words: vec![0; nbytes.div_ceil(8)], nbytes })
    }

    /// A zero-filled tensor for a concrete meta.
    pub fn for_meta(meta: &TensorMeta) -> Result<HostTensor, TensorError> {
        let shape = meta.shape().ok_or_else(|| TensorError::Symbolic { meta: meta.to_string() })?;
        HostTensor::zeros(meta.dtype, &shape)
    }

    /// A tensor of `dtype` holding `values` converted (rounded or quantized by rows).
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Result<HostTensor, TensorError> {
        let mut t = HostTensor::zeros(dtype, shape)?;
        t.set_f32(values)?;
        Ok(t)
    }

    /// An i32 tensor.
    pub fn from_i32(shape: &[usize], values: &[i32]) -> Result<HostTensor, TensorError> {
        let mut t = HostTensor::zeros(DType::I32, shape)?;
        let dst = t.as_mut_slice::<i32>()?;
        if dst.len() != values.len() {
            return Err(TensorError::Length { dtype: DType::I32, shape: shape.to_vec(), len: values.len() });
        }
        dst.copy_from_slice(values);
        Ok(t)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn meta(&self) -> TensorMeta {
        TensorMeta::of(self.dtype, &self.shape)
    }

    /// Length of the last dim (1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `nbytes` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.nbytes) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.nbytes) }
    }

    /// The elements as `T` (which must be this tensor's dtype).
    pub fn as_slice<T: Element>(&self) -> Result<&[T], TensorError> {
        self.check::<T>()?;
        // SAFETY: dtype matches `T`, storage is 8-byte aligned and holds numel elements.
        Ok(unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const T, self.numel()) })
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T], TensorError> {
        self.check::<T>()?;
        let n = self.numel();
        // SAFETY: as in `as_slice`.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut T, n) })
    }

    fn check<T: Element>(&self) -> Result<(), TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::Dtype { expected: T::DTYPE.to_string(), got: self.dtype });
        }
        Ok(())
    }

    /// The values as f32: floats converted, ints cast, GGUF blocks dequantized row by row.
    pub fn to_f32(&self) -> Result<Vec<f32>, TensorError> {
        match self.dtype {
            DType::I32 => Ok(self.as_slice::<i32>()?.iter().map(|&v| v as f32).collect()),
            DType::I64 => Ok(self.as_slice::<i64>()?.iter().map(|&v| v as f32).collect()),
            DType::U8 => Ok(self.bytes().iter().map(|&v| v as f32).collect()),
            dtype => {
                let row = self.row_len();
                let mut out = vec![0f32; self.numel()];
                if row == 0 {
                    return Ok(out);
                }
                let row_bytes = quant::row_bytes(dtype, row).map_err(|e| TensorError::Quant(e.to_string()))?;
                for (dst, src) in out.chunks_mut(row).zip(self.bytes().chunks(row_bytes)) {
                    quant::dequantize_row(dtype, src, dst).map_err(|e| TensorError::Quant(e.to_string()))?;
                }
                Ok(out)
            }
        }
    }

    /// The values as f64 (for comparisons).
    pub fn to_f64(&self) -> Result<Vec<f64>, TensorError> {
        match self.dtype {
            DType::I64 => Ok(self.as_slice::<i64>()?.iter().map(|&v| v as f64).collect()),
            DType::I32 => Ok(self.as_slice::<i32>()?.iter().map(|&v| v as f64).collect()),
            _ => Ok(self.to_f32()?.into_iter().map(f64::from).collect()),
        }
    }

    /// Overwrites the values from f32 (rounded to f16/bf16, quantized by rows, cast to ints).
    pub fn set_f32(&mut self, values: &[f32]) -> Result<(), TensorError> {
        if values.len() != self.numel() {
            return Err(TensorError::Length { dtype: self.dtype, shape: self.shape.clone(), len: values.len() });
        }
        match self.dtype {
            DType::I32 => self.as_mut_slice::<i32>()?.iter_mut().zip(values).for_each(|(d, &v)| *d = v as i32),
            DType::I64 => self.as_mut_slice::<i64>()?.iter_mut().zip(values).for_each(|(d, &v)| *d = v as i64),
            DType::U8 => self.bytes_mut().iter_mut().zip(values).for_each(|(d, &v)| *d = v as u8),
            dtype => {
                let row = self.row_len();
                if row == 0 {
                    return Ok(());
                }
                let row_bytes = quant::row_bytes(dtype, row).map_err(|e| TensorError::Quant(e.to_string()))?;
                let rows: Vec<&[f32]> = values.chunks(row).collect();
                for (dst, src) in self.bytes_mut().chunks_mut(row_bytes).zip(rows) {
                    quant::quantize_row(dtype, src, dst).map_err(|e| TensorError::Quant(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// A read-only launch input viewing this tensor's memory.
    pub fn input(&self) -> Result<InputView<'_>, TensorError> {
        InputView::from_bytes(self.meta(), self.bytes()).map_err(|e| TensorError::View(e.to_string()))
    }

    /// A launch input the op writes in place, viewing this tensor's memory.
    pub fn input_in_place(&mut self) -> Result<InputView<'_>, TensorError> {
        let meta = self.meta();
        InputView::from_bytes_mut(meta, self.bytes_mut()).map_err(|e| TensorError::View(e.to_string()))
    }

    /// A launch output viewing this tensor's memory.
    pub fn output(&mut self) -> Result<OutputView<'_>, TensorError> {
        let meta = self.meta();
        OutputView::from_bytes(meta, self.bytes_mut()).map_err(|e| TensorError::View(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let t = HostTensor::from_f32(dtype, &[2, 32], &v).unwrap();
            assert_eq!(t.to_f32().unwrap(), v, "{dtype}");
        }
        let q = HostTensor::from_f32(DType::Q8_0, &[2, 32], &v).unwrap();
        let back = q.to_f32().unwrap();
        assert!(back.iter().zip(&v).all(|(a, b)| (a - b).abs() < 0.05));
        assert!(HostTensor::zeros(DType::Q4_K, &[3, 100]).is_err());
        let i = HostTensor::from_i32(&[3], &[1, -2, 3]).unwrap();
        assert_eq!(i.to_f64().unwrap(), vec![1.0, -2.0, 3.0]);
        assert!(i.as_slice::<f32>().is_err());
    }
}
