//! From the serde shape (`raw`) to a checked model: expressions parsed, dtypes and step kinds
//! validated, every name a step reads declared somewhere, every item tagged with its `Loc`.
//! All of this happens at load time, before any config or weights are seen.

use super::ast::*;
use super::error::{Lines, Loc, TomlError};
use super::expr::{Expr, Scalar};
use super::raw::{RawBlock, RawFile, RawInput, RawStep};
use rtllm_plugin_api::{AttrValue, DType};
use std::collections::{BTreeMap, BTreeSet};
use toml::Spanned;

struct Cx<'a> {
    file: &'a str,
    lines: Lines,
}

type R<T> = Result<T, TomlError>;

impl Cx<'_> {
    fn loc<T>(&self, s: &Spanned<T>, key: impl Into<String>) -> Loc {
        Loc { line: self.lines.line(s.span().start), key: key.into() }
    }

    fn err(&self, loc: &Loc, message: impl Into<String>) -> TomlError {
        TomlError::Invalid {
            file: self.file.to_string(),
            line: loc.line,
            key: loc.key.clone(),
            message: message.into(),
        }
    }

    fn expr(&self, src: &str, loc: &Loc) -> R<Expr> {
        Expr::parse(src).map_err(|m| self.err(loc, format!("in expression \"{src}\": {m}")))
    }

    /// A `[values]` entry or attribute: number, bool, expression string, `{ string = ".." }`.
    fn value_spec(&self, v: &toml::Value, loc: &Loc) -> R<(ValueSpec, bool)> {
        Ok(match v {
            toml::Value::Integer(i) => (ValueSpec::Lit(Scalar::Int(*i)), false),
            toml::Value::Float(f) => (ValueSpec::Lit(Scalar::Float(*f)), false),
            toml::Value::Boolean(b) => (ValueSpec::Lit(Scalar::Bool(*b)), false),
            toml::Value::String(s) => (ValueSpec::Expr(self.expr(s, loc)?), false),
            toml::Value::Table(t) => {
                let keys: BTreeSet<&str> = t.keys().map(String::as_str).collect();
                match (t.get("string"), t.get("expr"), t.get("optional")) {
                    (Some(toml::Value::String(s)), None, None) if keys.len() == 1 => {
                        (ValueSpec::Lit(Scalar::Str(s.clone())), false)
                    }
                    (None, Some(toml::Value::String(e)), opt) if keys.len() == 1 + usize::from(opt.is_some()) => {
                        let optional = match opt {
                            None => false,
                            Some(toml::Value::Boolean(b)) => *b,
                            Some(_) => return Err(self.err(loc, "`optional` must be true or false")),
                        };
                        (ValueSpec::Expr(self.expr(e, loc)?), optional)
                    }
                    _ => {
                        return Err(self.err(
                            loc,
                            "a table value must be { string = \"..\" } or { expr = \"..\", optional = true }",
                        ))
                    }
                }
            }
            other => {
                return Err(self.err(
                    loc,
                    format!(
                        "unsupported value {other} (use a number, bool, expression string or {{ string = \"..\" }})"
                    ),
                ))
            }
        })
    }

    fn attr(&self, name: &Spanned<String>, v: &Spanned<toml::Value>, key: &str) -> R<Attr> {
        let loc = self.loc(v, format!("{key}.attrs.{}", name.get_ref()));
        let spec = match v.get_ref() {
            toml::Value::Array(items) => {
                let ints = items
                    .iter()
                    .map(|i| match i {
                        toml::Value::Integer(n) => Ok(Expr::Int(*n)),
                        toml::Value::String(s) => self.expr(s, &loc),
                        other => {
                            Err(self.err(&loc, format!("list attributes hold integers or expressions, got {other}")))
                        }
                    })
                    .collect::<R<Vec<_>>>()?;
                AttrSpec::Ints(ints)
            }
            other => match self.value_spec(other, &loc)? {
                (ValueSpec::Lit(Scalar::Int(i)), _) => AttrSpec::Lit(AttrValue::Int(i)),
                (ValueSpec::Lit(Scalar::Float(f)), _) => AttrSpec::Lit(AttrValue::Float(f)),
                (ValueSpec::Lit(Scalar::Bool(b)), _) => AttrSpec::Lit(AttrValue::Bool(b)),
                (ValueSpec::Lit(Scalar::Str(s)), _) => AttrSpec::Lit(AttrValue::Str(s.into())),
                (value, optional) => AttrSpec::Value { value, optional },
            },
        };
        Ok(Attr { name: name.get_ref().clone(), spec, loc })
    }

    fn input(
        &self,
        local: &Spanned<String>,
        raw: &Spanned<RawInput>,
        values: &BTreeMap<String, (ValueSpec, Loc)>,
    ) -> R<InputDecl> {
        let key = format!("inputs.{}", local.get_ref());
        let r = raw.get_ref();
        let dloc = self.loc(&r.dtype, format!("{key}.dtype"));
        let dtype = match r.dtype.get_ref().as_str() {
            "kv_cache" => DTypeSpec::KvCache,
            s => DTypeSpec::Fixed(DType::parse(s).ok_or_else(|| {
                let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).chain(["kv_cache"]).collect();
                self.err(&dloc, format!("unknown dtype '{s}' (known: {})", names.join(", ")))
            })?),
        };
        let mut dims = Vec::new();
        for (i, d) in r.dims.iter().enumerate() {
            let loc = self.loc(d, format!("{key}.dims[{i}]"));
            let spec = match d.get_ref() {
                toml::Value::Integer(n) if *n >= 0 => DimSpec::Expr(Expr::Int(*n)),
                toml::Value::String(s) => {
                    let e = self.expr(s, &loc)?;
                    match e.as_bare_name() {
                        Some(n) if !values.contains_key(n) => DimSpec::Sym(n.to_string()),
                        _ => DimSpec::Expr(e),
                    }
                }
                other => {
                    return Err(self
                        .err(&loc, format!("a dim is a non-negative integer, a symbol or an expression, got {other}")))
                }
            };
            dims.push((spec, loc));
        }
        let name = match &r.name {
            Some(n) => {
                check_pattern(n.get_ref()).map_err(|m| self.err(&self.loc(n, format!("{key}.name")), m))?;
                n.get_ref().clone()
            }
            None => local.get_ref().clone(),
        };
        Ok(InputDecl { local: local.get_ref().clone(), name, dtype, dims, loc: self.loc(local, key) })
    }

    fn value_ref(&self, s: &Spanned<String>, key: String) -> R<ValueRef> {
        let loc = self.loc(s, key);
        let (name, optional) = match s.get_ref().strip_suffix('?') {
            Some(n) => (n, true),
            None => (s.get_ref().as_str(), false),
        };
        check_ident(name).map_err(|m| self.err(&loc, m))?;
        Ok(ValueRef { name: name.to_string(), optional, loc })
    }

    fn names(&self, list: &[Spanned<String>], key: &str) -> R<Vec<String>> {
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                let n = s.get_ref();
                if n != "_" {
                    check_ident(n).map_err(|m| self.err(&self.loc(s, format!("{key}[{i}]")), m))?;
                }
                Ok(n.clone())
            })
            .collect()
    }

    fn steps(&self, raw: &[Spanned<RawStep>], key: &str) -> R<Vec<Step>> {
        raw.iter().enumerate().map(|(i, s)| self.step(s, &format!("{key}[{i}]"))).collect()
    }

    fn step(&self, s: &Spanned<RawStep>, key: &str) -> R<Step> {
        let r = s.get_ref();
        let at = |field: &str| format!("{key}.{field}");
        let step_loc = self.loc(s, key.to_string());
        let kinds: Vec<&str> = [
            ("op", r.op.is_some()),
            ("set", r.set.is_some()),
            ("call", r.call.is_some()),
            ("repeat", r.repeat.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        if kinds.len() > 1 {
            return Err(self.err(&step_loc, format!("a step does one thing, this one has {}", kinds.join(" and "))));
        }
        let misplaced = |field: &str, present: bool, allowed: bool| -> R<()> {
            if present && !allowed {
                return Err(self.err(
                    &step_loc,
                    format!(
                        "`{field}` does not belong in this step (kind: {})",
                        kinds.first().copied().unwrap_or("group")
                    ),
                ));
            }
            Ok(())
        };
        let is = |k: &str| kinds.first() == Some(&k);
        misplaced("inputs", r.inputs.is_some(), is("op") || is("call"))?;
        misplaced("outputs", r.outputs.is_some(), is("op") || is("call"))?;
        misplaced("attrs", r.attrs.is_some(), is("op"))?;
        misplaced("from", r.from.is_some(), is("set"))?;
        misplaced("var", r.var.is_some(), is("repeat"))?;
        misplaced("body", r.body.is_some(), is("repeat") || kinds.is_empty())?;

        let inputs = |this: &Self| -> R<Vec<ValueRef>> {
            let list = r.inputs.as_deref().unwrap_or_default();
            list.iter().enumerate().map(|(i, v)| this.value_ref(v, format!("{key}.inputs[{i}]"))).collect()
        };
        let outputs = |this: &Self| -> R<Vec<String>> {
            let list = r.outputs.as_deref().unwrap_or_default();
            if list.is_empty() {
                return Err(this.err(&step_loc, "`outputs` must name at least one value (use \"_\" to discard)"));
            }
            this.names(list, &at("outputs"))
        };
        let (loc, action) = if let Some(op) = &r.op {
            let mut attrs = Vec::new();
            for (name, v) in r.attrs.iter().flatten() {
                attrs.push(self.attr(name, v, key)?);
            }
            attrs.sort_by_key(|a| a.loc.line);
            let action = Action::Op { op: op.get_ref().clone(), inputs: inputs(self)?, outputs: outputs(self)?, attrs };
            (self.loc(op, at("op")), action)
        } else if let Some(set) = &r.set {
            let loc = self.loc(set, at("set"));
            check_ident(set.get_ref()).map_err(|m| self.err(&loc, m))?;
            let from = r.from.as_ref().ok_or_else(|| self.err(&loc, "`set` needs `from` (the value to bind)"))?;
            (loc, Action::Set { name: set.get_ref().clone(), from: self.value_ref(from, at("from"))? })
        } else if let Some(call) = &r.call {
            (
                self.loc(call, at("call")),
                Action::Call { block: call.get_ref().clone(), inputs: inputs(self)?, outputs: outputs(self)? },
            )
        } else if let Some(count) = &r.repeat {
            let loc = self.loc(count, at("repeat"));
            let count = match count.get_ref() {
                toml::Value::Integer(n) if *n >= 0 => Expr::Int(*n),
                toml::Value::String(s) => self.expr(s, &loc)?,
                other => return Err(self.err(&loc, format!("`repeat` is a count or an expression, got {other}"))),
            };
            let var = match &r.var {
                Some(v) => {
                    check_ident(v.get_ref()).map_err(|m| self.err(&self.loc(v, at("var")), m))?;
                    v.get_ref().clone()
                }
                None => "layer".to_string(),
            };
            let body = self.steps(r.body.as_deref().unwrap_or_default(), &at("body"))?;
            (loc, Action::Repeat { count, var, body })
        } else if let Some(body) = &r.body {
            (step_loc.clone(), Action::Group { body: self.steps(body, &at("body"))? })
        } else {
            return Err(self.err(&step_loc, "a step needs one of `op`, `set`, `call`, `repeat` or `body`"));
        };

        let mut conds = Vec::new();
        let mut cond = |field: &str, v: &Option<Spanned<String>>, make: fn(String) -> Cond| {
            if let Some(v) = v {
                conds.push((make(v.get_ref().clone()), self.loc(v, at(field))));
            }
        };
        cond("if_op_registered", &r.if_op_registered, Cond::OpRegistered);
        cond("if_weight", &r.if_weight, Cond::Weight);
        cond("if_defined", &r.if_defined, Cond::Defined);
        cond("unless_defined", &r.unless_defined, Cond::NotDefined);
        if let Some(v) = &r.if_config {
            let loc = self.loc(v, at("if_config"));
            conds.push((Cond::Config(self.expr(v.get_ref(), &loc)?), loc));
        }
        let otherwise = self.steps(r.otherwise.as_deref().unwrap_or_default(), &at("else"))?;
        if !otherwise.is_empty() && conds.is_empty() {
            return Err(self.err(
                &loc,
                "`else` needs a condition (if_op_registered, if_weight, if_defined, unless_defined or if_config)",
            ));
        }
        let scope = match &r.scope {
            Some(sc) => {
                check_pattern(sc.get_ref()).map_err(|m| self.err(&self.loc(sc, at("scope")), m))?;
                Some(sc.get_ref().clone())
            }
            None => None,
        };
        Ok(Step { loc, scope, conds, action, otherwise })
    }

    fn block(&self, name: &Spanned<String>, b: &Spanned<RawBlock>) -> R<Block> {
        let key = format!("blocks.{}", name.get_ref());
        let r = b.get_ref();
        Ok(Block {
            params: self.names(&r.params, &format!("{key}.params"))?,
            results: self.names(&r.results, &format!("{key}.results"))?,
            body: self.steps(&r.body, &format!("{key}.body"))?,
            loc: self.loc(name, key),
        })
    }
}

fn check_ident(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid name (letters, digits and _, not starting with a digit)"))
    }
}

