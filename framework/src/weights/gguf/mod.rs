//! GGUF (v2/v3) files: the header, typed metadata, tensor infos, alignment and data offsets,
//! parsed from a byte slice (normally a memory map) with every length, count and offset
//! checked against the input size before use. [`model`] maps a parsed file to a
//! `ModelConfig` and a `WeightStore` (HF names and shapes), [`tokenizer`] to a
//! `TokenizerSpec`.

mod metadata;
pub mod model;
mod reader;
pub mod tokenizer;

#[cfg(test)]
mod tests;

pub use metadata::{value_type, GgufMetadata, GgufValue};

use reader::Reader;
use rtllm_plugin_api::DType;
use std::collections::HashSet;
use thiserror::Error;

/// "GGUF" as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has.
pub const MAX_DIMS: usize = 4;

/// A malformed or unsupported GGUF file; messages say what was being read and at which byte.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GgufError {
    #[error("not a GGUF file (magic {found:#010x}, expected \"GGUF\")")]
    BadMagic { found: u32 },
    #[error("unsupported GGUF version {0} (supported: 2 and 3{hint})", hint = version_hint(*.0))]
    UnsupportedVersion(u32),
    #[error("truncated at byte {offset}: {what} needs {needed} bytes, {available} left")]
    Truncated { what: String, offset: u64, needed: u64, available: u64 },
    #[error("at byte {offset}: {what} is {count}, but at most {max} fit in the rest of the file")]
    BadCount { what: String, offset: u64, count: u64, max: u64 },
    #[error("at byte {offset}: invalid {what}")]
    Invalid { what: String, offset: u64 },
    #[error("metadata `{key}` should be {expected}, found {found}")]
    WrongType { key: String, expected: String, found: String },
    #[error("tensor `{tensor}`: {message}")]
    Tensor { tensor: String, message: String },
    #[error("metadata `{key}`: {message}")]
    Metadata { key: String, message: String },
}

fn version_hint(v: u32) -> &'static str {
    match v {
        1 => "; re-convert this v1 file with a current llama.cpp",
        v if v.swap_bytes() <= 3 => "; this looks like a big-endian GGUF file",
        _ => "",
    }
}

/// A ggml tensor type: its code and storage geometry (block size, bytes per block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType {
    pub code: u32,
    pub name: &'static str,
    pub block_size: u64,
    pub type_size: u64,
}

/// Every ggml type with a fixed geometry (ggml.c `type_traits`). Only some of them load
/// (see [`GgmlType::dtype`]); the rest are known so that files holding them still parse and
/// the error can name the type.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    pub fn from_code(code: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().find(|t| t.0 == code).map(|&(code, name, block_size, type_size)| GgmlType {
            code,
            name,
            block_size,
            type_size,
        })
    }

    /// The ggml type code for a dtype this crate stores.
    pub fn code_of(dtype: DType) -> Option<u32> {
        Some(match dtype {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q8_0 => 8,
            DType::Q4_K => 12,
            DType::Q6_K => 14,
            DType::I8 => 24,
            DType::I32 => 26,
            DType::I64 => 27,
            DType::BF16 => 30,
            // GGUF has no FP8 or u8 tensor type.
            DType::U8 | DType::F8_E4M3 => return None,
        })
    }

    /// The dtype this type loads as, or `None` when it is not supported.
    pub fn dtype(self) -> Option<DType> {
        DType::ALL.into_iter().find(|d| GgmlType::code_of(*d) == Some(self.code))
    }
}

/// One tensor's entry in the tensor-info section.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order: `dims[0]` (ne0) is the fastest-varying dimension.
    pub dims: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in PyTorch/HF order (slowest dimension first): the reverse of `dims`.
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The dtype of the data, or an error naming the tensor and its type.
    pub fn dtype(&self) -> Result<DType, GgufError> {
        self.ggml_type.dtype().ok_or_else(|| GgufError::Tensor {
            tensor: self.name.clone(),
            message: format!(
                "unsupported tensor type {} (ggml type {}); supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K",
                self.ggml_type.name, self.ggml_type.code
            ),
        })
    }
}

/// A parsed GGUF file (no tensor data is copied: offsets point into the input).
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: GgufMetadata,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute byte offset of the tensor data section.
    pub data_offset: u64,
}

