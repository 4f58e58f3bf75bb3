//! A small GGUF (v3) writer: metadata of any GGUF value type and tensors in any ggml type,
//! aligned as llama.cpp writes them. Tests build synthetic model files with it; it is public
//! so other crates' tests (and tools that export weights) can use it too.

use super::gguf::{GgmlType, GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use rtllm_plugin_api::DType;
use std::io;
use std::path::Path;

struct PendingTensor {
    name: String,
    ggml_type: u32,
    dims: Vec<u64>,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory.
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter { version: 3, alignment: DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// The version written in the header (2 and 3 share the layout).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets the data alignment and writes `general.alignment` (must be a power of two).
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = alignment.into();
        self.kv("general.alignment", GgufValue::U32(alignment))
    }

    pub fn kv(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn kv_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.kv(key, GgufValue::String(value.to_string()))
    }

    pub fn kv_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.kv(key, GgufValue::U32(value))
    }

    pub fn kv_f32(&mut self, key: &str, value: f32) -> &mut Self {
        self.kv(key, GgufValue::F32(value))
    }

    pub fn kv_strs(&mut self, key: &str, values: &[&str]) -> &mut Self {
        self.kv(key, GgufValue::Array(values.iter().map(|s| GgufValue::String(s.to_string())).collect()))
    }

    /// Adds a tensor given its HF-order shape (`[out, in]`); `data` is in `dtype`'s layout.
    pub fn tensor(&mut self, name: &str, dtype: DType, hf_shape: &[usize], data: Vec<u8>) -> Result<&mut Self, String> {
        let code = GgmlType::code_of(dtype).ok_or_else(|| format!("{dtype} has no ggml type"))?;
        let elements: usize = hf_shape.iter().product();
        if dtype.bytes_for(elements) != Some(data.len()) {
            return Err(format!("tensor `{name}`: {} bytes do not hold {hf_shape:?} of {dtype}", data.len()));
        }
        let dims = hf_shape.iter().rev().map(|&d| d as u64).collect();
        Ok(self.raw_tensor(name, code, dims, data))
    }

    /// Adds an f32 tensor (HF-order shape).
    pub fn tensor_f32(&mut self, name: &str, hf_shape: &[usize], values: &[f32]) -> Result<&mut Self, String> {
        self.tensor(name, DType::F32, hf_shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds a tensor with a raw ggml type code and ggml-order dims, unchecked (for tests of
    /// malformed or unsupported files).
    pub fn raw_tensor(&mut self, name: &str, ggml_type: u32, dims: Vec<u64>, data: Vec<u8>) -> &mut Self {
        self.tensors.push(PendingTensor { name: name.to_string(), ggml_type, dims, data });
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(GGUF_MAGIC.to_le_bytes());
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend(value.type_code().to_le_bytes());
            write_value(&mut out, value);
        }
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = align(offset + t.data.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        for t in &self.tensors {
            out.extend(&t.data);
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
        GgufValue::Array(items) => {
            // An empty array's element type is not recoverable; write it as u8.
            let elem = items.first().map_or(0, GgufValue::type_code);
            out.extend(elem.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
    }
}
