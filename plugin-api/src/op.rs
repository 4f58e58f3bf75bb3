//! The FFI form of an op: its declaration (identity, dtypes, priority, the inputs it updates
//! in place, hooks) and the kernel instance that `create` returns. Plugin authors never touch
//! these directly (see `author`).

use crate::{
    attrs::Attrs,
    context::{DeviceKind, LaunchEnv},
    dtype::DType,
    error::PluginError,
    tensor::TensorMeta,
    view::{InputView, OutputView},
};
use abi_stable::{
    std_types::{RResult, RSlice, RSliceMut, RString, RVec},
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
    /// Indices of the inputs a launch writes in place (e.g. a KV cache). The host passes these
    /// as writable views, and refuses to bind a weight or a value used twice by the node there.
    pub in_place: RVec<u32>,
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

/// The function table of a kernel instance. Every entry dereferences `state`, so each is an
/// `unsafe fn`: `state` must be the pointer `create` returned alongside this table.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct KernelVTable {
    pub workspace_bytes:
        unsafe extern "C" fn(state: *const c_void, inputs: RSlice<'_, TensorMeta>) -> RResult<usize, PluginError>,
    pub launch: unsafe extern "C" fn(
        state: *const c_void,
        env: &mut LaunchEnv<'_>,
        inputs: RSliceMut<'_, InputView<'_>>,
        outputs: RSliceMut<'_, OutputView<'_>>,
    ) -> RResult<(), PluginError>,
    /// Frees `state`; called once.
    pub drop: unsafe extern "C" fn(state: *mut c_void),
}

/// A kernel instance owned by the host and freed by the plugin that made it. Its fields are
/// private: only `create` (through `author`'s shims) makes one, so no two boxes share a state.
#[repr(C)]
#[derive(StableAbi)]
pub struct KernelBox {
    state: *mut c_void,
    vtable: KernelVTable,
}

// SAFETY: the state is a `Kernel`, which is `Send + Sync`.
unsafe impl Send for KernelBox {}
unsafe impl Sync for KernelBox {}

impl KernelBox {
    /// Takes ownership of `state` with the functions that use and free it.
    ///
    /// # Safety
    /// `state` must be valid for every function of `vtable` until `vtable.drop` frees it, and
    /// owned by no other box.
    pub(crate) unsafe fn from_raw(state: *mut c_void, vtable: KernelVTable) -> KernelBox {
        KernelBox { state, vtable }
    }

    /// Workspace bytes the kernel needs for inputs of these (concrete, maximal) shapes.
    pub fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        // SAFETY: `state` belongs to this box's vtable (see `from_raw`).
        unsafe { (self.vtable.workspace_bytes)(self.state, RSlice::from_slice(inputs)) }.into_result()
    }

    /// Runs the kernel. Allocates nothing and never synchronizes.
    pub fn launch(
        &self,
        env: &mut LaunchEnv<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        // SAFETY: as in `workspace_bytes`.
        unsafe {
            (self.vtable.launch)(self.state, env, RSliceMut::from_mut_slice(inputs), RSliceMut::from_mut_slice(outputs))
        }
        .into_result()
    }
}

impl Drop for KernelBox {
    fn drop(&mut self) {
        // SAFETY: the box owns `state` (see `from_raw`) and drops it once, here.
        unsafe { (self.vtable.drop)(self.state) }
    }
}
