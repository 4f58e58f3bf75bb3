//! Running one provider's kernel on a GPU with host tensors: inputs are uploaded, outputs
//! (pre-filled with all-ones bytes so unwritten elements show as NaN) and the inputs the
//! provider declares in place are copied back. What `rtllm plugins check` uses for CUDA providers.

use super::call::{create_with, infer_with, launch_with, workspace_with, OpError, OpStage};
use super::Provider;
use crate::device::{CudaDevice, DeviceBuffer};
use crate::host_pool::HostPool;
use crate::reference::HostTensor;
use rtllm_plugin_api::{Attrs, DeviceKind, HostServices, InputView, LaunchEnv, OutputView, TensorMeta};
use std::sync::Arc;

fn upload(device: &Arc<CudaDevice>, provider: &Provider, bytes: &[u8]) -> Result<DeviceBuffer, OpError> {
    device.upload(bytes).map_err(|e| OpError::new(provider, OpStage::Launch, e.to_string()))
}

/// A read-only input view (or, `in_place`, a writable one) of a device buffer.
fn input(meta: TensorMeta, buf: &DeviceBuffer, in_place: bool) -> InputView<'_> {
    let ptr = buf.device_ptr() as usize as *mut u8;
    // SAFETY: the device buffer holds the tensor's bytes, is this view's alone and outlives it.
    unsafe {
        if in_place {
            InputView::new_in_place(meta, ptr, DeviceKind::Cuda)
        } else {
            InputView::new(meta, ptr, DeviceKind::Cuda)
        }
    }
}

fn output(meta: TensorMeta, buf: &DeviceBuffer) -> OutputView<'_> {
    // SAFETY: as in `input`.
    unsafe { OutputView::new(meta, buf.device_ptr() as usize as *mut u8, DeviceKind::Cuda) }
}

/// A launch environment on `device`'s stream with `workspace` (device memory) and the host pool.
fn device_env<'a>(device: &Arc<CudaDevice>, workspace: Option<&'a DeviceBuffer>, bytes: usize) -> LaunchEnv<'a> {
    let ws = workspace.map_or(std::ptr::null_mut(), |w| w.device_ptr() as usize as *mut u8);
    let services: HostServices = HostPool::global().services();
    // SAFETY: the workspace (if any) holds `bytes` device bytes for this one launch, and the
    // stream belongs to `device`.
    unsafe { LaunchEnv::new(DeviceKind::Cuda, device.ordinal as i32, device.stream(), ws, bytes, services) }
}

/// Infers, creates and launches `provider` on `device` with these host inputs (updated in place
/// where the op writes an input); returns the outputs.
pub fn run_on_device(
    provider: &Provider,
    inputs: &mut [HostTensor],
    attrs: &Attrs,
    device: &Arc<CudaDevice>,
) -> Result<Vec<HostTensor>, OpError> {
    let fail = |stage, e: &dyn std::fmt::Display| OpError::new(provider, stage, e.to_string());
    device.bind().map_err(|e| fail(OpStage::Create, &e))?;
    let metas: Vec<TensorMeta> = inputs.iter().map(HostTensor::meta).collect();
    let out_metas = infer_with(provider, &metas, attrs)?;
    let kernel = create_with(provider, &metas, attrs)?;
    let ws_bytes = workspace_with(provider, &kernel, &metas)?;
    let in_bufs = inputs.iter().map(|t| upload(device, provider, t.bytes())).collect::<Result<Vec<_>, _>>()?;
    let mut outputs = out_metas
        .iter()
        .map(|m| HostTensor::for_meta(m).map_err(|e| fail(OpStage::Infer, &format_args!("output {m}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    for t in &mut outputs {
        t.bytes_mut().fill(0xFF);
    }
    let out_bufs = outputs.iter().map(|t| upload(device, provider, t.bytes())).collect::<Result<Vec<_>, _>>()?;
    let workspace = device.alloc_zeroed(ws_bytes).map_err(|e| fail(OpStage::Workspace, &e))?;
    let mut env = device_env(device, Some(&workspace), ws_bytes);
    let in_place = provider.in_place();
    let mut in_args: Vec<InputView<'_>> =
        metas.iter().zip(&in_bufs).enumerate().map(|(i, (m, b))| input(m.clone(), b, in_place.contains(&i))).collect();
    let mut out_args: Vec<OutputView<'_>> =
        out_metas.iter().zip(&out_bufs).map(|(m, b)| output(m.clone(), b)).collect();
    launch_with(provider, &kernel, &mut env, &mut in_args, &mut out_args)?;
    device.synchronize().map_err(|e| fail(OpStage::Launch, &format_args!("after the launch: {e}")))?;
    for (t, b) in inputs.iter_mut().chain(outputs.iter_mut()).zip(in_bufs.iter().chain(&out_bufs)) {
        let bytes = b.to_host().map_err(|e| fail(OpStage::Launch, &e))?;
        let n = t.bytes().len();
        t.bytes_mut().copy_from_slice(&bytes[..n]);
    }
    Ok(outputs)
}

/// Creates `provider`'s kernel for an op with no inputs (e.g. `dummy_fill`) and runs it on
/// `device` into a new device buffer holding its one output; nothing goes through the host.
pub fn generate_on_device(
    provider: &Provider,
    attrs: &Attrs,
    device: &Arc<CudaDevice>,
) -> Result<(TensorMeta, DeviceBuffer), OpError> {
    let fail = |stage, e: &dyn std::fmt::Display| OpError::new(provider, stage, e.to_string());
    device.bind().map_err(|e| fail(OpStage::Create, &e))?;
    let out_metas = infer_with(provider, &[], attrs)?;
    let [meta] = out_metas.as_slice() else {
        return Err(fail(OpStage::Infer, &format_args!("{} outputs where one was expected", out_metas.len())));
    };
    let bytes =
        meta.byte_size().ok_or_else(|| fail(OpStage::Infer, &format_args!("output {meta} has no fixed size")))?;
    let kernel = create_with(provider, &[], attrs)?;
    let out = device.alloc_zeroed(bytes).map_err(|e| fail(OpStage::Launch, &e))?;
    launch_with(provider, &kernel, &mut device_env(device, None, 0), &mut [], &mut [output(meta.clone(), &out)])?;
    Ok((meta.clone(), out))
}
