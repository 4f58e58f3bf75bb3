//! The engine: graph building (inference + kernel selection), memory planning, weight binding
//! and forward passes over packed batches.

mod batch;
mod buffer;
mod build;
mod decode_graphs;
pub mod cache;
#[allow(clippy::module_inception)]
mod engine;
mod graph;
mod load;
mod plan;
mod step_io;
pub mod serialize;

pub use batch::StepBatch;
pub use buffer::AlignedBuf;
pub use build::{EngineGraphBuilder, SelectionConfig, WeightMetas};
pub use engine::{Engine, EngineError, EngineLimits, Placement, WeightBytes};
pub use step_io::RowSampling;
pub use graph::{Graph, Node, ProviderInfo, ValueInfo, ValueSource};
pub use load::{
    build_engine, build_engine_with, build_parts, registered_definition, BuildConfig, BuiltParts, LoadError,
    WeightSource,
};
pub use plan::{MemoryPlan, Symbols};