/// Checks `{var}` placeholders are well formed.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let mut rest = p;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unmatched '}}' in \"{p}\""));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("unclosed '{{' in \"{p}\""))?;
        check_ident(&rest[open + 1..open + close]).map_err(|m| format!("placeholder in \"{p}\": {m}"))?;
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// Sorts spanned map entries into file order.
fn in_file_order<K, V>(map: &BTreeMap<Spanned<K>, V>) -> Vec<(&Spanned<K>, &V)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

/// Parses and checks a model file's text. `file` names it in errors.
pub fn compile(text: &str, file: &str) -> R<Compiled> {
    let cx = Cx { file, lines: Lines::new(text) };
    let raw: RawFile = toml::from_str(text).map_err(|e| TomlError::Syntax {
        file: file.to_string(),
        line: e.span().map(|s| cx.lines.line(s.start)).unwrap_or(1),
        message: e.message().to_string(),
    })?;
    let mut values = BTreeMap::new();
    for (k, v) in in_file_order(&raw.values) {
        let loc = cx.loc(k, format!("values.{}", k.get_ref()));
        check_ident(k.get_ref()).map_err(|m| cx.err(&loc, m))?;
        let (spec, optional) = cx.value_spec(v.get_ref(), &loc)?;
        if optional {
            return Err(cx.err(&loc, "[values] entries cannot be optional"));
        }
        values.insert(k.get_ref().clone(), (spec, loc));
    }
    let mut inputs = Vec::new();
    for (k, v) in in_file_order(&raw.inputs) {
        inputs.push(cx.input(k, v, &values)?);
    }
    let mut weights = BTreeMap::new();
    for (k, v) in in_file_order(&raw.weights) {
        let loc = cx.loc(v, format!("weights.{}", k.get_ref()));
        check_ident(k.get_ref()).map_err(|m| cx.err(&loc, m))?;
        check_pattern(v.get_ref()).map_err(|m| cx.err(&loc, m))?;
        if inputs.iter().any(|i: &InputDecl| &i.local == k.get_ref()) {
            return Err(cx.err(&loc, format!("'{}' is declared both as an input and as a weight", k.get_ref())));
        }
        weights.insert(k.get_ref().clone(), WeightDecl { pattern: v.get_ref().clone(), loc });
    }
    let mut blocks = BTreeMap::new();
    for (k, v) in in_file_order(&raw.blocks) {
        blocks.insert(k.get_ref().clone(), cx.block(k, v)?);
    }
    let graph = cx.steps(&raw.graph, "graph")?;
    let mut outputs = Vec::new();
    for (k, v) in in_file_order(&raw.outputs) {
        outputs.push((k.get_ref().clone(), cx.value_ref(v, format!("outputs.{}", k.get_ref()))?));
    }
    if outputs.is_empty() {
        return Err(TomlError::Invalid {
            file: file.to_string(),
            line: 1,
            key: "outputs".into(),
            message: "the model declares no outputs (e.g. [outputs] logits = \"logits\")".into(),
        });
    }
    let model = Compiled {
        name: raw.model.name.get_ref().clone(),
        description: raw.model.description.clone(),
        values,
        inputs,
        weights,
        blocks,
        graph,
        outputs,
    };
    super::check::check_names(&model, &cx_err(file))?;
    super::limits::check_calls(&model, &cx_err(file))?;
    Ok(model)
}

/// An error constructor for the name checker.
pub fn cx_err(file: &str) -> impl Fn(&Loc, String) -> TomlError + '_ {
    move |loc, message| TomlError::Invalid { file: file.to_string(), line: loc.line, key: loc.key.clone(), message }
}
