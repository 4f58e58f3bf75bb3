//! rtllm-plugin-api: the stable ABI between rtllm and its kernel plugins, and the helpers
//! that let a plugin author write one safe Rust file per kernel.
//!
//! Everything that crosses a dylib boundary is `#[repr(C)]` + `abi_stable::StableAbi`, so the
//! host checks layout and version when it loads a plugin. Kernel authors implement [`Op`] and
//! [`Kernel`], add one [`register_op!`] line, and call [`export_plugin!`] once per crate.

pub mod attrs;
pub mod author;
pub mod context;
pub mod dtype;
pub mod error;
pub mod fp8;
pub mod op;
pub mod parallel;
pub mod quant;
pub mod root;
pub mod shapes;
pub mod tensor;
pub mod testing;
pub mod view;

pub use abi_stable;
pub use bytemuck;
pub use linkme;

pub use attrs::{AttrValue, Attrs};
pub use author::{declare, Kernel, Op, OPS};
pub use context::{DeviceKind, HostServices, LaunchContext, LaunchEnv, TaskFn};
pub use dtype::{DType, Element};
pub use error::PluginError;
pub use fp8::F8E4M3;
pub use op::{KernelBox, OpDecl, OpExample};
pub use parallel::DisjointMut;
pub use root::{PluginMod, PluginModRef, PLUGIN_ABI_VERSION};
pub use tensor::{Dim, TensorMeta};
pub use view::{InputView, OutputView, TensorView};

/// `Result` with the ABI's error type, for kernel authors.
pub type PluginResult<T> = Result<T, PluginError>;
