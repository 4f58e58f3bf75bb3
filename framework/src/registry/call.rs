//! Calling a provider's hooks (`infer`, `create`, `workspace_bytes`, `launch`) from the host:
//! the ABI's `RResult` becomes a `Result` whose error names the op, the plugin and its file.
//! [`run_on_host`] does all four on host tensors (checks, tests, tools).

use super::Provider;
use crate::host_pool::HostPool;
use crate::reference::HostTensor;
use abi_stable::std_types::RSlice;
use rtllm_plugin_api::{Attrs, InputView, KernelBox, LaunchEnv, OutputView, TensorMeta};
use std::path::PathBuf;

/// Which hook failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpStage {
    Infer,
    Create,
    Workspace,
    Launch,
}

impl std::fmt::Display for OpStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpStage::Infer => "shape inference",
            OpStage::Create => "kernel creation",
            OpStage::Workspace => "workspace sizing",
            OpStage::Launch => "launch",
        })
    }
}

/// A provider hook returned an error (or panicked: the plugin turns that into an error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("op '{op}' ({stage}) in plugin '{plugin}' [{}]: {message}", path.display())]
pub struct OpError {
    pub op: String,
    pub plugin: String,
    pub path: PathBuf,
    pub stage: OpStage,
    pub message: String,
}

impl OpError {
    pub(crate) fn new(p: &Provider, stage: OpStage, message: impl Into<String>) -> Self {
        OpError {
            op: p.op().to_string(),
            plugin: p.plugin.clone(),
            path: p.path.clone(),
            stage,
            message: message.into(),
        }
    }
}

/// Output metas of `provider`'s op for these inputs.
pub fn infer_with(provider: &Provider, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, OpError> {
    (provider.decl.infer)(RSlice::from_slice(inputs), attrs)
        .into_result()
        .map(|v| v.into_vec())
        .map_err(|e| OpError::new(provider, OpStage::Infer, e.message()))
}

/// A kernel instance of `provider`'s op for these inputs.
pub fn create_with(provider: &Provider, inputs: &[TensorMeta], attrs: &Attrs) -> Result<KernelBox, OpError> {
    (provider.decl.create)(RSlice::from_slice(inputs), attrs)
        .into_result()
        .map_err(|e| OpError::new(provider, OpStage::Create, e.message()))
}

/// The workspace a kernel of `provider` needs for these concrete inputs.
pub fn workspace_with(provider: &Provider, kernel: &KernelBox, inputs: &[TensorMeta]) -> Result<usize, OpError> {
    kernel.workspace_bytes(inputs).map_err(|e| OpError::new(provider, OpStage::Workspace, e.message()))
}

/// Launches a kernel that `provider` created.
pub fn launch_with(
    provider: &Provider,
    kernel: &KernelBox,
    env: &mut LaunchEnv<'_>,
    inputs: &mut [InputView<'_>],
    outputs: &mut [OutputView<'_>],
) -> Result<(), OpError> {
    kernel.launch(env, inputs, outputs).map_err(|e| OpError::new(provider, OpStage::Launch, e.message()))
}

/// Infers, creates and launches `provider` on host `inputs` (updated in place where the op
/// declares it writes an input; the others are passed read-only) with the pool's threads and a 64-byte aligned workspace, and returns the
/// outputs. Outputs start as all-ones bytes (NaN for floats) so unwritten elements show.
pub fn run_on_host(
    provider: &Provider,
    inputs: &mut [HostTensor],
    attrs: &Attrs,
    pool: &HostPool,
) -> Result<Vec<HostTensor>, OpError> {
    let metas: Vec<TensorMeta> = inputs.iter().map(HostTensor::meta).collect();
    let out_metas = infer_with(provider, &metas, attrs)?;
    let kernel = create_with(provider, &metas, attrs)?;
    let ws_bytes = workspace_with(provider, &kernel, &metas)?;
    let mut outputs = out_metas
        .iter()
        .map(|m| {
            let mut t = HostTensor::for_meta(m)
                .map_err(|e| OpError::new(provider, OpStage::Infer, format!("output {m}: {e}")))?;
            t.bytes_mut().fill(0xFF);
            Ok(t)
        })
        .collect::<Result<Vec<_>, OpError>>()?;
    const ALIGN: usize = 64;
    let mut ws = vec![0u8; ws_bytes + ALIGN];
    let off = ws.as_ptr().align_offset(ALIGN).min(ALIGN);
    let mut env = pool.cpu_env(&mut ws[off..off + ws_bytes]);
    let in_place = provider.in_place();
    let view_err = |e: crate::reference::TensorError| OpError::new(provider, OpStage::Launch, e.to_string());
    let mut in_args = inputs
        .iter_mut()
        .enumerate()
        .map(|(i, t)| if in_place.contains(&i) { t.input_in_place() } else { t.input() })
        .collect::<Result<Vec<_>, _>>()
        .map_err(view_err)?;
    let mut out_args = outputs.iter_mut().map(HostTensor::output).collect::<Result<Vec<_>, _>>().map_err(view_err)?;
    launch_with(provider, &kernel, &mut env, &mut in_args, &mut out_args)?;
    drop((in_args, out_args));
    Ok(outputs)
}
