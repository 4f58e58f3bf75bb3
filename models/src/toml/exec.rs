//! Runs a compiled TOML model against a `GraphBuilder`: evaluates `[values]` over the model
//! config, walks the steps (conditions, loops, block calls), declares inputs and fetches
//! weights as they are first read, and calls ops — the same builder calls a Rust definition
//! makes. Every error is prefixed with the file, line and key of the step that caused it.

use super::ast::{Action, AttrSpec, Block, Compiled, Cond, DTypeSpec, DimSpec, Step, ValueRef, ValueSpec};
use super::error::{did_you_mean, locate_build_error, Loc};
use super::expr::{Expr, Scalar, Scope};
use super::limits::{MAX_STEPS_RUN, MAX_VALUE_CHAIN};
use crate::arch::BuildOptions;
use crate::builder::{BuildError, GraphBuilder, Value};
use crate::config::ModelConfig;
use rtllm_plugin_api::{AttrValue, Attrs, Dim, TensorMeta};
use std::collections::{BTreeMap, HashMap};

/// The model config as a JSON object (its `extra` keys merged in), for `config.*` lookups.
struct ConfigView(serde_json::Map<String, serde_json::Value>);

impl ConfigView {
    fn new(config: &ModelConfig) -> Result<Self, String> {
        let serde_json::Value::Object(mut map) =
            serde_json::to_value(config).map_err(|e| format!("model config: {e}"))?
        else {
            return Err("model config did not serialize to an object".into());
        };
        if let Some(serde_json::Value::Object(extra)) = map.remove("extra") {
            for (k, v) in extra {
                map.entry(k).or_insert(v);
            }
        }
        Ok(ConfigView(map))
    }

    fn get(&self, path: &[String]) -> Result<Scalar, String> {
        let full = || format!("config.{}", path.join("."));
        let mut map = &self.0;
        for (i, key) in path.iter().enumerate() {
            let Some(v) = map.get(key) else {
                let hint = did_you_mean(key, map.keys().map(String::as_str));
                return Err(format!("unknown config reference '{}'{hint}", full()));
            };
            let last = i + 1 == path.len();
            match v {
                serde_json::Value::Null => return Ok(Scalar::Absent),
                serde_json::Value::Object(m) if !last => map = m,
                serde_json::Value::Object(_) => return Err(format!("'{}' is a table, not a value", full())),
                _ if !last => return Err(format!("'{}' has no key '{}'", path[..=i].join("."), path[i + 1])),
                serde_json::Value::Bool(b) => return Ok(Scalar::Bool(*b)),
                serde_json::Value::String(s) => return Ok(Scalar::Str(s.clone())),
                serde_json::Value::Number(n) => {
                    return Ok(match n.as_i64() {
                        Some(i) => Scalar::Int(i),
                        None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
                    })
                }
                serde_json::Value::Array(_) => return Err(format!("'{}' is a list, not a value", full())),
            }
        }
        Err("'config' needs a key".into())
    }
}

/// What expressions see: the config, the evaluated `[values]`, the loop variables.
struct ExprScope<'a> {
    config: &'a ConfigView,
    values: &'a BTreeMap<String, Scalar>,
    vars: &'a [(String, i64)],
}

impl Scope for ExprScope<'_> {
    fn config(&self, path: &[String]) -> Result<Scalar, String> {
        self.config.get(path)
    }

    fn name(&self, name: &str) -> Result<Option<Scalar>, String> {
        if let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) {
            return Ok(Some(Scalar::Int(*v)));
        }
        Ok(self.values.get(name).cloned())
    }
}

/// Evaluates `[values]` in dependency order (each may name others), refusing cycles.
struct ValueEval<'a> {
    model: &'a Compiled,
    config: &'a ConfigView,
    done: BTreeMap<String, Scalar>,
    active: Vec<String>,
}

