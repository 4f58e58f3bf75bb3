//! Load-time name checks of a compiled model: every value a step reads is an input, a weight,
//! a block parameter or produced by some step before it (or anywhere in the enclosing loop
//! body, for values threaded across iterations); every expression name is a `[values]` entry
//! or a loop variable in scope; calls match their block's parameters and results.

use super::ast::{Action, AttrSpec, Compiled, Cond, Step, ValueRef, ValueSpec};
use super::error::{did_you_mean, Loc, TomlError};
use super::expr::Expr;
use std::collections::BTreeSet;

type Err<'a> = dyn Fn(&Loc, String) -> TomlError + 'a;

struct Checker<'a> {
    model: &'a Compiled,
    err: &'a Err<'a>,
    /// Loop variables visible to expressions.
    vars: Vec<String>,
}

/// Names a list of steps may bind (outputs and `set` targets, in any branch).
fn bound_by(steps: &[Step], out: &mut BTreeSet<String>) {
    for s in steps {
        match &s.action {
            Action::Op { outputs, .. } | Action::Call { outputs, .. } => {
                out.extend(outputs.iter().filter(|o| *o != "_").cloned())
            }
            Action::Set { name, .. } => {
                out.insert(name.clone());
            }
            Action::Repeat { body, .. } | Action::Group { body } => bound_by(body, out),
        }
        bound_by(&s.otherwise, out);
    }
}

impl Checker<'_> {
    fn value(&self, r: &ValueRef, bound: &BTreeSet<String>) -> Result<(), TomlError> {
        let m = self.model;
        if bound.contains(&r.name) || m.weights.contains_key(&r.name) || m.inputs.iter().any(|i| i.local == r.name) {
            return Ok(());
        }
        let known = bound
            .iter()
            .map(String::as_str)
            .chain(m.weights.keys().map(String::as_str))
            .chain(m.inputs.iter().map(|i| i.local.as_str()));
        Err((self.err)(
            &r.loc,
            format!(
                "unknown value '{}': not an input, a weight or an earlier step's output{}",
                r.name,
                did_you_mean(&r.name, known)
            ),
        ))
    }

    fn expr(&self, e: &Expr, loc: &Loc) -> Result<(), TomlError> {
        match e {
            Expr::Name(n) if !self.model.values.contains_key(n) && !self.vars.contains(n) => {
                let known = self.model.values.keys().map(String::as_str).chain(self.vars.iter().map(String::as_str));
                Err((self.err)(
                    loc,
                    format!(
                        "unknown name '{n}' in an expression: not a [values] entry or loop variable{}",
                        did_you_mean(n, known)
                    ),
                ))
            }
            Expr::Neg(a) | Expr::Sqrt(a) => self.expr(a, loc),
            Expr::Bin(_, a, b) => self.expr(a, loc).and_then(|_| self.expr(b, loc)),
            _ => Ok(()),
        }
    }

    fn steps(&mut self, steps: &[Step], bound: &mut BTreeSet<String>) -> Result<(), TomlError> {
        for s in steps {
            for (c, loc) in &s.conds {
                match c {
                    Cond::Weight(w) if !self.model.weights.contains_key(w) => {
                        let hint = did_you_mean(w, self.model.weights.keys().map(String::as_str));
                        return Err((self.err)(loc, format!("'{w}' is not declared in [weights]{hint}")));
                    }
                    Cond::Config(e) => self.expr(e, loc)?,
                    _ => {}
                }
            }
            let mut branch = bound.clone();
            self.action(s, &mut branch)?;
            let mut other = bound.clone();
            self.steps(&s.otherwise, &mut other)?;
            bound.extend(branch);
            bound.extend(other);
        }
        Ok(())
    }

    fn action(&mut self, s: &Step, bound: &mut BTreeSet<String>) -> Result<(), TomlError> {
        match &s.action {
            Action::Op { inputs, outputs, attrs, .. } => {
                for r in inputs {
                    self.value(r, bound)?;
                }
                for a in attrs {
                    match &a.spec {
                        AttrSpec::Value { value: ValueSpec::Expr(e), .. } => self.expr(e, &a.loc)?,
                        AttrSpec::Ints(es) => es.iter().try_for_each(|e| self.expr(e, &a.loc))?,
                        _ => {}
                    }
                }
                bound.extend(outputs.iter().filter(|o| *o != "_").cloned());
            }
            Action::Set { name, from } => {
                self.value(from, bound)?;
                bound.insert(name.clone());
            }
            Action::Call { block, inputs, outputs } => {
                let Some(b) = self.model.blocks.get(block) else {
                    let hint = did_you_mean(block, self.model.blocks.keys().map(String::as_str));
                    return Err((self.err)(&s.loc, format!("unknown block '{block}'{hint}")));
                };
                if inputs.len() != b.params.len() || outputs.len() != b.results.len() {
                    return Err((self.err)(
                        &s.loc,
                        format!(
                            "block '{block}' takes {} inputs ({}) and gives {} outputs ({}); this call has {} and {}",
                            b.params.len(),
                            b.params.join(", "),
                            b.results.len(),
                            b.results.join(", "),
                            inputs.len(),
                            outputs.len()
                        ),
                    ));
                }
                for r in inputs {
                    self.value(r, bound)?;
                }
                bound.extend(outputs.iter().filter(|o| *o != "_").cloned());
            }
            Action::Repeat { count, var, body } => {
                self.expr(count, &s.loc)?;
                // Values bound anywhere in the body are visible from the next iteration on.
                bound_by(body, bound);
                self.vars.push(var.clone());
                let r = self.steps(body, bound);
                self.vars.pop();
                r?;
            }
            Action::Group { body } => self.steps(body, bound)?,
        }
        Ok(())
    }
}

/// Runs the checks over the graph, each block and the outputs.
pub fn check_names(model: &Compiled, err: &Err<'_>) -> Result<(), TomlError> {
    let mut all_vars = BTreeSet::new();
    fn vars_of(steps: &[Step], out: &mut BTreeSet<String>) {
        for s in steps {
            if let Action::Repeat { var, body, .. } = &s.action {
                out.insert(var.clone());
                vars_of(body, out);
            }
            if let Action::Group { body } = &s.action {
                vars_of(body, out);
            }
            vars_of(&s.otherwise, out);
        }
    }
    vars_of(&model.graph, &mut all_vars);
    for (spec, loc) in model.values.values() {
        if let ValueSpec::Expr(e) = spec {
            Checker { model, err, vars: Vec::new() }.expr(e, loc)?;
        }
    }
    for input in &model.inputs {
        for (d, loc) in &input.dims {
            if let super::ast::DimSpec::Expr(e) = d {
                Checker { model, err, vars: all_vars.iter().cloned().collect() }.expr(e, loc)?;
            }
        }
    }
    for b in model.blocks.values() {
        let mut c = Checker { model, err, vars: all_vars.iter().cloned().collect() };
        let mut bound: BTreeSet<String> = b.params.iter().cloned().collect();
        c.steps(&b.body, &mut bound)?;
        for r in &b.results {
            if !bound.contains(r) {
                return Err(err(&b.loc, format!("result '{r}' is never bound in the block's body")));
            }
        }
    }
    let mut c = Checker { model, err, vars: Vec::new() };
    let mut bound = BTreeSet::new();
    c.steps(&model.graph, &mut bound)?;
    for (_, r) in &model.outputs {
        c.value(r, &bound)?;
    }
    Ok(())
}
