//! The runtime around an engine: the paged KV cache manager, the two-stage scheduler and the
//! in-flight batching executor; plus a simple single-sequence runner (`generate`) for the CLI.

mod blocks;
pub mod executor;
pub mod kv_cache;
pub mod scheduler;
mod sequence;

pub use blocks::{BlockPool, KvCacheFull};
pub use executor::{
    Executor, ExecutorConfig, ExecutorError, ExecutorStats, OutputUpdate, Request, RequestError, RequestHandle,
    SampleOutput, SubmitError,
};
pub use kv_cache::{KvCacheConfig, KvCacheManager, KvCacheStats};
pub use scheduler::{CapacitySchedulerPolicy, SchedulerConfig};
pub use sequence::{generate, FinishReason, Generation, RuntimeError, SequenceRunner};
