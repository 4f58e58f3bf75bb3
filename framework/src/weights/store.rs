//! `WeightStore`: named tensors (dtype, HF-order shape, bytes backed by a weight file read into
//! memory or by owned memory), lookup with "did you mean" suggestions, and dequantization helpers.

use super::fill::FillRule;
use super::WeightError;
use crate::engine::AlignedBuf;
use crate::input_file;
use rtllm_plugin_api::{quant, DType, TensorMeta};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A weight file read into memory (see `crate::input_file` for why it is read rather than
/// mapped), shared by the tensors that live in it. The buffer is 64-byte aligned, so a tensor
/// at an aligned offset is aligned for any element type and SIMD loads.
pub struct WeightFile {
    pub path: PathBuf,
    buf: AlignedBuf,
}

impl WeightFile {
    /// Reads a regular file whole; a file that changes size while it is read is an error.
    pub fn read(path: &Path) -> Result<Arc<WeightFile>, WeightError> {
        let io = |e| WeightError::io(path, e);
        let (mut file, size) = input_file::open_regular(path).map_err(io)?;
        let len = usize::try_from(size).map_err(|_| io(std::io::Error::other("file too large")))?;
        // Zeroed lazily (calloc): reading the file into it is the only pass over the pages.
        let mut buf = AlignedBuf::try_zeroed(len).ok_or_else(|| {
            io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("no memory to read {len} bytes")))
        })?;
        input_file::read_exactly(&mut file, buf.as_bytes_mut()).map_err(io)?;
        Ok(Arc::new(WeightFile { path: path.to_path_buf(), buf }))
    }

    /// A weight file over bytes already in memory (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Arc<WeightFile> {
        Arc::new(WeightFile { path: path.to_path_buf(), buf: AlignedBuf::from_bytes(bytes) })
    }

    pub fn bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }
}

impl fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WeightFile({}, {} bytes)", self.path.display(), self.buf.len())
    }
}

/// Where a tensor's bytes live.
#[derive(Clone, Debug)]
pub enum TensorData {
    /// `len` bytes at `offset` of a weight file.
    File {
        file: Arc<WeightFile>,
        offset: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
    /// Computed from a rule (dummy weights): the host bytes are made when first asked for, and
    /// a GPU engine fills its copy on the device from the rule instead.
    Generated(Arc<Generated>),
}

/// A generated tensor's rule and, once asked for, its host bytes.
#[derive(Debug)]
pub struct Generated {
    pub rule: FillRule,
    bytes: OnceLock<Box<[u8]>>,
}

/// One weight: dtype, shape in HF/PyTorch order (`[out, in]` for a linear weight) and data.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// A tensor over a range of a weight file; checks the range and that the byte count
    /// matches the dtype and shape.
    pub fn in_file(
        file: Arc<WeightFile>,
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        offset: usize,
        len: usize,
    ) -> Result<Tensor, WeightError> {
        let in_file = offset.checked_add(len).is_some_and(|end| end <= file.bytes().len());
        if !in_file {
            return Err(WeightError::tensor(&file.path, name, format!("bytes {offset}+{len} lie outside the file")));
        }
        check_size(dtype, &shape, len).map_err(|m| WeightError::tensor(&file.path, name, m))?;
        Ok(Tensor { dtype, shape, data: TensorData::File { file, offset, len } })
    }

