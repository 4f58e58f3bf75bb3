//! rtllm: the plugin registry, graph builder, engine, weights, tokenizer, runtime, evaluation and
//! CLI.
//! Plugins provide the kernels (see rtllm-plugin-api); models (rtllm-models) name the ops.

pub mod api;
pub mod bench;
pub mod cli;
pub mod device;
pub mod engine;
pub mod eval;
pub mod host_pool;
pub mod input_file;
pub mod model;
pub mod parallel;
pub mod quantize;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod sampling;
pub mod serve;
pub mod tokenizer;
pub mod weights;
