//! Shape/dtype inference from a manifest entry's declarative rules: matching inputs to an
//! entry (count, dtypes binding type variables, ranks, a compiled variant for that binding),
//! the `lets`, the `checks`, and the outputs' dtypes and dims.

use crate::expr::{Scope, Value};
use crate::manifest::{DtypeSpec, KernelEntry, ShapeSpec};
use rtllm_plugin_api::{shapes::dtype_list, Attrs, DType, Dim, PluginError, TensorMeta};
use std::collections::BTreeMap;

/// Type-variable bindings of one call.
pub type Binding = BTreeMap<String, DType>;

fn fail(entry: &KernelEntry, msg: impl std::fmt::Display) -> PluginError {
    PluginError::new(format!("{} (triton kernel '{}'): {msg}", entry.op, entry.name))
}

/// Binds the entry's type variables from `inputs` and checks counts, fixed dtypes and ranks.
pub fn bind(entry: &KernelEntry, inputs: &[TensorMeta]) -> Result<Binding, PluginError> {
    if inputs.len() != entry.inputs.len() {
        return Err(fail(entry, format!("takes {} inputs, got {}", entry.inputs.len(), inputs.len())));
    }
    let mut binding = Binding::new();
    for (spec, meta) in entry.inputs.iter().zip(inputs) {
        match &spec.dtype {
            DtypeSpec::Fixed(d) if *d != meta.dtype => {
                return Err(fail(entry, format!("{} must be {d}, got {} {meta}", spec.name, spec.name)))
            }
            DtypeSpec::Fixed(_) => {}
            DtypeSpec::Var(v) => match binding.get(v) {
                Some(d) if *d != meta.dtype => {
                    return Err(fail(entry, format!("{} must be {d} like the other {v} inputs, got {meta}", spec.name)))
                }
                Some(_) => {}
                None => {
                    let allowed: Vec<DType> = dtypes_of_var(entry, v);
                    if !allowed.contains(&meta.dtype) {
                        return Err(fail(entry, format!("{} must be {}, got {meta}", spec.name, dtype_list(&allowed))));
                    }
                    binding.insert(v.clone(), meta.dtype);
                }
            },
        }
        if let Some(r) = spec.rank {
            if meta.rank() != r {
                return Err(fail(entry, format!("{} must have rank {r}, got {meta}", spec.name)));
            }
        }
    }
    if !entry.variants.iter().any(|v| v.types == binding) {
        let compiled: Vec<String> =
            entry.variants.iter().filter(|v| !v.aligned).map(|v| fmt_binding(&v.types)).collect();
        return Err(fail(
            entry,
            format!("no compiled variant for {}; compiled: {}", fmt_binding(&binding), compiled.join("; ")),
        ));
    }
    Ok(binding)
}

/// `T=bf16, W=f32`.
pub fn fmt_binding(b: &Binding) -> String {
    b.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// The dtypes any variant binds `var` to, in first-seen order.
pub fn dtypes_of_var(entry: &KernelEntry, var: &str) -> Vec<DType> {
    let mut out = Vec::new();
    for v in &entry.variants {
        if let Some(d) = v.types.get(var) {
            if !out.contains(d) {
                out.push(*d);
            }
        }
    }
    out
}

/// A scope over the entry's inputs (and outputs, at launch), with constexprs and lets.
pub fn scope<'a>(
    entry: &KernelEntry,
    tensors: Vec<(&'a str, &'a TensorMeta, Option<u64>)>,
    attrs: &'a Attrs,
) -> Result<Scope<'a>, PluginError> {
    let mut s = Scope { tensors, attrs, vars: entry.constexprs.clone() };
    for (name, e) in &entry.lets {
        let v = s.eval(e).map_err(|err| fail(entry, format!("let {name}: {err}")))?;
        s.vars.push((name.clone(), v));
    }
    Ok(s)
}

/// Runs the entry's checks in `s`: a false check is an error with its message.
pub fn run_checks(entry: &KernelEntry, s: &Scope<'_>) -> Result<(), PluginError> {
    for (e, message) in &entry.checks {
        match s.eval(e).map_err(|err| fail(entry, err))? {
            Value::Bool(true) | Value::Unknown => {}
            Value::Bool(false) => return Err(fail(entry, message)),
            v => return Err(fail(entry, format!("check `{message}` evaluated to {v}, not a bool"))),
        }
    }
    Ok(())
}

fn dtype_of(entry: &KernelEntry, spec: &DtypeSpec, binding: &Binding) -> Result<DType, PluginError> {
    match spec {
        DtypeSpec::Fixed(d) => Ok(*d),
        DtypeSpec::Var(v) => {
            binding.get(v).copied().ok_or_else(|| fail(entry, format!("type variable {v} is unbound")))
        }
    }
}

/// Output metas of `entry` for these inputs and attributes.
pub fn infer_entry(entry: &KernelEntry, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
    let binding = bind(entry, inputs)?;
    let tensors = entry.inputs.iter().zip(inputs).map(|(spec, m)| (spec.name.as_str(), m, None)).collect();
    let s = scope(entry, tensors, attrs)?;
    run_checks(entry, &s)?;
    let mut out = Vec::with_capacity(entry.outputs.len());
    for o in &entry.outputs {
        let dtype = dtype_of(entry, &o.dtype, &binding)?;
        let dims = match &o.shape {
            ShapeSpec::SameAs(i) => inputs[*i].dims.iter().cloned().collect(),
            ShapeSpec::Dims(ds) => {
                let mut dims = Vec::with_capacity(ds.len());
                for (src, e) in ds {
                    dims.push(
                        match s.eval(e).map_err(|err| fail(entry, format!("{} dim `{src}`: {err}", o.name)))? {
                            Value::Int(v) if v >= 0 => Dim::Known(v as u64),
                            Value::Sym(sym) => Dim::Sym(sym.as_str().into()),
                            Value::Unknown => {
                                return Err(fail(
                                    entry,
                                    format!("{} dim `{src}` needs known dims, got {}", o.name, show(inputs)),
                                ))
                            }
                            v => return Err(fail(entry, format!("{} dim `{src}` is {v}, not a size", o.name))),
                        },
                    );
                }
                dims
            }
        };
        out.push(TensorMeta::new(dtype, dims));
    }
    Ok(out)
}

fn show(inputs: &[TensorMeta]) -> String {
    inputs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
}

/// The entry of `entries` (one op's) that serves these inputs, and its outputs: the first whose
/// input count matches and whose rules accept them; otherwise the first matching entry's error.
pub fn infer<'e>(
    op: &str,
    entries: &'e [KernelEntry],
    inputs: &[TensorMeta],
    attrs: &Attrs,
) -> Result<(&'e KernelEntry, Vec<TensorMeta>), PluginError> {
    let mut first_err = None;
    for e in entries.iter().filter(|e| e.inputs.len() == inputs.len()) {
        match infer_entry(e, inputs, attrs) {
            Ok(out) => return Ok((e, out)),
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        let mut counts: Vec<usize> = entries.iter().map(|e| e.inputs.len()).collect();
        counts.sort_unstable();
        counts.dedup();
        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        PluginError::new(format!("{op} (triton) takes {} inputs, got {}", counts.join(" or "), inputs.len()))
    }))
}
