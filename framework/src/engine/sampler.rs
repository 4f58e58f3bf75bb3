//! The device sampler: a `sample` kernel run after the graph on its logits rows and the staged
//! per-row parameters, writing one token id per row into the step I/O's token region. Its
//! arguments are rebuilt only when the number of rows changes.

use super::error::EngineError;
use super::executable::{input_view, launch_kernel, output_view, KernelArgs};
use super::step_io::{Region, StepIo};
use rtllm_plugin_api::{DType, DeviceKind, KernelBox, LaunchEnv, TensorMeta};

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
        env: &mut LaunchEnv<'_>,
        logits: &Logits,
        io: &StepIo,
        device: DeviceKind,
    ) -> Result<(), EngineError> {
        let rows = logits.rows;
        if self.args.as_ref().map(|(l, _)| *l) != Some(rows) {
            let meta = |dtype: DType, dims: &[usize]| TensorMeta::of(dtype, dims);
            let at = |r: Region| io.addr(r);
            // SAFETY: every address is a distinct engine buffer sized for max_batch_size rows;
            // the sampler only writes the token region.
            let args = unsafe {
                KernelArgs {
                    inputs: vec![
                        input_view(meta(logits.dtype, &[rows, logits.vocab]), logits.addr, device, false),
                        input_view(meta(DType::F32, &[rows]), at(Region::Temperature), device, false),
                        input_view(meta(DType::I32, &[rows]), at(Region::TopK), device, false),
                        input_view(meta(DType::F32, &[rows]), at(Region::TopP), device, false),
                        input_view(meta(DType::I64, &[rows]), at(Region::Seeds), device, false),
                    ],
                    outputs: vec![output_view(meta(DType::I32, &[rows]), at(Region::Tokens), device)],
                }
            };
            self.args = Some((rows, args));
        }
        let Some((_, args)) = &mut self.args else { return Ok(()) };
        launch_kernel(&self.kernel, env, args).map_err(|e| EngineError::Kernel {
            scope: "output".into(),
            op: "sample".into(),
            plugin: "sampler".into(),
            message: e.to_string(),
        })
    }
}
