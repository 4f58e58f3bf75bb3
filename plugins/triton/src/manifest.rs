//! kernels/triton/artifacts/manifest.json: its serde form, and the validated form the plugin
//! works from (expressions parsed, dtypes resolved, every cubin present). A malformed manifest
//! is a [`ManifestError`] that names the kernel entry and the field.

use crate::expr::{parse, Expr};
use rtllm_plugin_api::{AttrValue, Attrs, DType, OpExample, TensorMeta};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// The manifest format this plugin reads.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest.json is not valid: {0}")]
    Json(String),
    #[error("manifest format {found} is not the supported format {FORMAT}; recompile with kernels/triton/compile.py")]
    Format { found: u32 },
    #[error("manifest kernel '{kernel}': {field}: {message}")]
    Field { kernel: String, field: String, message: String },
    #[error("manifest kernel '{kernel}': cubin '{file}' is missing from the artifacts")]
    MissingCubin { kernel: String, file: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    #[serde(default)]
    triton_version: String,
    #[serde(default)]
    target: String,
    kernels: Vec<RawKernel>,
}

#[derive(Deserialize)]
struct RawKernel {
    name: String,
    op: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    function: String,
    #[serde(default)]
    source_hash: String,
    #[serde(default)]
    priority: i32,
    inputs: Vec<RawInput>,
    outputs: Vec<RawOutput>,
    #[serde(default)]
    checks: Vec<(String, String)>,
    #[serde(default)]
    lets: Vec<(String, String)>,
    args: Vec<RawArg>,
    grid: Vec<String>,
    #[serde(default)]
    constexprs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    examples: Vec<RawExample>,
    variants: Vec<RawVariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: String,
    dtype: String,
    rank: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawShape {
    Dims(Vec<String>),
    SameAs(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    name: String,
    dtype: String,
    shape: RawShape,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    value: String,
    align: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExample {
    inputs: Vec<(String, Vec<usize>)>,
    #[serde(default)]
    attrs: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawVariant {
    types: BTreeMap<String, String>,
    specialization: String,
    cubin: String,
    symbol: String,
    #[serde(default)]
    shared: u32,
    num_warps: u32,
    #[serde(default)]
    trailing_null_args: usize,
}

/// An input's dtype: fixed, or a type variable bound by the call.
#[derive(Debug, Clone, PartialEq)]
pub enum DtypeSpec {
    Fixed(DType),
    Var(String),
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DtypeSpec,
    pub rank: Option<usize>,
}

/// An output's shape: one expression per dim, or the shape of a named input.
#[derive(Debug, Clone)]
pub enum ShapeSpec {
    Dims(Vec<(String, Expr)>),
    SameAs(usize),
}

#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub name: String,
    pub dtype: DtypeSpec,
    pub shape: ShapeSpec,
}

/// A kernel parameter's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgType {
    Ptr,
    I32,
    I64,
    U32,
    F32,
}

#[derive(Debug, Clone)]
pub struct ArgSpec {
    pub name: String,
    pub ty: ArgType,
    pub value: Expr,
    /// Compiled with a divisibility-16 hint in the aligned specialization.
    pub align16: bool,
}

/// One compiled binary of a kernel entry.
#[derive(Debug, Clone)]
pub struct Variant {
    pub types: BTreeMap<String, DType>,
    pub aligned: bool,
    pub cubin: String,
    pub symbol: String,
    pub shared: u32,
    pub num_warps: u32,
    pub trailing_null_args: usize,
}

/// One validated kernel entry.
#[derive(Debug, Clone)]
pub struct KernelEntry {
    pub name: String,
    pub op: String,
    pub summary: String,
    pub source: String,
    pub function: String,
    pub source_hash: String,
    pub priority: i32,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub checks: Vec<(Expr, String)>,
    pub lets: Vec<(String, Expr)>,
    pub args: Vec<ArgSpec>,
    pub grid: Vec<(String, Expr)>,
    pub constexprs: Vec<(String, crate::expr::Value)>,
    pub examples: Vec<OpExample>,
    pub variants: Vec<Variant>,
}

/// The validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub triton_version: String,
    pub target: String,
    pub kernels: Vec<KernelEntry>,
}

fn dtype_spec(s: &str) -> DtypeSpec {
    match DType::parse(s) {
        Some(d) => DtypeSpec::Fixed(d),
        None => DtypeSpec::Var(s.to_string()),
    }
}

fn json_value(v: &serde_json::Value) -> Option<crate::expr::Value> {
    use crate::expr::Value;
    Some(match v {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        _ => return None,
    })
}

fn attr_value(v: &serde_json::Value) -> Option<AttrValue> {
    Some(match v {
        serde_json::Value::Bool(b) => AttrValue::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => AttrValue::Int(i),
            None => AttrValue::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => AttrValue::Str(s.as_str().into()),
        serde_json::Value::Array(a) => {
            AttrValue::Ints(a.iter().map(|x| x.as_i64()).collect::<Option<Vec<_>>>()?.into())
        }
        _ => return None,
    })
}

struct Ctx<'a> {
    kernel: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ManifestError {
        ManifestError::Field { kernel: self.kernel.to_string(), field: field.into(), message: message.into() }
    }

