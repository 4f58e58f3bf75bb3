//! The serde shape of a TOML model file, with spans kept (`toml::Spanned`) so every later
//! error can name the line. Validation and compilation happen in `compile`.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub model: RawModel,
    #[serde(default)]
    pub values: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub inputs: BTreeMap<Spanned<String>, Spanned<RawInput>>,
    #[serde(default)]
    pub weights: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub blocks: BTreeMap<Spanned<String>, Spanned<RawBlock>>,
    #[serde(default)]
    pub graph: Vec<Spanned<RawStep>>,
    #[serde(default)]
    pub outputs: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// The runtime name (may hold `{var}` placeholders); defaults to the table key.
    pub name: Option<Spanned<String>>,
    pub dtype: Spanned<String>,
    pub dims: Vec<Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawBlock {
    pub params: Vec<Spanned<String>>,
    pub results: Vec<Spanned<String>>,
    pub body: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub scope: Option<Spanned<String>>,
    // op
    pub op: Option<Spanned<String>>,
    pub inputs: Option<Vec<Spanned<String>>>,
    pub outputs: Option<Vec<Spanned<String>>>,
    pub attrs: Option<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    // set
    pub set: Option<Spanned<String>>,
    pub from: Option<Spanned<String>>,
    // call
    pub call: Option<Spanned<String>>,
    // repeat / group
    pub repeat: Option<Spanned<toml::Value>>,
    pub var: Option<Spanned<String>>,
    pub body: Option<Vec<Spanned<RawStep>>>,
    // conditions
    pub if_op_registered: Option<Spanned<String>>,
    pub if_weight: Option<Spanned<String>>,
    pub if_defined: Option<Spanned<String>>,
    pub unless_defined: Option<Spanned<String>>,
    pub if_config: Option<Spanned<String>>,
    #[serde(rename = "else")]
    pub otherwise: Option<Vec<Spanned<RawStep>>>,
}