    /// A tensor over owned bytes; checks the byte count matches the dtype and shape.
    pub fn owned(name: &str, dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Tensor, WeightError> {
        check_size(dtype, &shape, bytes.len()).map_err(|m| WeightError::tensor("<memory>", name, m))?;
        Ok(Tensor { dtype, shape, data: TensorData::Owned(bytes.into()) })
    }

    /// A tensor of `dtype` (f32, bf16, f16, or f8_e4m3 codes) whose elements `rule` computes on
    /// demand.
    pub fn generated(name: &str, dtype: DType, shape: Vec<usize>, rule: FillRule) -> Result<Tensor, WeightError> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16 | DType::F8_E4M3) {
            return Err(WeightError::tensor(
                "<generated>",
                name,
                format!("generated weights are f32, bf16, f16 or f8_e4m3, not {dtype}"),
            ));
        }
        let data = TensorData::Generated(Arc::new(Generated { rule, bytes: OnceLock::new() }));
        Ok(Tensor { dtype, shape, data })
    }

    /// The fill rule of a generated tensor.
    pub fn fill_rule(&self) -> Option<FillRule> {
        match &self.data {
            TensorData::Generated(g) => Some(g.rule),
            _ => None,
        }
    }

    /// The byte count (without making a generated tensor's bytes).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::File { len, .. } => *len,
            TensorData::Owned(b) => b.len(),
            TensorData::Generated(_) => self.dtype.bytes_for(self.num_elements()).unwrap_or(0),
        }
    }

    /// An f32 tensor from values.
    pub fn from_f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Result<Tensor, WeightError> {
        Tensor::owned(name, DType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The raw little-endian bytes (block-quantized layout for quantized dtypes).
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::File { file, offset, len } => &file.bytes()[*offset..*offset + *len],
            TensorData::Owned(b) => b,
            TensorData::Generated(g) => g.bytes.get_or_init(|| {
                // The dtype was checked when the tensor was made.
                g.rule.generate(self.dtype, self.num_elements()).unwrap_or_default().into_boxed_slice()
            }),
        }
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn meta(&self) -> TensorMeta {
        TensorMeta::of(self.dtype, &self.shape)
    }

    /// All elements as f32 (dequantizing block formats bit-exactly as ggml does).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, WeightError> {
        let mut out = vec![0f32; self.num_elements()];
        let convert =
            |source| WeightError::Convert { tensor: name.to_string(), from: self.dtype, to: DType::F32, source };
        match self.dtype {
            DType::I32 | DType::I64 | DType::U8 | DType::I8 => {
                return Err(convert(rtllm_plugin_api::PluginError::new("integer tensors are not converted")))
            }
            DType::F8_E4M3 => {
                return Err(convert(rtllm_plugin_api::PluginError::new(
                    "FP8 values mean something only with their scale tensors; they are never converted alone",
                )))
            }
            _ => quant::dequantize_row(self.dtype, self.bytes(), &mut out).map_err(convert)?,
        }
        Ok(out)
    }

    /// The data converted to `dtype` (a float type or a GGUF block format), row by row along
    /// the last dimension. Returns the bytes unchanged when the dtype already matches.
    pub fn to_dtype_bytes(&self, name: &str, dtype: DType) -> Result<Vec<u8>, WeightError> {
        if dtype == self.dtype {
            return Ok(self.bytes().to_vec());
        }
        let values = self.to_f32(name)?;
        let convert = |source| WeightError::Convert { tensor: name.to_string(), from: self.dtype, to: dtype, source };
        let row = self.shape.last().copied().unwrap_or(1).max(1);
        let row_bytes = quant::row_bytes(dtype, row).map_err(convert)?;
        let mut out = vec![0u8; row_bytes * (values.len() / row)];
        for (src, dst) in values.chunks_exact(row).zip(out.chunks_exact_mut(row_bytes)) {
            quant::quantize_row(dtype, src, dst).map_err(convert)?;
        }
        Ok(out)
    }
}

/// Checks `len` bytes hold exactly `shape` of `dtype`, with whole blocks per row.
fn check_size(dtype: DType, shape: &[usize], len: usize) -> Result<(), String> {
    let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    if dtype.is_quantized() {
        let row = shape.last().copied().unwrap_or(1);
        if row % dtype.block_size() != 0 {
            return Err(format!(
                "last dimension {row} is not a multiple of the {dtype} block size {}",
                dtype.block_size()
            ));
        }
    }
    let want = dtype.bytes_for(elements).ok_or_else(|| format!("{elements} elements are not whole {dtype} blocks"))?;
    if want != len {
        return Err(format!("shape {shape:?} of {dtype} needs {want} bytes, found {len}"));
    }
    Ok(())
}

/// Named weights, and how activations are quantized for their FP8 linears (if any).
#[derive(Clone, Debug, Default)]
pub struct WeightStore {
    tensors: BTreeMap<String, Tensor>,
    fp8_activation: Option<rtllm_plugin_api::shapes::fp8::Fp8Activation>,
    /// The checkpoint declares an FP8 KV cache (its scales are in the store).
    kv_cache_fp8: bool,
}