    fn expr(&self, field: impl Into<String>, src: &str) -> Result<Expr, ManifestError> {
        parse(src).map_err(|e| self.err(field, format!("`{src}`: {e}")))
    }
}

fn convert(raw: RawKernel, files: &dyn Fn(&str) -> bool) -> Result<KernelEntry, ManifestError> {
    let c = Ctx { kernel: &raw.name };
    if raw.op.is_empty() {
        return Err(c.err("op", "is empty"));
    }
    let inputs: Vec<InputSpec> = raw
        .inputs
        .iter()
        .map(|i| InputSpec { name: i.name.clone(), dtype: dtype_spec(&i.dtype), rank: i.rank })
        .collect();
    if inputs.is_empty() {
        return Err(c.err("inputs", "an op needs at least one input"));
    }
    let vars: Vec<&str> = inputs
        .iter()
        .filter_map(|i| match &i.dtype {
            DtypeSpec::Var(v) => Some(v.as_str()),
            DtypeSpec::Fixed(_) => None,
        })
        .collect();
    let mut outputs = Vec::new();
    for (k, o) in raw.outputs.iter().enumerate() {
        let dtype = dtype_spec(&o.dtype);
        if let DtypeSpec::Var(v) = &dtype {
            if !vars.contains(&v.as_str()) {
                return Err(c.err(format!("outputs[{k}].dtype"), format!("type variable '{v}' is bound by no input")));
            }
        }
        let shape = match &o.shape {
            RawShape::SameAs(name) => ShapeSpec::SameAs(
                inputs
                    .iter()
                    .position(|i| &i.name == name)
                    .ok_or_else(|| c.err(format!("outputs[{k}].shape"), format!("no input named '{name}'")))?,
            ),
            RawShape::Dims(d) => ShapeSpec::Dims(
                d.iter()
                    .enumerate()
                    .map(|(j, s)| Ok((s.clone(), c.expr(format!("outputs[{k}].shape[{j}]"), s)?)))
                    .collect::<Result<_, ManifestError>>()?,
            ),
        };
        outputs.push(OutputSpec { name: o.name.clone(), dtype, shape });
    }
    let checks = raw
        .checks
        .iter()
        .enumerate()
        .map(|(k, (e, m))| Ok((c.expr(format!("checks[{k}]"), e)?, m.clone())))
        .collect::<Result<_, ManifestError>>()?;
    let lets = raw
        .lets
        .iter()
        .map(|(n, e)| Ok((n.clone(), c.expr(format!("lets.{n}"), e)?)))
        .collect::<Result<_, ManifestError>>()?;
    let mut args = Vec::new();
    for a in &raw.args {
        let ty = match a.ty.as_str() {
            t if t.starts_with('*') => ArgType::Ptr,
            "i32" => ArgType::I32,
            "i64" => ArgType::I64,
            "u32" => ArgType::U32,
            "fp32" => ArgType::F32,
            t => {
                return Err(
                    c.err(format!("args.{}.type", a.name), format!("unknown type '{t}' (*T, i32, i64, u32, fp32)"))
                )
            }
        };
        if !matches!(a.align, None | Some(16)) {
            return Err(c.err(format!("args.{}.align", a.name), "only align = 16 is supported"));
        }
        let value = c.expr(format!("args.{}.value", a.name), &a.value)?;
        args.push(ArgSpec { name: a.name.clone(), ty, value, align16: a.align == Some(16) });
    }
    if raw.grid.is_empty() || raw.grid.len() > 3 {
        return Err(c.err("grid", format!("takes 1 to 3 expressions, got {}", raw.grid.len())));
    }
    let grid = raw
        .grid
        .iter()
        .enumerate()
        .map(|(k, g)| Ok((g.clone(), c.expr(format!("grid[{k}]"), g)?)))
        .collect::<Result<_, ManifestError>>()?;
    let constexprs = raw
        .constexprs
        .iter()
        .map(|(k, v)| {
            json_value(v)
                .map(|v| (k.clone(), v))
                .ok_or_else(|| c.err(format!("constexprs.{k}"), "must be a number, bool or string"))
        })
        .collect::<Result<_, ManifestError>>()?;
    let mut examples = Vec::new();
    for (k, e) in raw.examples.iter().enumerate() {
        let mut metas = Vec::new();
        for (d, dims) in &e.inputs {
            let dt = DType::parse(d).ok_or_else(|| c.err(format!("examples[{k}]"), format!("unknown dtype '{d}'")))?;
            metas.push(TensorMeta::of(dt, dims));
        }
        let mut attrs = Attrs::new();
        for (name, v) in &e.attrs {
            attrs.set(
                name,
                attr_value(v).ok_or_else(|| c.err(format!("examples[{k}].attrs.{name}"), "unsupported value"))?,
            );
        }
        examples.push(OpExample { inputs: metas.into(), attrs });
    }
    if raw.variants.is_empty() {
        return Err(c.err("variants", "no compiled variants"));
    }
    let mut variants = Vec::new();
    for (k, v) in raw.variants.iter().enumerate() {
        let mut types = BTreeMap::new();
        for (var, d) in &v.types {
            let dt =
                DType::parse(d).ok_or_else(|| c.err(format!("variants[{k}].types"), format!("unknown dtype '{d}'")))?;
            types.insert(var.clone(), dt);
        }
        let mut bound: Vec<&str> = types.keys().map(String::as_str).collect();
        let mut want = vars.clone();
        bound.sort_unstable();
        want.sort_unstable();
        want.dedup();
        if bound != want {
            return Err(c.err(format!("variants[{k}].types"), format!("binds {bound:?}, the inputs use {want:?}")));
        }
        let aligned = match v.specialization.as_str() {
            "aligned" => true,
            "generic" => false,
            s => {
                return Err(c.err(format!("variants[{k}].specialization"), format!("unknown '{s}' (aligned, generic)")))
            }
        };
        if !files(&v.cubin) {
            return Err(ManifestError::MissingCubin { kernel: raw.name.clone(), file: v.cubin.clone() });
        }
        if v.num_warps == 0 || v.num_warps > 32 {
            return Err(c.err(format!("variants[{k}].num_warps"), format!("{} is not in 1..=32", v.num_warps)));
        }
        variants.push(Variant {
            types,
            aligned,
            cubin: v.cubin.clone(),
            symbol: v.symbol.clone(),
            shared: v.shared,
            num_warps: v.num_warps,
            trailing_null_args: v.trailing_null_args,
        });
    }
    Ok(KernelEntry {
        name: raw.name,
        op: raw.op,
        summary: raw.summary,
        source: raw.source,
        function: raw.function,
        source_hash: raw.source_hash,
        priority: raw.priority,
        inputs,
        outputs,
        checks,
        lets,
        args,
        grid,
        constexprs,
        examples,
        variants,
    })
}

impl Manifest {
    /// Parses and validates manifest text; `has_file` says whether an artifact file exists.
    pub fn parse(text: &str, has_file: &dyn Fn(&str) -> bool) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.format != FORMAT {
            return Err(ManifestError::Format { found: raw.format });
        }
        let mut seen = HashMap::new();
        let mut kernels = Vec::new();
        for k in raw.kernels {
            if seen.insert(k.name.clone(), ()).is_some() {
                return Err(ManifestError::Field {
                    kernel: k.name,
                    field: "name".into(),
                    message: "is not unique".into(),
                });
            }
            kernels.push(convert(k, has_file)?);
        }
        Ok(Manifest { triton_version: raw.triton_version, target: raw.target, kernels })
    }

    /// The op names in first-appearance order.
    pub fn op_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for k in &self.kernels {
            if !names.contains(&k.op.as_str()) {
                names.push(&k.op);
            }
        }
        names
    }
}
