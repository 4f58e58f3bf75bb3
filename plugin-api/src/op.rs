//! The FFI form of an op: its declaration (identity, dtypes, priority, hooks) and the kernel
//! instance that `create` returns. Plugin authors never touch these directly (see `author`).

use crate::{
    attrs::Attrs,
    context::{DeviceKind, LaunchContext},
    dtype::DType,
    error::PluginError,
    tensor::{TensorArg, TensorMeta},
};
use abi_stable::{
    std_types::{RResult, RSlice, RString, RVec},
    StableAbi,
};
use std::ffi::c_void;

/// Shape/dtype inference: input metas (symbolic dims allowed) + attributes → output metas.
pub type InferFn =
    extern "C" fn(inputs: RSlice<'_, TensorMeta>, attrs: &Attrs) -> RResult<RVec<TensorMeta>, PluginError>;
/// Builds a kernel instance for these input metas and attributes.
pub type CreateFn = extern "C" fn(inputs: RSlice<'_, TensorMeta>, attrs: &Attrs) -> RResult<KernelBox, PluginError>;
/// Example inputs (concrete shapes) for conformance checks.
pub type ExamplesFn = extern "C" fn() -> RVec<OpExample>;

/// One op a plugin provides.
#[repr(C)]
#[derive(StableAbi)]
pub struct OpDecl {
    pub name: RString,
    pub version: u32,
    pub device: DeviceKind,
    /// The dtypes this provider handles; a request matches when all its dtypes are listed.
    pub dtypes: RVec<DType>,
    /// Higher wins among providers that match a request.
    pub priority: i32,
    pub summary: RString,
    /// See [`InferFn`] (written out: abi_stable reads fn pointer types only inline).
    pub infer: extern "C" fn(inputs: RSlice<'_, TensorMeta>, attrs: &Attrs) -> RResult<RVec<TensorMeta>, PluginError>,
    /// See [`CreateFn`].
    pub create: extern "C" fn(inputs: RSlice<'_, TensorMeta>, attrs: &Attrs) -> RResult<KernelBox, PluginError>,
    /// See [`ExamplesFn`].
    pub examples: extern "C" fn() -> RVec<OpExample>,
}

/// A concrete set of inputs to run an op on, for `rtllm plugins check`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct OpExample {
    pub inputs: RVec<TensorMeta>,
    pub attrs: Attrs,
}

/// The function table of a kernel instance.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct KernelVTable {
    pub workspace_bytes:
        extern "C" fn(state: *const c_void, inputs: RSlice<'_, TensorMeta>) -> RResult<usize, PluginError>,
    pub launch: extern "C" fn(
        state: *const c_void,
        ctx: &LaunchContext,
        inputs: RSlice<'_, TensorArg>,
        outputs: RSlice<'_, TensorArg>,
    ) -> RResult<(), PluginError>,
    pub drop: extern "C" fn(state: *mut c_void),
}

/// A kernel instance owned by the host and freed by the plugin that made it.
#[repr(C)]
#[derive(StableAbi)]
pub struct KernelBox {
    pub state: *mut c_void,
    pub vtable: KernelVTable,
}

unsafe impl Send for KernelBox {}
unsafe impl Sync for KernelBox {}

impl KernelBox {
    /// Workspace bytes the kernel needs for inputs of these (concrete, maximal) shapes.
    pub fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        (self.vtable.workspace_bytes)(self.state, RSlice::from_slice(inputs)).into_result()
    }

    /// Runs the kernel. Allocates nothing and never synchronizes.
    pub fn launch(&self, ctx: &LaunchContext, inputs: &[TensorArg], outputs: &[TensorArg]) -> Result<(), PluginError> {
        (self.vtable.launch)(self.state, ctx, RSlice::from_slice(inputs), RSlice::from_slice(outputs)).into_result()
    }
}

impl Drop for KernelBox {
    fn drop(&mut self) {
        (self.vtable.drop)(self.state);
    }
}