impl Scope for std::cell::RefCell<ValueEval<'_>> {
    fn config(&self, path: &[String]) -> Result<Scalar, String> {
        self.borrow().config.get(path)
    }

    fn name(&self, name: &str) -> Result<Option<Scalar>, String> {
        if let Some(v) = self.borrow().done.get(name) {
            return Ok(Some(v.clone()));
        }
        let Some((spec, _)) = self.borrow().model.values.get(name).cloned() else {
            return Ok(None);
        };
        if self.borrow().active.iter().any(|a| a == name) {
            return Err(format!(
                "[values] '{name}' depends on itself ({} -> {name})",
                self.borrow().active.join(" -> ")
            ));
        }
        if self.borrow().active.len() >= MAX_VALUE_CHAIN {
            return Err(format!(
                "[values] entries name each other more than {MAX_VALUE_CHAIN} deep ({} -> {name})",
                self.borrow().active.join(" -> ")
            ));
        }
        self.borrow_mut().active.push(name.to_string());
        let v = match spec {
            ValueSpec::Lit(s) => Ok(s),
            ValueSpec::Expr(e) => e.eval(self),
        };
        self.borrow_mut().active.pop();
        let v = v?;
        self.borrow_mut().done.insert(name.to_string(), v.clone());
        Ok(Some(v))
    }
}

pub struct Run<'a> {
    model: &'a Compiled,
    file: &'a str,
    config: ConfigView,
    values: BTreeMap<String, Scalar>,
    vars: Vec<(String, i64)>,
    options: &'a BuildOptions,
    b: &'a mut dyn GraphBuilder,
    scope: String,
    /// Steps and loop iterations run so far (bounded by `MAX_STEPS_RUN`).
    steps_run: usize,
}

type Env = HashMap<String, Value>;
type R<T> = Result<T, BuildError>;

impl<'a> Run<'a> {
    fn invalid(&self, loc: &Loc, message: impl Into<String>) -> BuildError {
        locate_build_error(self.file, loc, BuildError::Invalid { scope: self.scope.clone(), message: message.into() })
    }

    fn eval(&self, e: &Expr, loc: &Loc) -> R<Scalar> {
        let scope = ExprScope { config: &self.config, values: &self.values, vars: &self.vars };
        e.eval(&scope).map_err(|m| self.invalid(loc, m))
    }

    fn spec(&self, v: &ValueSpec, loc: &Loc) -> R<Scalar> {
        match v {
            ValueSpec::Lit(s) => Ok(s.clone()),
            ValueSpec::Expr(e) => self.eval(e, loc),
        }
    }

    fn int(&self, e: &Expr, loc: &Loc, what: &str) -> R<i64> {
        match self.eval(e, loc)? {
            Scalar::Int(i) if i >= 0 => Ok(i),
            other => {
                Err(self.invalid(loc, format!("{what} must be a non-negative integer, got {} ({other})", other.kind())))
            }
        }
    }

