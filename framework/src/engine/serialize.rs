//! Engine directories: what `rtllm build` and the engine cache write, and loading them back.
//!
//! An engine directory holds `plan.json` (model config, build settings, limits, memory plan
//! summary, every value's meta and source, every node with its attributes and the provider
//! that served it), `model.safetensors` (the weights exactly as the engine reads them, after
//! any conversion; quantized dtypes under their ggml names) and the tokenizer.
//!
//! Loading re-resolves each node's recorded provider (same plugin, same plugin and op
//! version, else an error naming the op), re-runs the op's inference hook on the recorded
//! input metas and checks it yields the recorded outputs (a cheap cross-check that catches a
//! plugin whose behaviour changed under the same version), then `create`s the kernel from
//! the recorded metas and attributes. No architecture code runs.

mod format;
mod tokenizer;
mod validate;

pub use format::{PlanRecord, FORMAT_VERSION};
pub use tokenizer::{HF_CONFIG_FILE, HF_FILE, SPEC_FILE};

use super::kernels::{self, recorded_provider};
use super::{BuildConfig, BuiltParts, Engine, Graph, Node, ProviderInfo, ValueInfo, WeightBytes};
use crate::registry::{infer_with, Registry};
use crate::tokenizer::spec::TokenizerSpec;
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::safetensors::{dtype_name, load_safetensors};
use crate::weights::{WeightError, WeightStore};
use format::*;
use rtllm_models::{ModelConfig, Value};
use rtllm_plugin_api::TensorMeta;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const PLAN_FILE: &str = "plan.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum SerializeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error(
        "op '{op}' ({scope}): the engine was built with plugin {expected}; {found}. Rebuild the engine \
         (rtllm build, or load the source model) or load that plugin"
    )]
    Provider { op: String, scope: String, expected: String, found: String },
    #[error("op '{op}' ({scope}): {message}")]
    Op { op: String, scope: String, message: String },
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("engine: {0}")]
    Engine(#[from] super::LoadError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SerializeError + '_ {
    move |source| SerializeError::Io { path: path.to_path_buf(), source }
}

/// Whether `path` is an engine directory (holds `plan.json`).
pub fn is_engine_dir(path: &Path) -> bool {
    path.is_dir() && path.join(PLAN_FILE).is_file()
}

/// Where a model's tokenizer comes from, to be written next to its engine.
#[derive(Clone, Debug)]
pub enum TokenizerSource {
    Spec(TokenizerSpec),
    HfFiles { json: PathBuf, config: Option<PathBuf> },
}

/// A bound weight's host bytes (parts are serialized before any upload; a device-resident
/// weight reads as empty and fails the size check with the weight's name).
fn bytes_of(w: &WeightBytes) -> &[u8] {
    w.host_bytes().unwrap_or(&[])
}

