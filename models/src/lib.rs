//! rtllm-models: the model-definition API (`GraphBuilder`, `Architecture` registration via
//! inventory, the runtime I/O convention) and the built-in architectures.

pub mod arch;
pub mod builder;
pub mod config;
pub use config::*;
pub mod io;
pub mod llama;
pub mod parallel;
pub mod toml;

pub use arch::{
    architectures, find_architecture, known_architecture_names, Architecture, ArchitectureEntry, BuildOptions,
};
pub use builder::{BuildError, GraphBuilder, Value};
pub use parallel::{AttentionSplit, Parallel, ParallelError, TensorParallel};
