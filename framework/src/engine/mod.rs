//! The engine: graph building (inference + kernel selection), memory planning, weight binding
//! and forward passes over packed batches.

mod batch;
mod buffer;
mod build;
pub mod cache;
mod decode_graphs;
#[allow(clippy::module_inception)]
mod engine;
mod graph;
mod load;
mod op_profile;
mod plan;
pub mod serialize;
pub mod shard;
mod step_io;
mod step_profile;

pub use batch::StepBatch;
pub use buffer::AlignedBuf;
pub use build::{EngineGraphBuilder, SelectionConfig, WeightMetas};
pub use engine::{Engine, EngineError, EngineLimits, Placement, WeightBytes};
pub use graph::{Graph, Node, ProviderInfo, ValueInfo, ValueSource};
pub use load::{
    build_engine, build_engine_with, build_parts, build_rank_parts, check_rank_layout, registered_definition,
    BuildConfig, BuiltParts, LoadError, WeightSource,
};
pub use plan::{MemoryPlan, Symbols};
pub use step_io::RowSampling;
