//! Op authoring: implement [`Op`] (identity, inference, creation) and [`Kernel`] (launch) in
//! one safe Rust file, then add `register_op!(MyOp);`. The generic `extern "C"` shims here
//! turn them into an [`OpDecl`], and every shim turns a panic into an error value.

use crate::{
    attrs::Attrs,
    context::{DeviceKind, LaunchContext, LaunchEnv},
    dtype::DType,
    error::PluginError,
    op::{KernelBox, KernelVTable, OpDecl, OpExample},
    tensor::TensorMeta,
    view::{InputView, OutputView},
};
use abi_stable::std_types::{RResult, RSlice, RSliceMut, RVec};
use linkme::distributed_slice;
use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The op list of the plugin crate being built: `register_op!` adds to it, the root module
/// exports it. Each dylib has its own copy.
#[distributed_slice]
pub static OPS: [fn() -> OpDecl];

/// Data-driven op lists of the plugin crate being built (e.g. ops registered from a kernel
/// manifest): `register_op_set!` adds to it; the root module exports them after `OPS`. A list
/// that fails makes the plugin's op listing fail with its error.
#[distributed_slice]
pub static OP_SETS: [fn() -> Result<Vec<OpDecl>, PluginError>];

/// An op: identity, supported dtypes, shape/dtype inference and kernel creation.
pub trait Op: 'static {
    const NAME: &'static str;
    const VERSION: u32 = 1;
    const DEVICE: DeviceKind = DeviceKind::Cpu;
    const PRIORITY: i32 = 0;
    const SUMMARY: &'static str = "";
    /// Indices of the inputs a launch writes in place (e.g. a KV cache); the host passes them
    /// writable ([`InputView::slice_mut`]) and every other input read-only.
    const IN_PLACE: &'static [usize] = &[];
    type Kernel: Kernel;

    /// The dtypes this provider handles.
    fn dtypes() -> Vec<DType>;
    /// Output metas from input metas (dims may be symbolic).
    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError>;
    /// A kernel instance for inputs of these metas.
    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Self::Kernel, PluginError>;
    /// Concrete example inputs for conformance checks (`rtllm plugins check`).
    fn examples() -> Vec<OpExample> {
        Vec::new()
    }
}

/// A kernel instance: runs the op on concrete tensors.
pub trait Kernel: Send + Sync + 'static {
    fn workspace_bytes(&self, _inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        Ok(0)
    }
    /// Reads `inputs` (and writes those the op declares in place), writes `outputs`. Allocates
    /// no device memory and never synchronizes.
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError>;
}

/// Text of a panic payload.
pub fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs `f`, turning a panic into an error that names the op and what it was doing.
fn guarded<T>(op: &str, what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.context(format_args!("op '{op}' {what}"))),
        Err(p) => RResult::RErr(PluginError::new(format!("op '{op}' {what}: panicked: {}", panic_message(&p)))),
    }
}

extern "C" fn infer_shim<O: Op>(
    inputs: RSlice<'_, TensorMeta>,
    attrs: &Attrs,
) -> RResult<RVec<TensorMeta>, PluginError> {
    guarded(O::NAME, "infer", || O::infer(inputs.as_slice(), attrs).map(RVec::from))
}

extern "C" fn create_shim<O: Op>(inputs: RSlice<'_, TensorMeta>, attrs: &Attrs) -> RResult<KernelBox, PluginError> {
    guarded(O::NAME, "create", || {
        let kernel = O::create(inputs.as_slice(), attrs)?;
        let vtable = KernelVTable {
            workspace_bytes: workspace_shim::<O>,
            launch: launch_shim::<O>,
            drop: drop_shim::<O::Kernel>,
        };
        // SAFETY: the state is a freshly boxed `O::Kernel`, owned by this box alone, and every
        // shim of the table reads it as exactly that type.
        Ok(unsafe { KernelBox::from_raw(Box::into_raw(Box::new(kernel)) as *mut c_void, vtable) })
    })
}

extern "C" fn examples_shim<O: Op>() -> RVec<OpExample> {
    catch_unwind(O::examples).map(RVec::from).unwrap_or_default()
}

/// # Safety
/// `state` must be the `O::Kernel` that `create_shim::<O>` boxed, not yet dropped.
unsafe extern "C" fn workspace_shim<O: Op>(
    state: *const c_void,
    inputs: RSlice<'_, TensorMeta>,
) -> RResult<usize, PluginError> {
    // SAFETY: the caller's contract.
    let kernel = unsafe { &*(state as *const O::Kernel) };
    guarded(O::NAME, "workspace_bytes", || kernel.workspace_bytes(inputs.as_slice()))
}

