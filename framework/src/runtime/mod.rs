//! The runtime around an engine: the paged KV cache manager, the two-stage scheduler and the
//! in-flight batching executor. Every front end (CLI, server, bench, the `Llm` API) generates
//! through the executor.

pub mod executor;
pub mod kv_cache;
pub mod scheduler;

pub use crate::sampling::FinishReason;
pub use executor::{
    Executor, ExecutorConfig, ExecutorError, ExecutorStats, OutputUpdate, Request, RequestError, RequestHandle,
    SampleOutput, SubmitError,
};
pub use kv_cache::{KvCacheConfig, KvCacheManager, KvCacheStats};
pub use scheduler::{CapacitySchedulerPolicy, SchedulerConfig};
