//! The serde form of an engine's plan (`plan.json`): tensor metas, attributes, value sources,
//! nodes with their recorded providers, limits and the memory plan summary, plus the
//! conversions between these records and the in-memory graph types.

use crate::engine::{EngineLimits, ProviderInfo, ValueSource};
use rtllm_models::ModelConfig;
use rtllm_plugin_api::{AttrValue, Attrs, DType, DeviceKind, Dim, TensorMeta};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The plan format version; a reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;

/// One dim: a number or a symbol name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DimRecord {
    Known(u64),
    Sym(String),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetaRecord {
    pub dtype: String,
    pub dims: Vec<DimRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<i64>,
}

impl MetaRecord {
    pub fn from_meta(m: &TensorMeta) -> MetaRecord {
        let dims = m
            .dims
            .iter()
            .map(|d| match d {
                Dim::Known(v) => DimRecord::Known(*v),
                Dim::Sym(s) => DimRecord::Sym(s.to_string()),
            })
            .collect();
        MetaRecord { dtype: m.dtype.name().to_string(), dims, strides: m.strides.to_vec() }
    }

    pub fn to_meta(&self) -> Result<TensorMeta, String> {
        let dtype = parse_dtype(&self.dtype)?;
        let dims = self
            .dims
            .iter()
            .map(|d| match d {
                DimRecord::Known(v) => Dim::Known(*v),
                DimRecord::Sym(s) => Dim::sym(s),
            })
            .collect();
        Ok(TensorMeta { dtype, dims, strides: self.strides.iter().copied().collect() })
    }
}

pub fn parse_dtype(name: &str) -> Result<DType, String> {
    DType::parse(name).ok_or_else(|| format!("unknown dtype '{name}'"))
}

/// One attribute value, tagged by kind.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum AttrRecord {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
}

pub fn attrs_to_records(attrs: &Attrs) -> Vec<(String, AttrRecord)> {
    attrs
        .iter()
        .map(|(k, v)| {
            let r = match v {
                AttrValue::Int(x) => AttrRecord::Int(*x),
                AttrValue::Float(x) => AttrRecord::Float(*x),
                AttrValue::Bool(x) => AttrRecord::Bool(*x),
                AttrValue::Str(x) => AttrRecord::Str(x.to_string()),
                AttrValue::Ints(x) => AttrRecord::Ints(x.to_vec()),
            };
            (k.to_string(), r)
        })
        .collect()
}