    /// Fills `{var}` placeholders from the loop variables.
    fn pattern(&self, p: &str, loc: &Loc) -> R<String> {
        let mut out = String::new();
        let mut rest = p;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| self.invalid(loc, format!("unclosed '{{' in \"{p}\"")))?;
            let var = &rest[open + 1..close];
            let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == var) else {
                let here: Vec<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
                return Err(self.invalid(
                    loc,
                    format!(
                        "placeholder '{{{var}}}' in \"{p}\" is not a loop variable here (in scope: [{}])",
                        here.join(", ")
                    ),
                ));
            };
            out.push_str(&v.to_string());
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn declare_input(&mut self, local: &str) -> R<Value> {
        let model = self.model;
        let Some(decl) = model.inputs.iter().find(|i| i.local == local) else {
            return Err(BuildError::Invalid { scope: self.scope.clone(), message: format!("no input '{local}'") });
        };
        let name = self.pattern(&decl.name, &decl.loc)?;
        let dtype = match decl.dtype {
            DTypeSpec::Fixed(d) => d,
            DTypeSpec::KvCache => self.options.kv_cache_dtype,
        };
        let mut dims = Vec::new();
        for (d, loc) in &decl.dims {
            dims.push(match d {
                DimSpec::Sym(s) => Dim::sym(s),
                DimSpec::Expr(e) => Dim::from(self.int(e, loc, "a dim")? as usize),
            });
        }
        self.b.input(&name, TensorMeta::new(dtype, dims)).map_err(|e| locate_build_error(self.file, &decl.loc, e))
    }

    /// The value a step reads; `None` for an optional one that is absent.
    fn read(&mut self, env: &Env, r: &ValueRef) -> R<Option<Value>> {
        if let Some(v) = env.get(&r.name) {
            return Ok(Some(*v));
        }
        if let Some(w) = self.model.weights.get(&r.name) {
            let name = self.pattern(&w.pattern, &r.loc)?;
            if r.optional && !self.b.has_weight(&name) {
                return Ok(None);
            }
            return self.b.weight(&name).map(Some).map_err(|e| {
                let e = match e {
                    BuildError::MissingWeight { scope, name, hint } => {
                        let hint = format!("{hint}; `{}` is declared at line {}", w.loc.key, w.loc.line);
                        BuildError::MissingWeight { scope, name, hint }
                    }
                    other => other,
                };
                locate_build_error(self.file, &r.loc, e)
            });
        }
        if self.model.inputs.iter().any(|i| i.local == r.name) {
            return self.declare_input(&r.name).map(Some);
        }
        if r.optional {
            return Ok(None);
        }
        Err(self.invalid(
            &r.loc,
            format!("value '{}' is not defined at this point (defined: {})", r.name, sorted_names(env)),
        ))
    }

    fn read_all(&mut self, env: &Env, refs: &[ValueRef]) -> R<Vec<Option<Value>>> {
        refs.iter().map(|r| self.read(env, r)).collect()
    }

    fn attrs(&self, list: &[super::ast::Attr]) -> R<Attrs> {
        let mut attrs = Attrs::new();
        for a in list {
            let value = match &a.spec {
                AttrSpec::Lit(v) => v.clone(),
                AttrSpec::Value { value, optional } => match self.spec(value, &a.loc)? {
                    Scalar::Int(i) => AttrValue::Int(i),
                    Scalar::Float(f) => AttrValue::Float(f),
                    Scalar::Bool(b) => AttrValue::Bool(b),
                    Scalar::Str(s) => AttrValue::Str(s.into()),
                    Scalar::Absent if *optional => continue,
                    Scalar::Absent => return Err(self.invalid(&a.loc, format!("attribute '{}' is unset in this model's config (mark it {{ expr = \"..\", optional = true }} to omit it)", a.name))),
                },
                AttrSpec::Ints(es) => {
                    let mut v = Vec::new();
                    for e in es {
                        match self.eval(e, &a.loc)? {
                            Scalar::Int(i) => v.push(i),
                            other => return Err(self.invalid(&a.loc, format!("list attribute '{}' holds integers, got {} ({other})", a.name, other.kind()))),
                        }
                    }
                    AttrValue::Ints(v.into())
                }
            };
            attrs.set(&a.name, value);
        }
        Ok(attrs)
    }

    fn cond(&self, env: &Env, c: &Cond, loc: &Loc) -> R<bool> {
        Ok(match c {
            Cond::OpRegistered(op) => self.b.has_op(op),
            Cond::Weight(w) => {
                let pattern = self.model.weights.get(w).map(|d| d.pattern.clone()).unwrap_or_default();
                self.b.has_weight(&self.pattern(&pattern, loc)?)
            }
            Cond::Defined(n) => env.contains_key(n),
            Cond::NotDefined(n) => !env.contains_key(n),
            Cond::Config(e) => self.eval(e, loc)?.truthy(),
        })
    }

    fn bind(&self, env: &mut Env, loc: &Loc, names: &[String], values: Vec<Value>, what: &str) -> R<()> {
        if names.len() != values.len() {
            return Err(self.invalid(
                loc,
                format!("{what} gives {} outputs, the step names {} ({})", values.len(), names.len(), names.join(", ")),
            ));
        }
        for (n, v) in names.iter().zip(values) {
            if n != "_" {
                env.insert(n.clone(), v);
            }
        }
        Ok(())
    }

    fn steps(&mut self, env: &mut Env, steps: &[Step]) -> R<()> {
        for s in steps {
            // A loop names its scope per iteration (it may use the loop variable).
            if let (Some(sc), false) = (&s.scope, matches!(s.action, Action::Repeat { .. })) {
                self.scope = self.pattern(sc, &s.loc)?;
                self.b.set_scope(&self.scope);
            }
            let mut take = true;
            for (c, loc) in &s.conds {
                take &= self.cond(env, c, loc)?;
            }
            if take {
                self.action(env, s)?;
            } else {
                self.steps(env, &s.otherwise)?;
            }
        }
        Ok(())
    }

    /// Counts one step or loop iteration against [`MAX_STEPS_RUN`].
    fn tick(&mut self, loc: &Loc) -> R<()> {
        self.steps_run += 1;
        if self.steps_run > MAX_STEPS_RUN {
            return Err(
                self.invalid(loc, format!("the model runs more than {MAX_STEPS_RUN} steps (a `repeat` too large?)"))
            );
        }
        Ok(())
    }

    fn action(&mut self, env: &mut Env, s: &Step) -> R<()> {
        self.tick(&s.loc)?;
        match &s.action {
            Action::Op { op, inputs, outputs, attrs } => {
                let ins: Vec<Value> = self.read_all(env, inputs)?.into_iter().flatten().collect();
                let attrs = self.attrs(attrs)?;
                let outs = self.b.op(op, &ins, attrs).map_err(|e| locate_build_error(self.file, &s.loc, e))?;
                self.bind(env, &s.loc, outputs, outs, &format!("op '{op}'"))
            }
            Action::Set { name, from } => {
                if let Some(v) = self.read(env, from)? {
                    env.insert(name.clone(), v);
                }
                Ok(())
            }
            Action::Call { block, inputs, outputs } => {
                let model = self.model;
                let Some(b) = model.blocks.get(block) else {
                    return Err(self.invalid(&s.loc, format!("unknown block '{block}'")));
                };
                let args = self.read_all(env, inputs)?;
                let results = self.call(b, args)?;
                self.bind(env, &s.loc, outputs, results, &format!("block '{block}'"))
            }
            Action::Repeat { count, var, body } => {
                let n = self.int(count, &s.loc, "`repeat`")?;
                for i in 0..n {
                    self.tick(&s.loc)?;
                    self.vars.push((var.clone(), i));
                    self.scope = match &s.scope {
                        Some(sc) => self.pattern(sc, &s.loc)?,
                        None => format!("{var} {i}"),
                    };
                    self.b.set_scope(&self.scope);
                    let r = self.steps(env, body);
                    self.vars.pop();
                    r?;
                }
                Ok(())
            }
            Action::Group { body } => self.steps(env, body),
        }
    }

    fn call(&mut self, b: &Block, args: Vec<Option<Value>>) -> R<Vec<Value>> {
        let mut inner = Env::new();
        for (p, a) in b.params.iter().zip(args) {
            if let Some(v) = a {
                inner.insert(p.clone(), v);
            }
        }
        self.steps(&mut inner, &b.body)?;
        b.results
            .iter()
            .map(|r| {
                inner.get(r).copied().ok_or_else(|| {
                    self.invalid(
                        &b.loc,
                        format!("result '{r}' was not bound by the block's body (bound: {})", sorted_names(&inner)),
                    )
                })
            })
            .collect()
    }
}

