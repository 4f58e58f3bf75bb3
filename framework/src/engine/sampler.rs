//! The device sampler: a `sample` kernel run after the graph on its logits rows and the staged
//! per-row parameters, writing one token id per row into the step I/O's token region. Its
//! arguments are rebuilt only when the number of rows changes.

use super::error::EngineError;
use super::executable::{launch_kernel, tensor_arg, KernelArgs};
use super::step_io::{Region, StepIo};
use rtllm_plugin_api::{DType, DeviceKind, KernelBox, LaunchContext, TensorMeta};

pub(super) struct DeviceSampler {
    kernel: KernelBox,
    /// The arguments for the last number of rows.
    args: Option<(usize, KernelArgs)>,
}

/// Where the sampler reads the logits.
pub(super) struct Logits {
    pub addr: *mut u8,
    pub dtype: DType,
    pub vocab: usize,
    /// Rows the graph computed (padding included).
    pub rows: usize,
}

impl DeviceSampler {
    pub fn new(kernel: KernelBox) -> DeviceSampler {
        DeviceSampler { kernel, args: None }
    }

    /// Samples one token per logits row into `io`'s token region.
    pub fn launch(
        &mut self,
        ctx: &LaunchContext,
        logits: &Logits,
        io: &StepIo,
        device: DeviceKind,
    ) -> Result<(), EngineError> {
        let rows = logits.rows;
        if self.args.as_ref().map(|(l, _)| *l) != Some(rows) {
            let meta = |dtype: DType, dims: &[usize]| TensorMeta::of(dtype, dims);
            let at = |r: Region| io.addr(r);
            // SAFETY: every address is an engine buffer sized for max_batch_size rows.
            let args = unsafe {
                KernelArgs {
                    inputs: vec![
                        tensor_arg(meta(logits.dtype, &[rows, logits.vocab]), logits.addr, device),
                        tensor_arg(meta(DType::F32, &[rows]), at(Region::Temperature), device),
                        tensor_arg(meta(DType::I32, &[rows]), at(Region::TopK), device),
                        tensor_arg(meta(DType::F32, &[rows]), at(Region::TopP), device),
                        tensor_arg(meta(DType::I64, &[rows]), at(Region::Seeds), device),
                    ],
                    outputs: vec![tensor_arg(meta(DType::I32, &[rows]), at(Region::Tokens), device)],
                }
            };
            self.args = Some((rows, args));
        }
        let Some((_, args)) = &self.args else { return Ok(()) };
        launch_kernel(&self.kernel, ctx, args).map_err(|e| EngineError::Kernel {
            scope: "output".into(),
            op: "sample".into(),
            plugin: "sampler".into(),
            message: e.to_string(),
        })
    }
}