pub fn records_to_attrs(records: &[(String, AttrRecord)]) -> Attrs {
    let mut attrs = Attrs::new();
    for (k, r) in records {
        let v = match r {
            AttrRecord::Int(x) => AttrValue::Int(*x),
            AttrRecord::Float(x) => AttrValue::Float(*x),
            AttrRecord::Bool(x) => AttrValue::Bool(*x),
            AttrRecord::Str(x) => AttrValue::Str(x.as_str().into()),
            AttrRecord::Ints(x) => AttrValue::Ints(x.iter().copied().collect()),
        };
        attrs.set(k, v);
    }
    attrs
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceRecord {
    Input { name: String },
    Weight { name: String, dtype: String },
    Node { node: usize, index: usize },
}

impl SourceRecord {
    pub fn from_source(s: &ValueSource) -> SourceRecord {
        match s {
            ValueSource::Input(name) => SourceRecord::Input { name: name.clone() },
            ValueSource::Weight { name, dtype } => {
                SourceRecord::Weight { name: name.clone(), dtype: dtype.name().into() }
            }
            ValueSource::Node { node, index } => SourceRecord::Node { node: *node, index: *index },
        }
    }

    pub fn to_source(&self) -> Result<ValueSource, String> {
        Ok(match self {
            SourceRecord::Input { name } => ValueSource::Input(name.clone()),
            SourceRecord::Weight { name, dtype } => {
                ValueSource::Weight { name: name.clone(), dtype: parse_dtype(dtype)? }
            }
            SourceRecord::Node { node, index } => ValueSource::Node { node: *node, index: *index },
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValueRecord {
    pub meta: MetaRecord,
    pub source: SourceRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderRecord {
    pub plugin: String,
    pub plugin_version: String,
    pub op_version: u32,
    pub file: PathBuf,
}

impl From<&ProviderInfo> for ProviderRecord {
    fn from(p: &ProviderInfo) -> Self {
        ProviderRecord {
            plugin: p.plugin.clone(),
            plugin_version: p.plugin_version.clone(),
            op_version: p.op_version,
            file: p.file.clone(),
        }
    }
}

impl From<&ProviderRecord> for ProviderInfo {
    /// The recorded provider; which inputs it writes in place comes from the plugin when its
    /// graph is rebuilt (the node takes `ProviderInfo::of` the provider found again), not from the file.
    fn from(p: &ProviderRecord) -> Self {
        ProviderInfo {
            plugin: p.plugin.clone(),
            plugin_version: p.plugin_version.clone(),
            op_version: p.op_version,
            file: p.file.clone(),
            in_place: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub op: String,
    pub scope: String,
    pub attrs: Vec<(String, AttrRecord)>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub provider: ProviderRecord,
    /// Input and output metas (the same as `values[...]`, repeated for readers of the plan).
    pub input_metas: Vec<MetaRecord>,
    pub output_metas: Vec<MetaRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitsRecord {
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    pub max_seq_len: usize,
    pub tokens_per_block: usize,
    pub num_kv_blocks: usize,
}

impl From<&EngineLimits> for LimitsRecord {
    fn from(l: &EngineLimits) -> Self {
        LimitsRecord {
            max_batch_size: l.max_batch_size,
            max_num_tokens: l.max_num_tokens,
            max_seq_len: l.max_seq_len,
            tokens_per_block: l.tokens_per_block,
            num_kv_blocks: l.num_kv_blocks,
        }
    }
}

impl From<&LimitsRecord> for EngineLimits {
    fn from(l: &LimitsRecord) -> Self {
        EngineLimits {
            max_batch_size: l.max_batch_size,
            max_num_tokens: l.max_num_tokens,
            max_seq_len: l.max_seq_len,
            tokens_per_block: l.tokens_per_block,
            num_kv_blocks: l.num_kv_blocks,
        }
    }
}

/// The build settings that shaped the plan (for readers; the limits are authoritative).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildRecord {
    pub device: String,
    pub kv_cache_dtype: String,
    pub kv_cache_bytes: usize,
    pub pins: Vec<(String, String)>,
    pub disabled_ops: Vec<String>,
    pub weight_fallback_dtype: Option<String>,
    pub dequantize_weights: bool,
}

/// Where weight use `(name, dtype)` lives in `model.safetensors`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WeightRecord {
    pub name: String,
    pub dtype: String,
    pub tensor: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemoryRecord {
    pub arena_bytes: usize,
    pub unshared_bytes: usize,
    pub planned_values: usize,
    pub weight_bytes: usize,
    pub kv_bytes_per_block: usize,
}

/// `plan.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanRecord {
    pub format_version: u32,
    pub rtllm_version: String,
    pub definition: String,
    pub model_config: ModelConfig,
    pub build: BuildRecord,
    pub limits: LimitsRecord,
    pub memory: MemoryRecord,
    pub values: Vec<ValueRecord>,
    pub inputs: Vec<(String, usize)>,
    pub outputs: Vec<(String, usize)>,
    pub nodes: Vec<NodeRecord>,
    pub weights: Vec<WeightRecord>,
}

pub fn device_name(d: DeviceKind) -> String {
    d.name().to_string()
}

pub fn parse_device(name: &str) -> Result<DeviceKind, String> {
    [DeviceKind::Cpu, DeviceKind::Cuda]
        .into_iter()
        .find(|d| device_name(*d) == name)
        .ok_or_else(|| format!("unknown device '{name}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_and_attrs_round_trip() {
        let m = TensorMeta::new(DType::Q4_1, [Dim::sym("num_tokens"), Dim::from(576)]);
        let json = serde_json::to_string(&MetaRecord::from_meta(&m)).unwrap();
        let back: MetaRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_meta().unwrap(), m);
        let a =
            Attrs::new().with("eps", 1e-5).with("n", 3usize).with("s", "x").with("b", true).with("l", vec![1i64, 2]);
        let json = serde_json::to_string(&attrs_to_records(&a)).unwrap();
        let back: Vec<(String, AttrRecord)> = serde_json::from_str(&json).unwrap();
        assert_eq!(records_to_attrs(&back), a);
        assert!(MetaRecord { dtype: "f99".into(), dims: vec![], strides: vec![] }.to_meta().is_err());
    }
}