/// Writes the bound weights of `parts` to `dir/model.safetensors` (streamed, 8-byte aligned)
/// and returns the weight table for the plan.
pub fn write_weights(dir: &Path, parts: &BuiltParts) -> Result<Vec<format::WeightRecord>, SerializeError> {
    let path = dir.join(WEIGHTS_FILE);
    let uses = parts.graph.weight_uses();
    if uses.len() != parts.bound.len() {
        return Err(SerializeError::Format {
            path,
            message: format!("{} weights bound for {} uses", parts.bound.len(), uses.len()),
        });
    }
    let shape_of = |name: &str, dtype| {
        parts.graph.values.iter().find_map(|v| match &v.source {
            super::ValueSource::Weight { name: n, dtype: d } if n == name && *d == dtype => v.meta.shape(),
            _ => None,
        })
    };
    let mut records = Vec::with_capacity(uses.len());
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for ((name, dtype), bound) in uses.iter().zip(&parts.bound) {
        let twice = uses.iter().filter(|(n, _)| n == name).count() > 1;
        let tensor = if twice { format!("{name}#{}", dtype.name()) } else { name.clone() };
        let shape = shape_of(name, *dtype).ok_or_else(|| SerializeError::Format {
            path: path.clone(),
            message: format!("weight {name} has no concrete shape"),
        })?;
        let len = bytes_of(bound).len();
        let want = dtype.bytes_for(shape.iter().product());
        if want.is_none_or(|w| w > len) {
            return Err(SerializeError::Format {
                path,
                message: format!("weight {name}: {len} bytes bound for {shape:?} of {dtype}"),
            });
        }
        let len = want.unwrap_or(len);
        header.insert(
            tensor.clone(),
            serde_json::json!({"dtype": dtype_name(*dtype), "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len.div_ceil(8) * 8;
        records.push(format::WeightRecord { name: name.clone(), dtype: dtype.name().into(), tensor });
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| SerializeError::Format { path: path.clone(), message: e.to_string() })?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let file = std::fs::File::create(&path).map_err(io_err(&path))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let write = |out: &mut std::io::BufWriter<std::fs::File>, b: &[u8]| out.write_all(b).map_err(io_err(&path));
    write(&mut out, &(json.len() as u64).to_le_bytes())?;
    write(&mut out, &json)?;
    for ((name, dtype), bound) in uses.iter().zip(&parts.bound) {
        let shape = shape_of(name, *dtype).unwrap_or_default();
        let len = dtype.bytes_for(shape.iter().product()).unwrap_or(0);
        write(&mut out, &bytes_of(bound)[..len])?;
        write(&mut out, &[0u8; 8][..len.div_ceil(8) * 8 - len])?;
    }
    out.flush().map_err(io_err(&path))?;
    out.get_ref().sync_all().map_err(io_err(&path))?;
    Ok(records)
}

/// Writes `dir/plan.json` for a built engine.
pub fn write_plan(
    dir: &Path,
    engine: &Engine,
    definition: &str,
    config: &ModelConfig,
    bc: &BuildConfig,
    weights: Vec<format::WeightRecord>,
) -> Result<(), SerializeError> {
    let g = engine.graph();
    let metas = |vs: &[Value]| vs.iter().map(|v| MetaRecord::from_meta(g.meta(*v))).collect();
    let plan = PlanRecord {
        format_version: FORMAT_VERSION,
        rtllm_version: env!("CARGO_PKG_VERSION").into(),
        definition: definition.into(),
        model_config: config.clone(),
        build: BuildRecord {
            device: device_name(bc.selection.device),
            kv_cache_dtype: bc.kv_cache_dtype.name().into(),
            kv_cache_bytes: bc.kv_cache_bytes,
            pins: bc.selection.pins.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            disabled_ops: bc.selection.disabled_ops.clone(),
            weight_fallback_dtype: bc.selection.weight_fallback_dtype.map(|d| d.name().into()),
            dequantize_weights: bc.selection.dequantize_weights,
        },
        limits: engine.limits().into(),
        memory: MemoryRecord {
            arena_bytes: engine.memory_plan().arena_bytes,
            unshared_bytes: engine.memory_plan().unshared_bytes,
            planned_values: engine.memory_plan().slots.len(),
            weight_bytes: g
                .weight_uses()
                .iter()
                .filter_map(|(n, d)| {
                    g.values
                        .iter()
                        .find(|v| v.source == super::ValueSource::Weight { name: n.clone(), dtype: *d })
                        .and_then(|v| v.meta.byte_size())
                })
                .sum(),
            kv_bytes_per_block: engine.kv_bytes_per_block(),
        },
        values: g
            .values
            .iter()
            .map(|v| ValueRecord { meta: MetaRecord::from_meta(&v.meta), source: SourceRecord::from_source(&v.source) })
            .collect(),
        inputs: g.inputs.iter().map(|(n, v)| (n.clone(), v.0)).collect(),
        outputs: g.outputs.iter().map(|(n, v)| (n.clone(), v.0)).collect(),
        nodes: g
            .nodes
            .iter()
            .map(|n| NodeRecord {
                op: n.op.clone(),
                scope: n.scope.clone(),
                attrs: attrs_to_records(&n.attrs),
                inputs: n.inputs.iter().map(|v| v.0).collect(),
                outputs: n.outputs.iter().map(|v| v.0).collect(),
                provider: (&n.provider).into(),
                input_metas: metas(&n.inputs),
                output_metas: metas(&n.outputs),
            })
            .collect(),
        weights,
    };
    let path = dir.join(PLAN_FILE);
    let json = serde_json::to_vec_pretty(&plan)
        .map_err(|e| SerializeError::Format { path: path.clone(), message: e.to_string() })?;
    std::fs::write(&path, json).map_err(io_err(&path))
}

/// Writes the tokenizer files into `dir`.
pub fn write_tokenizer(dir: &Path, source: &TokenizerSource) -> Result<(), SerializeError> {
    match source {
        TokenizerSource::Spec(spec) => {
            let path = dir.join(SPEC_FILE);
            let json = serde_json::to_vec(&tokenizer::SpecRecord::from(spec))
                .map_err(|e| SerializeError::Format { path: path.clone(), message: e.to_string() })?;
            std::fs::write(&path, json).map_err(io_err(&path))
        }
        TokenizerSource::HfFiles { json, config } => {
            std::fs::copy(json, dir.join(HF_FILE)).map_err(io_err(json))?;
            if let Some(c) = config {
                std::fs::copy(c, dir.join(HF_CONFIG_FILE)).map_err(io_err(c))?;
            }
            Ok(())
        }
    }
}

/// Reads and checks `dir/plan.json`.
pub fn read_plan(dir: &Path) -> Result<PlanRecord, SerializeError> {
    let path = dir.join(PLAN_FILE);
    let text = read_file(&path)?;
    parse_plan(&text, &path)
}

/// A regular file of an engine directory, read whole.
fn read_file(path: &Path) -> Result<Vec<u8>, SerializeError> {
    crate::input_file::read_regular(path, crate::input_file::TEXT_LIMIT).map_err(io_err(path))
}

/// Parses and checks the text of a `plan.json` (`path` names it in errors).
pub fn parse_plan(text: &[u8], path: &Path) -> Result<PlanRecord, SerializeError> {
    let path = path.to_path_buf();
    let plan: PlanRecord = serde_json::from_slice(text)
        .map_err(|e| SerializeError::Format { path: path.clone(), message: format!("not a valid plan: {e}") })?;
    if plan.format_version != FORMAT_VERSION {
        return Err(SerializeError::Format {
            path,
            message: format!("plan format {} (this rtllm reads {FORMAT_VERSION})", plan.format_version),
        });
    }
    validate::check_plan(&plan).map_err(|message| SerializeError::Format { path, message })?;
    Ok(plan)
}

/// Reads the tokenizer of an engine directory.
pub fn read_tokenizer(dir: &Path) -> Result<Tokenizer, SerializeError> {
    let hf = dir.join(HF_FILE);
    if hf.is_file() {
        let config = Some(dir.join(HF_CONFIG_FILE)).filter(|p| p.is_file());
        return Ok(Tokenizer::from_hf_file(&hf, config.as_deref())?);
    }
    let path = dir.join(SPEC_FILE);
    let text = read_file(&path)?;
    let record: tokenizer::SpecRecord = serde_json::from_slice(&text)
        .map_err(|e| SerializeError::Format { path: path.clone(), message: e.to_string() })?;
    let spec = record.into_spec().map_err(|message| SerializeError::Format { path, message })?;
    Ok(Tokenizer::from_spec(spec)?)
}

fn fmt_found(registry: &Registry, op: &str) -> String {
    let found: Vec<String> = registry
        .providers(op)
        .iter()
        .map(|p| format!("{} {} (op version {}, {})", p.plugin, p.plugin_version, p.decl.version, p.path.display()))
        .collect();
    if found.is_empty() {
        "no loaded plugin provides it".into()
    } else {
        format!("found: {}", found.join(", "))
    }
}

/// Rebuilds the graph of a plan against `registry` (see the module docs); its kernels are
/// created from it afterwards (`kernels::create_kernels`).
fn rebuild_graph(plan: &PlanRecord, registry: &Registry, path: &Path) -> Result<Graph, SerializeError> {
    let bad = |message: String| SerializeError::Format { path: path.to_path_buf(), message };
    let device = parse_device(&plan.build.device).map_err(bad)?;
    let mut graph = Graph::default();
    for v in &plan.values {
        graph
            .values
            .push(ValueInfo { meta: v.meta.to_meta().map_err(bad)?, source: v.source.to_source().map_err(bad)? });
    }
    let value = |i: usize| {
        if i < plan.values.len() {
            Ok(Value(i))
        } else {
            Err(bad(format!("value index {i} out of range")))
        }
    };
    for (n, v) in &plan.inputs {
        graph.inputs.push((n.clone(), value(*v)?));
    }
    for (n, v) in &plan.outputs {
        graph.outputs.push((n.clone(), value(*v)?));
    }
    for rec in &plan.nodes {
        let inputs: Vec<Value> = rec.inputs.iter().map(|&i| value(i)).collect::<Result<_, _>>()?;
        let outputs: Vec<Value> = rec.outputs.iter().map(|&i| value(i)).collect::<Result<_, _>>()?;
        let metas: Vec<TensorMeta> = inputs.iter().map(|v| graph.meta(*v).clone()).collect();
        let recorded: ProviderInfo = (&rec.provider).into();
        let provider = recorded_provider(registry, device, &rec.op, &metas, &recorded).ok_or_else(|| {
            SerializeError::Provider {
                op: rec.op.clone(),
                scope: rec.scope.clone(),
                expected: kernels::describe(&recorded),
                found: fmt_found(registry, &rec.op),
            }
        })?;
        let attrs = records_to_attrs(&rec.attrs);
        let op_err = |message: String| SerializeError::Op { op: rec.op.clone(), scope: rec.scope.clone(), message };
        let inferred = infer_with(provider, &metas, &attrs).map_err(|e| op_err(e.to_string()))?;
        let recorded_outs: Vec<&TensorMeta> = outputs.iter().map(|v| graph.meta(*v)).collect();
        if inferred.len() != recorded_outs.len() || inferred.iter().zip(&recorded_outs).any(|(a, b)| a != *b) {
            let show = |m: &[&TensorMeta]| m.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
            return Err(op_err(format!(
                "inference now gives [{}], the plan recorded [{}]",
                show(&inferred.iter().collect::<Vec<_>>()),
                show(&recorded_outs)
            )));
        }
        graph.nodes.push(Node {
            op: rec.op.clone(),
            scope: rec.scope.clone(),
            attrs,
            inputs,
            outputs,
            provider: ProviderInfo::of(provider),
        });
    }
    Ok(graph)
}

/// Loads an engine directory: the plan, its kernels through `registry`, the weights from the
/// safetensors file (read into memory).
pub fn load_engine(dir: &Path, registry: &Registry) -> Result<(PlanRecord, Engine), SerializeError> {
    let plan = read_plan(dir)?;
    let plan_path = dir.join(PLAN_FILE);
    let graph = rebuild_graph(&plan, registry, &plan_path)?;
    let device = parse_device(&plan.build.device)
        .map_err(|message| SerializeError::Format { path: plan_path.clone(), message })?;
    let kernels = kernels::create_kernels(&graph, registry, device).map_err(super::LoadError::from)?;
    let mut store = WeightStore::new();
    load_safetensors(&dir.join(WEIGHTS_FILE), &mut store)?;
    let uses = graph.weight_uses();
    let mut bound = Vec::with_capacity(uses.len());
    for (name, dtype) in &uses {
        let bad = |message: String| SerializeError::Format { path: dir.join(WEIGHTS_FILE), message };
        let rec = plan
            .weights
            .iter()
            .find(|w| &w.name == name && w.dtype == dtype.name())
            .ok_or_else(|| bad(format!("the plan's weight table has no entry for {name} ({dtype})")))?;
        let t = store.get(&rec.tensor).ok_or_else(|| bad(format!("tensor `{}` is missing", rec.tensor)))?;
        if t.dtype != *dtype {
            return Err(bad(format!("tensor `{}` is {}, the plan needs {dtype}", rec.tensor, t.dtype)));
        }
        bound.push(super::weight_bytes::bind_weight(t.bytes(), *dtype));
    }
    let weights: Arc<dyn super::WeightSource> = Arc::new(store);
    let kv_cache_dtype = parse_dtype(&plan.build.kv_cache_dtype)
        .map_err(|message| SerializeError::Format { path: plan_path, message })?;
    let parts = BuiltParts {
        graph,
        kernels,
        weights,
        bound,
        limits: (&plan.limits).into(),
        kv_cache_dtype,
        placement: Default::default(),
    };
    let engine = parts.into_engine()?;
    Ok((plan, engine))
}

/// What an engine directory records besides the engine itself.
pub struct EngineDirInfo<'a> {
    /// The model definition's name (for readers).
    pub definition: &'a str,
    pub config: &'a ModelConfig,
    pub build: &'a BuildConfig,
    pub tokenizer: &'a TokenizerSource,
}

/// Writes `parts` as an engine directory at `dir` and turns them into the engine. Returns
/// the engine (or why it could not be made) and, separately, whether writing succeeded, so a
/// failed cache write never costs the load.
pub fn write_engine_dir(
    dir: &Path,
    parts: BuiltParts,
    info: &EngineDirInfo<'_>,
) -> (Result<Engine, super::LoadError>, Result<(), SerializeError>) {
    let weights = match write_weights(dir, &parts) {
        Ok(w) => w,
        Err(e) => return (parts.into_engine(), Err(e)),
    };
    let engine = match parts.into_engine() {
        Ok(engine) => engine,
        Err(e) => {
            let msg = e.to_string();
            return (Err(e), Err(SerializeError::Format { path: dir.to_path_buf(), message: msg }));
        }
    };
    let written = write_plan(dir, &engine, info.definition, info.config, info.build, weights)
        .and_then(|()| write_tokenizer(dir, info.tokenizer));
    (Ok(engine), written)
}
