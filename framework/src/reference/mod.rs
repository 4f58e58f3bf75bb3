//! Naive, obviously-correct CPU references of the built-in ops (plain loops, f64
//! accumulation) on host tensors, used by `rtllm plugins check` and the tests to judge every
//! kernel plugin. [`run_reference`] runs one by op name with the op's exact input contract.

pub mod attention;
pub mod basic;
pub mod dispatch;
pub mod fp8;
pub mod layer_norm;
pub mod rope;
pub mod sample;
pub mod tensor;

pub use attention::{paged_attention, AttentionParams, PagedBatch};
pub use dispatch::{has_reference, run_reference, BUILTIN_OPS};
pub use rope::{rope, RopeParams, RopeScaling, RopeStyle};
pub use tensor::{HostTensor, TensorError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    #[error("no built-in reference for op '{0}'")]
    UnknownOp(String),
    #[error("bad shapes: {0}")]
    Shape(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("bad attributes: {0}")]
    Attr(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

pub type RefResult<T> = Result<T, ReferenceError>;