impl WeightStore {
    pub fn new() -> Self {
        WeightStore::default()
    }

    /// Adds a tensor; returns the one it replaced, if any.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// How the FP8 linears' activations are quantized (set by the FP8 checkpoint loader).
    pub fn fp8_activation(&self) -> Option<rtllm_plugin_api::shapes::fp8::Fp8Activation> {
        self.fp8_activation
    }

    pub fn set_fp8_activation(&mut self, activation: Option<rtllm_plugin_api::shapes::fp8::Fp8Activation>) {
        self.fp8_activation = activation;
    }

    /// Whether the checkpoint declares an FP8 KV cache (set by the FP8 checkpoint loader).
    pub fn kv_cache_fp8(&self) -> bool {
        self.kv_cache_fp8
    }

    pub fn set_kv_cache_fp8(&mut self, on: bool) {
        self.kv_cache_fp8 = on;
    }

    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor, or a "missing weight … did you mean" error.
    pub fn require(&self, name: &str) -> Result<&Tensor, WeightError> {
        self.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            suggestions: self.nearest_names(name, 3).into_iter().map(String::from).collect(),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total bytes of all tensors.
    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(Tensor::byte_len).sum()
    }

    pub fn meta(&self, name: &str) -> Result<TensorMeta, WeightError> {
        Ok(self.require(name)?.meta())
    }

    /// The tensor's elements as f32.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, WeightError> {
        self.require(name)?.to_f32(name)
    }

    /// The tensor's data converted to `dtype` (see [`Tensor::to_dtype_bytes`]).
    pub fn to_dtype(&self, name: &str, dtype: DType) -> Result<Vec<u8>, WeightError> {
        self.require(name)?.to_dtype_bytes(name, dtype)
    }

    /// Up to `k` stored names closest to `name` (edit distance; ties by name).
    pub fn nearest_names(&self, name: &str, k: usize) -> Vec<&str> {
        let mut scored: Vec<(usize, &str)> = self.names().map(|n| (edit_distance(name, n), n)).collect();
        scored.sort();
        let limit = name.len().max(4);
        scored.into_iter().filter(|(d, _)| *d <= limit).take(k).map(|(_, n)| n).collect()
    }
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> WeightStore {
        let mut s = WeightStore::new();
        for name in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"] {
            s.insert(name, Tensor::from_f32(name, vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap());
        }
        s
    }

    #[test]
    fn missing_weight_suggests_near_names() {
        let s = store();
        let err = s.require("model.layers.0.self_attn.q_prj.weight").unwrap_err().to_string();
        assert!(err.starts_with("missing weight `model.layers.0.self_attn.q_prj.weight`; did you mean `model.layers.0.self_attn.q_proj.weight`"), "{err}");
        assert_eq!(s.nearest_names("model.norm.wieght", 1), vec!["model.norm.weight"]);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn converts_between_dtypes() {
        let s = store();
        assert_eq!(s.to_f32("model.norm.weight").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let h = s.to_dtype("model.norm.weight", DType::F16).unwrap();
        assert_eq!(h.len(), 8);
        let t = Tensor::owned("x", DType::F16, vec![2, 2], h).unwrap();
        assert_eq!(t.to_f32("x").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let err = s.to_dtype("model.norm.weight", DType::Q8_0).unwrap_err().to_string();
        assert!(err.contains("model.norm.weight") && err.contains("q8_0"), "{err}");
        assert_eq!(s.meta("model.norm.weight").unwrap(), TensorMeta::of(DType::F32, &[2, 2]));
    }

    #[test]
    fn sizes_are_checked() {
        let err = Tensor::owned("w", DType::F32, vec![2, 3], vec![0; 20]).unwrap_err().to_string();
        assert!(err.contains("`w`") && err.contains("needs 24 bytes, found 20"), "{err}");
        let err = Tensor::owned("q", DType::Q4_0, vec![2, 48], vec![0; 54]).unwrap_err().to_string();
        assert!(err.contains("not a multiple of the q4_0 block size 32"), "{err}");
    }
}
