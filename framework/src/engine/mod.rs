//! The engine: building (the architecture's plain graph with ops selected and inferred, the
//! passes, kernel creation, weight binding), and running (memory, the executable graph, step
//! I/O, and the launch layer with CUDA graphs and profilers).
//!
//! Dependency order of the files (each uses only those before it): error, batch, buffer,
//! graph, plan, limits, source, convert, weight_bytes, shard, select, build, fusion, passes, kernels,
//! explain, bind, step_io, readback, memory, executable, decode_graphs, op_profile,
//! step_profile, observe, launcher, sampler, engine, load, serialize, cache.

mod batch;
mod bind;
mod budget;
mod buffer;
mod build;
pub mod cache;
mod checksum;
mod convert;
mod decode_graphs;
#[allow(clippy::module_inception)]
mod engine;
mod error;
mod executable;
pub mod explain;
mod fp8_kv;
mod fp8_linear;
mod fusion;
mod graph;
mod kernels;
mod launcher;
mod limits;
mod load;
mod memory;
mod observe;
mod op_profile;
mod passes;
mod plan;
mod readback;
mod sampler;
mod select;
pub mod serialize;
pub mod shard;
mod source;
mod step_io;
mod step_profile;
mod weight_bytes;

pub use batch::StepBatch;
pub use buffer::AlignedBuf;
pub use build::EngineGraphBuilder;
pub use engine::{BuiltParts, Engine, Placement};
pub use error::{EngineError, LoadError};
pub use executable::ExecutableGraph;
pub use fusion::fuse;
pub use graph::{Graph, Node, ProviderInfo, ValueInfo, ValueSource, WeightIndex};
pub use kernels::create_kernels;
pub use limits::EngineLimits;
pub use load::{
    build_engine, build_engine_with, build_parts, build_rank_parts, check_rank_layout, plan_graph,
    registered_definition, BuildConfig,
};
pub use memory::EngineMemory;
pub use observe::{abs_max, ActivationStats};
pub use plan::{MemoryPlan, Symbols};
pub use select::{SelectionConfig, Selector};
pub use source::{WeightMetas, WeightSource};
pub use step_io::RowSampling;
pub use weight_bytes::WeightBytes;
