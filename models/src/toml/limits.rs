//! How deep a model file may nest, so that no file can exhaust the stack of the code that
//! compiles, checks or runs it: block calls form no cycle and chain at most
//! [`MAX_CALL_DEPTH`] blocks deep (checked at load, here); expressions nest at most
//! [`MAX_EXPR_DEPTH`] levels (checked by the expression parser); `[values]` entries name each
//! other at most [`MAX_VALUE_CHAIN`] deep (checked as they are evaluated); a build runs at most
//! [`MAX_STEPS_RUN`] steps and loop iterations (checked as it runs). Step bodies and TOML
//! tables nest only as deep as the TOML parser allows (it has a recursion limit of its own).

use super::ast::{Action, Compiled, Step};
use super::error::{Loc, TomlError};
use std::collections::BTreeMap;

/// The longest chain of block calls (a block calling a block calling ...).
pub const MAX_CALL_DEPTH: usize = 32;
/// The deepest expression: parentheses, unary minus, `sqrt` and operator chains each count.
pub const MAX_EXPR_DEPTH: usize = 64;
/// The longest chain of `[values]` entries naming each other.
pub const MAX_VALUE_CHAIN: usize = 64;
/// The most steps and loop iterations one build runs (a 200-layer model runs a few thousand),
/// so a huge or nested `repeat` ends with an error instead of running for hours.
pub const MAX_STEPS_RUN: usize = 1 << 20;

/// Every `call` in `steps` (any branch, any nesting): block name and where it is called.
fn calls_in<'a>(steps: &'a [Step], out: &mut Vec<(&'a str, &'a Loc)>) {
    for s in steps {
        match &s.action {
            Action::Call { block, .. } => out.push((block, &s.loc)),
            Action::Repeat { body, .. } | Action::Group { body } => calls_in(body, out),
            Action::Op { .. } | Action::Set { .. } => {}
        }
        calls_in(&s.otherwise, out);
    }
}

struct CallGraph<'a> {
    calls: BTreeMap<&'a str, Vec<(&'a str, &'a Loc)>>,
    /// Blocks already known to call no cycle, with the depth of their deepest chain.
    depth: BTreeMap<&'a str, usize>,
    err: &'a dyn Fn(&Loc, String) -> TomlError,
}

impl<'a> CallGraph<'a> {
    /// The depth of the deepest call chain from `block` (1: it calls no block), reached
    /// through `path` (the calls that led here, each with where it was made).
    fn walk(&mut self, block: &'a str, path: &mut Vec<(&'a str, &'a Loc)>) -> Result<usize, TomlError> {
        if let Some(&d) = self.depth.get(block) {
            return Ok(d);
        }
        let chain = |path: &[(&str, &Loc)], from: usize| {
            let names: Vec<&str> = path[from..].iter().map(|(b, _)| *b).chain([block]).collect();
            names.join(" -> ")
        };
        if let Some(at) = path.iter().position(|(b, _)| *b == block) {
            let (_, loc) = path[path.len() - 1];
            return Err((self.err)(
                loc,
                format!("block '{block}' calls itself ({}); blocks may not recurse", chain(path, at)),
            ));
        }
        if path.len() >= MAX_CALL_DEPTH {
            let (_, loc) = path[path.len() - 1];
            return Err((self.err)(
                loc,
                format!("block calls nest more than {MAX_CALL_DEPTH} deep ({})", chain(path, 0)),
            ));
        }
        let callees = self.calls.get(block).cloned().unwrap_or_default();
        let mut deepest = 0;
        for (callee, loc) in callees {
            path.push((block, loc));
            let d = self.walk(callee, path);
            path.pop();
            deepest = deepest.max(d?);
        }
        self.depth.insert(block, deepest + 1);
        Ok(deepest + 1)
    }
}

/// Refuses block calls that recurse (directly or through other blocks) or chain deeper than
/// [`MAX_CALL_DEPTH`]; unknown block names are the name checker's to report.
pub fn check_calls(model: &Compiled, err: &dyn Fn(&Loc, String) -> TomlError) -> Result<(), TomlError> {
    let mut calls = BTreeMap::new();
    for (name, b) in &model.blocks {
        let mut out = Vec::new();
        calls_in(&b.body, &mut out);
        out.retain(|(callee, _)| model.blocks.contains_key(*callee));
        calls.insert(name.as_str(), out);
    }
    let mut graph = CallGraph { calls, depth: BTreeMap::new(), err };
    for name in model.blocks.keys() {
        graph.walk(name, &mut Vec::new())?;
    }
    Ok(())
}