fn sorted_names(env: &Env) -> String {
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

/// Builds the graph of `model` for `config` through `b`.
pub fn run(
    model: &Compiled,
    file: &str,
    config: &ModelConfig,
    options: &BuildOptions,
    b: &mut dyn GraphBuilder,
) -> R<()> {
    let at_top = |message: String| BuildError::Invalid { scope: file.to_string(), message };
    let view = ConfigView::new(config).map_err(at_top)?;
    let eval = std::cell::RefCell::new(ValueEval { model, config: &view, done: BTreeMap::new(), active: Vec::new() });
    for (name, (_, loc)) in &model.values {
        eval.name(name)
            .map_err(|m| locate_build_error(file, loc, BuildError::Invalid { scope: String::new(), message: m }))?;
    }
    let values = eval.into_inner().done;
    let mut run =
        Run { model, file, config: view, values, vars: Vec::new(), options, b, scope: "inputs".into(), steps_run: 0 };
    run.b.set_scope("inputs");
    // Inputs without placeholders are declared up front, in file order.
    for decl in &model.inputs {
        if !decl.name.contains('{') {
            run.declare_input(&decl.local)?;
        }
    }
    run.scope = "graph".into();
    run.b.set_scope("graph");
    let mut env = Env::new();
    run.steps(&mut env, &model.graph)?;
    for (name, r) in &model.outputs {
        let Some(v) = run.read(&env, r)? else {
            return Err(run.invalid(&r.loc, format!("output '{name}' is absent")));
        };
        run.b.output(name, v).map_err(|e| locate_build_error(file, &r.loc, e))?;
    }
    Ok(())
}
