//! Tensor metadata (dtype, dims that may be symbolic at build time, strides) as it crosses the
//! ABI. The launch-time views over tensor memory are in `view`.

use crate::{dtype::DType, error::PluginError};
use abi_stable::{
    std_types::{RString, RVec},
    StableAbi,
};
use std::fmt;

/// One dimension: a number, or a named symbol (e.g. `num_tokens`) resolved at run time.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(u64),
    Sym(RString),
}

impl Dim {
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(name.into())
    }

    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(v) => Some(*v as usize),
            Dim::Sym(_) => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(v: usize) -> Self {
        Dim::Known(v as u64)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// Metadata of a tensor. `strides` are in elements; empty means contiguous row-major.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorMeta {
    pub dtype: DType,
    pub dims: RVec<Dim>,
    pub strides: RVec<i64>,
}

impl TensorMeta {
    /// A contiguous tensor with the given dims.
    pub fn new(dtype: DType, dims: impl IntoIterator<Item = Dim>) -> Self {
        TensorMeta { dtype, dims: dims.into_iter().collect(), strides: RVec::new() }
    }

    /// A contiguous tensor with known dims.
    pub fn of(dtype: DType, dims: &[usize]) -> Self {
        TensorMeta::new(dtype, dims.iter().map(|&d| Dim::from(d)))
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn dim(&self, i: usize) -> &Dim {
        &self.dims[i]
    }

    /// The concrete shape, if no dim is symbolic.
    pub fn shape(&self) -> Option<Vec<usize>> {
        self.dims.iter().map(Dim::known).collect()
    }

    /// The concrete shape or an error naming the symbolic dim.
    pub fn concrete_shape(&self) -> Result<Vec<usize>, PluginError> {
        self.shape().ok_or_else(|| PluginError::new(format!("shape {self} has unresolved symbolic dims")))
    }

    /// Number of elements, if all dims are known and their product fits a `usize`.
    pub fn numel(&self) -> Option<usize> {
        self.shape()?.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Bytes of a contiguous tensor with this shape, if known, whole blocks and no overflow.
    pub fn byte_size(&self) -> Option<usize> {
        self.dtype.bytes_for(self.numel()?)
    }

    pub fn is_contiguous(&self) -> bool {
        if self.strides.is_empty() {
            return true;
        }
        let Some(shape) = self.shape() else { return false };
        let mut expect = 1i64;
        for (d, s) in shape.iter().zip(self.strides.iter()).rev() {
            if *d != 1 && *s != expect {
                return false;
            }
            expect *= *d as i64;
        }
        true
    }

    /// Same tensor with every symbol replaced through `resolve` (unknown symbols stay).
    pub fn resolved(&self, resolve: impl Fn(&str) -> Option<usize>) -> TensorMeta {
        let dims = self
            .dims
            .iter()
            .map(|d| match d {
                Dim::Sym(s) => resolve(s.as_str()).map(Dim::from).unwrap_or_else(|| d.clone()),
                known => known.clone(),
            })
            .collect();
        TensorMeta { dtype: self.dtype, dims, strides: self.strides.clone() }
    }

    /// Replaces dims and strides in place from concrete values without allocating when the
    /// rank is unchanged (used on the hot path).
    pub fn set_shape(&mut self, shape: &[usize]) {
        if self.dims.len() != shape.len() {
            self.dims = shape.iter().map(|&d| Dim::from(d)).collect();
        } else {
            for (d, &v) in self.dims.iter_mut().zip(shape) {
                *d = Dim::from(v);
            }
        }
        self.strides.clear();
    }
}

impl fmt::Display for TensorMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_shapes() {
        let m = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(576)]);
        assert_eq!(m.shape(), None);
        assert_eq!(m.to_string(), "f32[T, 576]");
        let r = m.resolved(|s| (s == "T").then_some(5));
        assert_eq!(r.shape(), Some(vec![5, 576]));
        assert_eq!(r.byte_size(), Some(5 * 576 * 4));
        assert!(r.is_contiguous());
    }

    #[test]
    fn overflowing_sizes_are_none() {
        let huge = TensorMeta::of(DType::F32, &[usize::MAX, 2]);
        assert_eq!(huge.numel(), None);
        assert_eq!(huge.byte_size(), None);
        // The element count fits but the bytes do not.
        let wide = TensorMeta::of(DType::F32, &[usize::MAX / 2]);
        assert_eq!(wide.numel(), Some(usize::MAX / 2));
        assert_eq!(wide.byte_size(), None);
    }
}
