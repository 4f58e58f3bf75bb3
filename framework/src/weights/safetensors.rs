//! safetensors files: a header parser of our own (8-byte little-endian header length, JSON
//! header, every offset checked), a reader (the file read into memory) into a [`WeightStore`] (sharded
//! models through `model.safetensors.index.json`), and a small writer.
//!
//! Besides the standard dtypes, the reader and writer accept the GGUF block formats under
//! their ggml names (`Q8_0`, `Q4_0`, `Q4_1`, `Q4_K`, `Q6_K`, row-major blocks along the last
//! dimension): an rtllm extension for caching quantized weights.

use super::store::{Tensor, WeightFile, WeightStore};
use super::WeightError;
use rtllm_plugin_api::DType;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest header the format allows (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Dtypes the loader supports, for error messages.
pub const SUPPORTED_DTYPES: &str = "F32, F16, BF16, I32, I64, U8, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K";

/// One entry of the header.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetensorsEntry {
    pub name: String,
    /// The dtype as written (e.g. "BF16").
    pub dtype_name: String,
    /// The loadable dtype, or `None` for a known but unsupported one (F64, F8_E5M2, ...).
    pub dtype: Option<DType>,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SafetensorsHeader {
    pub metadata: BTreeMap<String, String>,
    pub tensors: Vec<SafetensorsEntry>,
}

/// Storage of a dtype name: (loadable dtype, block size, bytes per block).
fn dtype_info(name: &str) -> Option<(Option<DType>, usize, usize)> {
    let supported = |d: DType| Some((Some(d), d.block_size(), d.block_bytes()));
    match name {
        "F32" => supported(DType::F32),
        "F16" => supported(DType::F16),
        "BF16" => supported(DType::BF16),
        "I32" => supported(DType::I32),
        "I64" => supported(DType::I64),
        "U8" => supported(DType::U8),
        "Q8_0" => supported(DType::Q8_0),
        "Q4_0" => supported(DType::Q4_0),
        "Q4_1" => supported(DType::Q4_1),
        "Q4_K" => supported(DType::Q4_K),
        "Q6_K" => supported(DType::Q6_K),
        "F8_E4M3" => supported(DType::F8_E4M3),
        "I8" => supported(DType::I8),
        "F64" | "U64" => Some((None, 1, 8)),
        "U32" => Some((None, 1, 4)),
        "I16" | "U16" => Some((None, 1, 2)),
        "BOOL" | "F8_E5M2" | "F8_E8M0" => Some((None, 1, 1)),
        _ => None,
    }
}

/// The safetensors dtype name of a dtype.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        DType::U8 => "U8",
        DType::Q8_0 => "Q8_0",
        DType::Q4_0 => "Q4_0",
        DType::Q4_1 => "Q4_1",
        DType::Q4_K => "Q4_K",
        DType::Q6_K => "Q6_K",
        DType::F8_E4M3 => "F8_E4M3",
        DType::I8 => "I8",
    }
}

/// Parses and checks the header of a whole safetensors file.
pub fn parse_header(bytes: &[u8]) -> Result<SafetensorsHeader, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("file of {} bytes is shorter than the 8-byte header length", bytes.len()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    let available = bytes.len() as u64 - 8;
    if header_len > available || header_len > MAX_HEADER_BYTES {
        return Err(format!("header length {header_len} exceeds the file ({available} bytes after the length)"));
    }
    let data_start = 8 + header_len as usize;
    let json: Value =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let Value::Object(map) = json else {
        return Err("header is not a JSON object".into());
    };
    let data_len = bytes.len() - data_start;

    let mut header = SafetensorsHeader::default();
    for (name, value) in map {
        if name == "__metadata__" {
            header.metadata = parse_metadata(value)?;
            continue;
        }
        let entry = parse_entry(&name, &value, data_len).map_err(|m| format!("tensor `{name}`: {m}"))?;
        header.tensors.push(SafetensorsEntry { start: entry.start + data_start, end: entry.end + data_start, ..entry });
    }
    let mut ranges: Vec<(usize, usize, &str)> =
        header.tensors.iter().filter(|t| t.end > t.start).map(|t| (t.start, t.end, t.name.as_str())).collect();
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(format!("tensors `{}` and `{}` overlap", pair[0].2, pair[1].2));
        }
    }
    Ok(header)
}

fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err("`__metadata__` is not an object".into());
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(format!("`__metadata__.{k}` is not a string: {other}")),
        })
        .collect()
}

