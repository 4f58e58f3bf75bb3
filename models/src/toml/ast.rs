//! The checked form of a TOML model file that `compile` produces and `check` and `exec` walk:
//! values, inputs, weights, blocks and steps, each tagged with its `Loc` (line and key path).

use super::error::Loc;
use super::expr::{Expr, Scalar};
use rtllm_plugin_api::{AttrValue, DType};
use std::collections::BTreeMap;

/// A constant or an expression.
#[derive(Clone, Debug)]
pub enum ValueSpec {
    Lit(Scalar),
    Expr(Expr),
}

/// An op attribute as written.
#[derive(Clone, Debug)]
pub enum AttrSpec {
    Lit(AttrValue),
    /// Omitted from the op when `optional` and the value is unset.
    Value {
        value: ValueSpec,
        optional: bool,
    },
    Ints(Vec<Expr>),
}

#[derive(Clone, Debug)]
pub struct Attr {
    pub name: String,
    pub spec: AttrSpec,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum DimSpec {
    Sym(String),
    Expr(Expr),
}

#[derive(Clone, Debug)]
pub enum DTypeSpec {
    Fixed(DType),
    /// The build's KV cache dtype.
    KvCache,
}

#[derive(Clone, Debug)]
pub struct InputDecl {
    pub local: String,
    /// Runtime name; may hold `{var}` placeholders.
    pub name: String,
    pub dtype: DTypeSpec,
    pub dims: Vec<(DimSpec, Loc)>,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub struct WeightDecl {
    pub pattern: String,
    pub loc: Loc,
}

/// A value a step reads; `name?` is optional (skipped when undefined or the weight is absent).
#[derive(Clone, Debug)]
pub struct ValueRef {
    pub name: String,
    pub optional: bool,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum Cond {
    OpRegistered(String),
    Weight(String),
    Defined(String),
    NotDefined(String),
    Config(Expr),
}

#[derive(Clone, Debug)]
pub enum Action {
    Op { op: String, inputs: Vec<ValueRef>, outputs: Vec<String>, attrs: Vec<Attr> },
    Set { name: String, from: ValueRef },
    Call { block: String, inputs: Vec<ValueRef>, outputs: Vec<String> },
    Repeat { count: Expr, var: String, body: Vec<Step> },
    Group { body: Vec<Step> },
}

#[derive(Clone, Debug)]
pub struct Step {
    pub loc: Loc,
    pub scope: Option<String>,
    pub conds: Vec<(Cond, Loc)>,
    pub action: Action,
    pub otherwise: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct Block {
    pub params: Vec<String>,
    pub results: Vec<String>,
    pub body: Vec<Step>,
    pub loc: Loc,
}

/// A checked model file.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub name: String,
    pub description: Option<String>,
    pub values: BTreeMap<String, (ValueSpec, Loc)>,
    /// In file order.
    pub inputs: Vec<InputDecl>,
    pub weights: BTreeMap<String, WeightDecl>,
    pub blocks: BTreeMap<String, Block>,
    pub graph: Vec<Step>,
    /// In file order: (output name, value, where).
    pub outputs: Vec<(String, ValueRef)>,
}
