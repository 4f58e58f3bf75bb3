//! The errors of the in-process rendezvous (groups of ranks that are threads of one process)
//! and of loading/using NCCL; each converts into the ABI's `PluginError` with its message.

use rtllm_plugin_api::PluginError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CollectiveError {
    #[error(
        "group '{group}': collective call #{call} timed out after {waited_ms} ms: ranks {missing:?} of {world} never \
         arrived (ranks {arrived:?} did); the group is now poisoned"
    )]
    Timeout { group: String, call: u64, waited_ms: u128, world: usize, missing: Vec<usize>, arrived: Vec<usize> },
    #[error("group '{group}' is poisoned: {reason}")]
    Poisoned { group: String, reason: String },
    #[error(
        "group '{group}': collective call #{call} does not match across ranks: {detail}; the group is now poisoned"
    )]
    Mismatch { group: String, call: u64, detail: String },
    #[error(
        "group '{group}': rank {rank} entered a collective while its previous one is still running (two threads \
         use the same rank?)"
    )]
    Busy { group: String, rank: usize },
    #[error("group '{group}' has world_size {existing}, a kernel of rank {rank} asked for world_size {requested}")]
    WorldSize { group: String, existing: usize, requested: usize, rank: usize },
    #[error("the registry of collective groups is poisoned (a thread panicked while holding it)")]
    Registry,
    #[error("{0}")]
    Work(String),
}

impl From<CollectiveError> for PluginError {
    fn from(e: CollectiveError) -> Self {
        PluginError::new(e.to_string())
    }
}

/// An error of NCCL or of the CUDA driver as the CUDA provider uses them.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum NcclError {
    #[error("CUDA is not available: libcuda could not be loaded or cuInit failed (no NVIDIA driver on this machine?)")]
    NoDriver,
    #[error(
        "NCCL is not available: no library could be opened (tried {tried}); install NCCL (e.g. the nvidia-nccl-cu13 \
         wheel) and set RTLLM_NCCL_LIB to libnccl.so.2's path or add its folder to LD_LIBRARY_PATH"
    )]
    NoLibrary { tried: String },
    #[error("NCCL library {path} lacks the symbol {symbol}: {cause}")]
    MissingSymbol { path: String, symbol: String, cause: String },
    #[error("{call} failed: {code} ({text})")]
    Call { call: String, code: i32, text: String },
    #[error("{call} failed: {cause}")]
    Driver { call: String, cause: String },
    #[error(
        "no CUDA context is current on this thread: the runtime must make rank {rank}'s device current before \
         creating or launching a collective"
    )]
    NoContext { rank: usize },
    #[error("group '{group}' rank {rank}: its NCCL communicator is on device {comm_device}, this thread's context is on device {current}")]
    WrongDevice { group: String, rank: usize, comm_device: i32, current: i32 },
}

impl From<NcclError> for PluginError {
    fn from(e: NcclError) -> Self {
        PluginError::new(e.to_string())
    }
}