/// # Safety
/// As [`workspace_shim`].
unsafe extern "C" fn launch_shim<O: Op>(
    state: *const c_void,
    env: &mut LaunchEnv<'_>,
    mut inputs: RSliceMut<'_, InputView<'_>>,
    mut outputs: RSliceMut<'_, OutputView<'_>>,
) -> RResult<(), PluginError> {
    // SAFETY: the caller's contract.
    let kernel = unsafe { &*(state as *const O::Kernel) };
    guarded(O::NAME, "launch", || {
        let ctx = env.context();
        kernel.launch(&ctx, inputs.as_mut_slice(), outputs.as_mut_slice())
    })
}

/// # Safety
/// `state` must come from `Box::into_raw` of a `K` in `create_shim`, dropped once.
unsafe extern "C" fn drop_shim<K: Kernel>(state: *mut c_void) {
    // SAFETY: the caller's contract.
    let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(state as *mut K) })));
}

/// The FFI declaration of `O`.
pub fn declare<O: Op>() -> OpDecl {
    OpDecl {
        name: O::NAME.into(),
        version: O::VERSION,
        device: O::DEVICE,
        dtypes: O::dtypes().into(),
        priority: O::PRIORITY,
        summary: O::SUMMARY.into(),
        in_place: O::IN_PLACE.iter().map(|&i| i as u32).collect(),
        infer: infer_shim::<O>,
        create: create_shim::<O>,
        examples: examples_shim::<O>,
    }
}

/// Every op registered in this dylib, sorted by name for a stable listing.
pub fn collect_ops() -> Result<RVec<OpDecl>, PluginError> {
    let mut ops = catch_unwind(|| OPS.iter().map(|make| make()).collect::<Vec<_>>())
        .map_err(|p| PluginError::new(format!("listing ops panicked: {}", panic_message(&p))))?;
    for make in OP_SETS.iter() {
        let set = catch_unwind(make)
            .map_err(|p| PluginError::new(format!("listing ops panicked: {}", panic_message(&p))))??;
        ops.extend(set);
    }
    ops.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(ops.into())
}

/// Registers an op type in this crate's op list: `register_op!(Matmul);`
#[macro_export]
macro_rules! register_op {
    ($op:ty) => {
        const _: () = {
            #[$crate::linkme::distributed_slice($crate::OPS)]
            #[linkme(crate = $crate::linkme)]
            static DECLARE: fn() -> $crate::OpDecl = $crate::declare::<$op>;
        };
    };
}

/// Registers a function returning a list of op declarations built at run time (see
/// [`OP_SETS`]): `register_op_set!(manifest_ops);`
#[macro_export]
macro_rules! register_op_set {
    ($f:path) => {
        const _: () = {
            #[$crate::linkme::distributed_slice($crate::author::OP_SETS)]
            #[linkme(crate = $crate::linkme)]
            static OP_SET: fn() -> ::core::result::Result<::std::vec::Vec<$crate::OpDecl>, $crate::PluginError> = $f;
        };
    };
}

/// Checks the input count of an op.
pub fn expect_inputs(op: &str, inputs: &[TensorMeta], counts: &[usize]) -> Result<(), PluginError> {
    if counts.contains(&inputs.len()) {
        return Ok(());
    }
    Err(PluginError::new(format!("{op} takes {} inputs, got {}", join_counts(counts), inputs.len())))
}

fn join_counts(counts: &[usize]) -> String {
    counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" or ")
}

/// Checks that two dims can be equal (symbols compare by name).
pub fn same_dim(op: &str, what: &str, a: &crate::tensor::Dim, b: &crate::tensor::Dim) -> Result<(), PluginError> {
    if a == b {
        return Ok(());
    }
    Err(PluginError::new(format!("{op}: {what} mismatch: {a} vs {b}")))
}

/// Checks a tensor's rank.
pub fn expect_rank(op: &str, what: &str, meta: &TensorMeta, rank: usize) -> Result<(), PluginError> {
    if meta.rank() == rank {
        return Ok(());
    }
    Err(PluginError::new(format!("{op}: {what} must have rank {rank}, got {meta}")))
}

/// Checks a tensor's dtype is one of `allowed`.
pub fn expect_dtype(op: &str, what: &str, meta: &TensorMeta, allowed: &[DType]) -> Result<(), PluginError> {
    if allowed.contains(&meta.dtype) {
        return Ok(());
    }
    let names: Vec<_> = allowed.iter().map(|d| d.name()).collect();
    Err(PluginError::new(format!("{op}: {what} must be {}, got {meta}", names.join("/"))))
}