impl GgufFile {
    /// Parses the header, metadata and tensor infos of `bytes` (the whole file) and checks
    /// every tensor's data lies inside it.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        // The smallest tensor info: name length (8), n_dims (4), one dim (8), type (4), offset (8).
        let n_tensors = r.count("tensor count", 32)?;
        // The smallest key/value: key length (8), value type (4), one byte of value.
        let n_kv = r.count("metadata key/value count", 13)?;

        let mut metadata = GgufMetadata::default();
        for i in 0..n_kv {
            let key = r.string(&format!("key of metadata entry {i}"))?;
            let ty = r.u32(&format!("value type of `{key}`"))?;
            let value = GgufValue::read(&mut r, ty, &key, 0)?;
            if metadata.entries.insert(key.clone(), value).is_some() {
                return Err(GgufError::Invalid {
                    what: format!("duplicate metadata key `{key}`"),
                    offset: r.pos() as u64,
                });
            }
        }
        let alignment = match metadata.u64("general.alignment")? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
            Some(a) => {
                return Err(GgufError::Metadata {
                    key: "general.alignment".into(),
                    message: format!("{a} is not a power of two (up to 2^20)"),
                })
            }
        };

        let mut infos = Vec::with_capacity(n_tensors);
        let mut seen = HashSet::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let (info, rel_offset) = read_tensor_info(&mut r, i)?;
            if !seen.insert(info.name.clone()) {
                return Err(GgufError::Tensor {
                    tensor: info.name,
                    message: "appears twice in the tensor infos".into(),
                });
            }
            infos.push((info, rel_offset));
        }

        let data_offset = (r.pos() as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        for (info, rel_offset) in infos.iter_mut() {
            let tensor_err = |message: String| GgufError::Tensor { tensor: info.name.clone(), message };
            if *rel_offset % alignment != 0 {
                return Err(tensor_err(format!(
                    "data offset {rel_offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_offset.checked_add(*rel_offset);
            let end = start.and_then(|s| s.checked_add(info.n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => info.offset = start,
                _ => {
                    return Err(tensor_err(format!(
                        "data ({} bytes at offset {rel_offset} of the data section at byte {data_offset}) runs past the end of the file ({file_len} bytes)",
                        info.n_bytes
                    )))
                }
            }
        }
        Ok(GgufFile { version, metadata, tensors: infos.into_iter().map(|(i, _)| i).collect(), alignment, data_offset })
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Result<Option<&str>, GgufError> {
        self.metadata.str("general.architecture")
    }
}

/// Reads one tensor info; returns it with its offset relative to the data section (the
/// absolute `offset` is filled in once the data section's start is known).
fn read_tensor_info(r: &mut Reader<'_>, index: usize) -> Result<(GgufTensorInfo, u64), GgufError> {
    let name = r.string(&format!("name of tensor {index}"))?;
    let at = r.pos() as u64;
    let n_dims = r.u32(&format!("dimension count of tensor `{name}`"))? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::Invalid {
            what: format!("dimension count {n_dims} of tensor `{name}` (1..=4)"),
            offset: at,
        });
    }
    let mut dims = Vec::with_capacity(n_dims);
    for d in 0..n_dims {
        dims.push(r.u64(&format!("dimension {d} of tensor `{name}`"))?);
    }
    let at = r.pos() as u64;
    let code = r.u32(&format!("type of tensor `{name}`"))?;
    let ggml_type = GgmlType::from_code(code)
        .ok_or_else(|| GgufError::Invalid { what: format!("ggml type {code} of tensor `{name}`"), offset: at })?;
    let rel_offset = r.u64(&format!("data offset of tensor `{name}`"))?;

    let tensor_err = |message: String| GgufError::Tensor { tensor: name.clone(), message };
    if dims[0] % ggml_type.block_size != 0 {
        return Err(tensor_err(format!(
            "first dimension {} is not a multiple of the {} block size {}",
            dims[0], ggml_type.name, ggml_type.block_size
        )));
    }
    let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let n_bytes = elements
        .and_then(|n| (n / ggml_type.block_size).checked_mul(ggml_type.type_size))
        .filter(|&b| usize::try_from(b).is_ok())
        .ok_or_else(|| tensor_err(format!("dimensions {dims:?} overflow")))?;
    Ok((GgufTensorInfo { name, ggml_type, dims, offset: 0, n_bytes }, rel_offset))
}
