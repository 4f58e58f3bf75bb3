//! Models defined in TOML, with no Rust: a file names config values, inputs, weights and the
//! layer graph as ops with attributes; loading it runs the same `GraphBuilder` (shape/dtype
//! inference, kernel selection, planning) as a Rust architecture. `models/configs/llama.toml`
//! is the Llama family in this format.
//!
//! # Format
//!
//! ```toml
//! [model]
//! name = "tiny"                       # required; `description` is optional
//!
//! [values]                            # derived values; expressions may name each other
//! scale = "1.0 / sqrt(config.head_dim)"
//! eps = "config.rms_norm_eps"
//!
//! [inputs]                            # named inputs: dtype and dims (symbols allowed)
//! input_ids = { dtype = "i32", dims = ["T"] }
//! k_cache = { name = "kv_cache.{layer}.k", dtype = "kv_cache",
//!             dims = ["NB", "BS", "config.num_key_value_heads", "config.head_dim"] }
//!
//! [weights]                           # local name = weight name ({layer} = loop variable)
//! embed = "model.embed_tokens.weight"
//! norm = "model.layers.{layer}.input_layernorm.weight"
//!
//! [[graph]]                           # steps run in order
//! op = "embedding"
//! inputs = ["input_ids", "embed"]
//! outputs = ["x"]
//!
//! [[graph]]
//! repeat = "config.num_hidden_layers" # the body runs once per layer, `var` (default
//! scope = "layer {layer}"             # "layer") counting from 0
//!   [[graph.body]]
//!   op = "rmsnorm"
//!   inputs = ["x", "norm"]
//!   outputs = ["x"]                   # rebinding a name threads it into the next iteration
//!   attrs = { eps = "eps" }
//!
//! [outputs]
//! logits = "x"
//! ```
//!
//! **Expressions** (in `[values]`, attribute strings, dims, `repeat`, `if_config`): integers,
//! floats, `config.<key>` (any key of the model config, nested as `config.rope_scaling.factor`),
//! `[values]` names, loop variables, `+ - * /`, unary `-`, parentheses and `sqrt(x)`.
//! `+ - *` of integers stay integers; `/` and `sqrt` give floats. A config key that exists but is
//! unset (e.g. `config.sliding_window`) is *unset*: an error, unless the attribute is written
//! `{ expr = "config.sliding_window", optional = true }`, which omits it.
//!
//! **Attributes**: numbers and bools are literals, strings are expressions, `{ string = "neox" }`
//! is a literal string, a list holds integers or expressions.
//!
//! **Inputs**: `dtype` is a dtype name (`i32`, `f32`, ...) or `kv_cache` (the build's KV cache
//! dtype). A dim is an integer, an expression, or a bare symbol such as `T` (one that is not a
//! `[values]` name). `name` (default: the key) is the runtime name and may use `{layer}`; inputs
//! without placeholders are declared up front in file order, the others when first read. The
//! runtime's standard inputs are those of `crate::io`.
//!
//! **Steps** (`[[graph]]`, `body`, `else`): each does one thing:
//! - `op = "matmul"`, `inputs`, `outputs` (`"_"` discards), `attrs`. An input written `"bias?"`
//!   is optional: dropped when the weight is absent or the value is not defined.
//! - `set = "residual"`, `from = "x"`: binds a name to an existing value.
//! - `repeat = <count>` with `body` (and `var`); `body` alone is a group.
//! - `call = "block"`, `inputs`, `outputs`: runs a `[blocks.NAME]` (with `params`, `results`,
//!   `body`) in its own namespace; an optional argument (`"x?"`) leaves its param undefined.
//!
//! A step may carry conditions (all must hold), with `else` steps run otherwise:
//! `if_op_registered = "fused_add_rmsnorm"`, `if_weight = "<weights key>"`,
//! `if_defined = "name"`, `unless_defined = "name"`, `if_config = "<expression>"` (non-zero,
//! true). `scope = "layer {layer}"` names the scope that build errors report.
//!
//! **Limits** keep any file from exhausting the stack: blocks may not call themselves (directly
//! or through others) and chain at most 32 calls deep, expressions nest at most 64 levels
//! (parentheses, unary minus, `sqrt`, operator chains), `[values]` entries name each other at
//! most 64 deep, a build runs at most 2^20 steps and loop iterations, and tables nest only as
//! deep as the TOML parser allows.
//!
//! **Errors** name the file, the line and the key: syntax and format errors at load
//! ([`TomlError`]); unknown config references, unknown ops (with similar registered ops), shape
//! or dtype mismatches (layer, op, shapes) and missing weights (with the nearest present) at
//! build, as a [`BuildError`] whose scope starts with `file:line: `key``.

mod ast;
mod check;
mod compile;
mod definition;
mod error;
mod exec;
mod expr;
mod limits;
mod raw;
#[cfg(test)]
mod tests;

pub use definition::{ModelDefinition, UnknownArchitecture};
pub use error::TomlError;

use crate::arch::BuildOptions;
use crate::builder::{BuildError, GraphBuilder};
use crate::config::ModelConfig;
use std::path::Path;

/// A model definition loaded from TOML and checked (syntax, structure, names, expressions).
#[derive(Clone, Debug)]
pub struct TomlModel {
    file: String,
    model: ast::Compiled,
}

impl TomlModel {
    /// Reads and checks a model file; errors name the file and line.
    pub fn from_file(path: &Path) -> Result<TomlModel, TomlError> {
        let io = |source| TomlError::Io { path: path.to_path_buf(), source };
        // A FIFO or device would block or stream forever: only regular files are read.
        if !std::fs::metadata(path).map_err(io)?.is_file() {
            return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        TomlModel::from_str(&text, &path.display().to_string())
    }

    /// Checks a model file's text; `file` is the name errors use.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, file: &str) -> Result<TomlModel, TomlError> {
        Ok(TomlModel { file: file.to_string(), model: compile::compile(text, file)? })
    }

    /// `[model] name`.
    pub fn name(&self) -> &str {
        &self.model.name
    }

    /// `[model] description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.model.description.as_deref()
    }

    /// The file name errors use.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Assembles the graph for `config` through `builder`, like `Architecture::build`.
    pub fn build(
        &self,
        config: &ModelConfig,
        options: &BuildOptions,
        builder: &mut dyn GraphBuilder,
    ) -> Result<(), BuildError> {
        exec::run(&self.model, &self.file, config, options, builder)
    }
}