/// One entry, with offsets relative to the data section.
fn parse_entry(name: &str, value: &Value, data_len: usize) -> Result<SafetensorsEntry, String> {
    let obj: &Map<String, Value> = value.as_object().ok_or("entry is not an object")?;
    let dtype_name = obj.get("dtype").and_then(Value::as_str).ok_or("missing string `dtype`")?;
    let (dtype, block, block_bytes) = dtype_info(dtype_name).ok_or_else(|| format!("unknown dtype {dtype_name:?}"))?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing array `shape`")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()).ok_or_else(|| format!("bad dimension {d}")))
        .collect::<Result<Vec<usize>, String>>()?;
    let offsets = obj.get("data_offsets").and_then(Value::as_array).ok_or("missing array `data_offsets`")?;
    let [begin, end] = offsets.as_slice() else {
        return Err("`data_offsets` must have two entries".into());
    };
    let as_offset = |v: &Value| v.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or(format!("bad offset {v}"));
    let (start, end) = (as_offset(begin)?, as_offset(end)?);
    if start > end || end > data_len {
        return Err(format!("data_offsets [{start}, {end}] lie outside the data section of {data_len} bytes"));
    }
    let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    if block > 1 && shape.last().is_some_and(|last| last % block != 0) {
        return Err(format!("last dimension is not a multiple of the {dtype_name} block size {block}"));
    }
    let want = (elements % block == 0).then(|| (elements / block).checked_mul(block_bytes)).flatten();
    if want != Some(end - start) {
        return Err(format!("{} bytes do not hold shape {shape:?} of {dtype_name}", end - start));
    }
    Ok(SafetensorsEntry { name: name.to_string(), dtype_name: dtype_name.to_string(), dtype, shape, start, end })
}

/// Reads one safetensors file and adds its tensors to `store`.
pub fn load_safetensors(path: &Path, store: &mut WeightStore) -> Result<SafetensorsHeader, WeightError> {
    add_safetensors(WeightFile::read(path)?, store)
}

/// Adds the tensors of a safetensors file already in memory to `store`.
pub fn add_safetensors(map: Arc<WeightFile>, store: &mut WeightStore) -> Result<SafetensorsHeader, WeightError> {
    let path = map.path.as_path();
    let header =
        parse_header(map.bytes()).map_err(|message| WeightError::Safetensors { path: path.to_path_buf(), message })?;
    for t in &header.tensors {
        let dtype = t.dtype.ok_or_else(|| WeightError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            dtype: t.dtype_name.clone(),
            supported: SUPPORTED_DTYPES,
        })?;
        let tensor = Tensor::in_file(map.clone(), &t.name, dtype, t.shape.clone(), t.start, t.end - t.start)?;
        if store.insert(t.name.clone(), tensor).is_some() {
            return Err(WeightError::Duplicate { path: path.to_path_buf(), tensor: t.name.clone() });
        }
    }
    Ok(header)
}

/// An index's `weight_map`: tensor name → shard file name.
pub type WeightMap = BTreeMap<String, String>;

/// The weight files of an HF directory: the shards named by `model.safetensors.index.json`,
/// else every `*.safetensors` file (sorted). Returns the files and the index's weight map.
pub fn safetensors_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>), WeightError> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let text = crate::input_file::read_regular_string(&index_path, crate::input_file::TEXT_LIMIT)
            .map_err(|e| WeightError::io(&index_path, e))?;
        let bad = |message: String| WeightError::Safetensors { path: index_path.clone(), message };
        let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map =
            json.get("weight_map").and_then(Value::as_object).ok_or_else(|| bad("missing `weight_map`".into()))?;
        let mut weight_map = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("`weight_map.{tensor}` is not a file name")))?;
            if file.contains(['/', '\\']) || file == ".." {
                return Err(bad(format!("`weight_map.{tensor}` names a file outside the directory: {file:?}")));
            }
            weight_map.insert(tensor.clone(), file.to_string());
        }
        let files: BTreeSet<&String> = weight_map.values().collect();
        return Ok((files.into_iter().map(|f| dir.join(f)).collect(), Some(weight_map)));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| WeightError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| WeightError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "safetensors") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok((files, None))
}

/// A tensor to write: name, dtype, shape (HF order) and its bytes.
pub type TensorToWrite<'a> = (&'a str, DType, &'a [usize], &'a [u8]);

/// Serializes tensors (in the given order, 8-byte aligned data) and optional metadata.
pub fn safetensors_bytes(
    tensors: &[TensorToWrite<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| e.to_string())?);
    }
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        let elements: usize = shape.iter().product();
        if dtype.bytes_for(elements) != Some(data.len()) {
            return Err(format!("tensor `{name}`: {} bytes do not hold {shape:?} of {dtype}", data.len()));
        }
        if header.contains_key(*name) {
            return Err(format!("tensor `{name}` given twice"));
        }
        let entry = serde_json::json!({
            "dtype": dtype_name(*dtype), "shape": shape, "data_offsets": [offset, offset + data.len()],
        });
        header.insert(name.to_string(), entry);
        offset += data.len();
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).map_err(|e| e.to_string())?;
    while (8 + json.len()) % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Writes a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorToWrite<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightError> {
    let bytes = safetensors_bytes(tensors, metadata)
        .map_err(|message| WeightError::Safetensors { path: path.into(), message })?;
    std::fs::write(path, bytes).map_err(|e| WeightError::io(path, e))
}

#[cfg(test)]
mod tests;
