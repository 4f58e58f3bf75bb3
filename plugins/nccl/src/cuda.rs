//! The CUDA provider of the collectives: ranks are threads of one process with one GPU each;
//! `launch` enqueues ncclAllReduce / ncclAllGather / ncclReduceScatter on the host's stream.
//! all_gather and reduce_scatter along an axis with dims before it (outer > 1) go through a
//! staging buffer in the workspace and strided 2-D copies (rank-major ↔ axis-major), so every
//! axis is supported. Launches only enqueue NCCL calls and copies: capture-safe.

use crate::comm::CommLease;
use crate::driver;
use crate::nccl_lib::dtype_code;
use crate::ops::collective_ops;
use crate::rendezvous::{self, Member, Signature, Slot};
use rtllm_plugin_api::shapes::collective::{self, Collective, CollectiveAttrs, Split};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, OutputView, PluginError, TensorMeta, TensorView,
};
use std::ffi::c_int;

collective_ops! {
    DeviceKind::Cuda, CudaCollective,
    CudaAllReduce = AllReduce: "sum of x over the ranks of a group with NCCL (ranks are threads of this process, one GPU each)";
    CudaAllGather = AllGather: "x of every rank of a group concatenated along `axis` in rank order, with NCCL";
    CudaReduceScatter = ReduceScatter: "slice `rank` along `axis` of the sum of x over the ranks of a group, with NCCL";
}

/// A CUDA collective kernel: one rank's share of its group's NCCL communicator.
pub struct CudaCollective {
    kind: Collective,
    spec: CollectiveAttrs,
    dtype: DType,
    code: c_int,
    /// None for world_size 1 (an identity copy).
    lease: Option<CommLease>,
    /// The launch gate (see the module docs); None for world_size 1 or when turned off.
    gate: Option<Member>,
    timeout: std::time::Duration,
}

/// The environment variable that turns the launch gate off (`0`).
pub const LAUNCH_GATE_ENV: &str = "RTLLM_NCCL_LAUNCH_GATE";

/// Whether the launch gate is on: unset or anything but `0`/`false`/`off`.
fn gate_enabled() -> bool {
    !matches!(std::env::var(LAUNCH_GATE_ENV).as_deref().map(str::trim), Ok("0" | "false" | "off"))
}

/// Whether a call of this shape needs the staging buffer (an axis with dims before it).
fn needs_staging(kind: Collective, split: &Split, world: usize) -> bool {
    world > 1 && kind != Collective::AllReduce && split.outer > 1
}

impl CudaCollective {
    pub fn new(kind: Collective, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Self, PluginError> {
        let op = kind.name();
        let (_, spec) = collective::infer_with_attrs(kind, inputs, attrs)?;
        let dtype = inputs[0].dtype;
        let code = dtype_code(dtype).ok_or_else(|| PluginError::new(format!("{op}: NCCL has no dtype {dtype}")))?;
        if !driver::driver_present() {
            return Err(PluginError::new(format!("{op}: {}", crate::error::NcclError::NoDriver)));
        }
        let timeout = rendezvous::timeout_from_env().map_err(|e| e.context(op))?;
        let (lease, gate) = match spec.world_size {
            1 => (None, None),
            w => {
                let lease = CommLease::acquire(&spec, timeout).map_err(|e| e.context(op))?;
                let gate = match gate_enabled() {
                    true => Some(Member::join(&format!("nccl-launch/{}", spec.group), &spec.group, w, spec.rank)?),
                    false => None,
                };
                (Some(lease), gate)
            }
        };
        Ok(CudaCollective { kind, spec, dtype, code, lease, gate, timeout })
    }

    /// Bytes of the staging buffer for x of this split (0 when none is needed).
    fn staging_bytes(&self, split: &Split) -> Option<usize> {
        if !needs_staging(self.kind, split, self.spec.world_size) {
            return Some(0);
        }
        // all_gather stages the gathered output, reduce_scatter the reordered input: both as
        // large as the larger of x and the output.
        let elements = match self.kind {
            Collective::AllGather => split.numel()?.checked_mul(self.spec.world_size)?,
            _ => split.numel()?,
        };
        self.dtype.bytes_for(elements)
    }
}

impl Kernel for CudaCollective {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let op = self.kind.name();
        let Some(x) = inputs.first() else { return Err(PluginError::new(format!("{op}: takes one input (x)"))) };
        let shape = x.concrete_shape().map_err(|e| e.context(op))?;
        let split = (shape.len() > self.spec.axis).then(|| Split::of(&shape, self.spec.axis)).flatten();
        split
            .and_then(|s| self.staging_bytes(&s))
            .ok_or_else(|| PluginError::new(format!("{op}: the workspace for x {x} overflows")))
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let op = self.kind.name();
        let split = collective::check_launch(self.kind, &self.spec, self.dtype, inputs, outputs)?;
        let (x, y) = (&inputs[0], &mut outputs[0]);
        if ctx.device() != DeviceKind::Cuda || x.device() != DeviceKind::Cuda || y.device() != DeviceKind::Cuda {
            return Err(PluginError::new(format!(
                "{op}: the CUDA provider needs a CUDA launch and device tensors, got a {} launch, x on {}, output on {}",
                ctx.device(), x.device(), y.device()
            )));
        }
        let numel = split.numel().unwrap_or(0);
        if numel == 0 {
            return Ok(());
        }
        let e = self.dtype.block_bytes();
        let (src, dst, stream) = (x.as_ptr() as u64, y.as_mut_ptr() as u64, ctx.stream());
        if self.lease.is_none() {
            // SAFETY: x and the output are device buffers of `numel` elements.
            return Ok(unsafe { driver::copy(dst, src, numel * e, stream) }?);
        }
        let staging = self.staging_bytes(&split).unwrap_or(0);
        let ws = ctx.device_workspace(staging).map_err(|e| e.context(op))?;
        let enqueue = || -> Result<(), PluginError> {
            // SAFETY: the host passes device buffers of the checked shapes, a workspace of at
            // least `staging` bytes, and its stream on this rank's device; the communicator is
            // live while this kernel holds its lease.
            unsafe { self.enqueue(&split, src, dst, ws, staging, stream) }
        };
        match &self.gate {
            Some(gate) if !driver::is_capturing(stream)? => {
                let sig = Signature { what: op, dtype: self.dtype, dims: [split.outer, split.len, split.inner] };
                let slot = Slot { input: src as usize, output: dst as usize, sig };
                let (rank, w) = (self.spec.rank, self.spec.world_size);
                gate.collective(slot, self.timeout, |_| enqueue())
                    .map_err(|e| PluginError::new(format!("{op}: rank {rank} of {w}: {e}")))
            }
            _ => enqueue(),
        }
    }
}

impl CudaCollective {
    /// Enqueues the NCCL call (and the layout copies around it) on `stream`.
    ///
    /// # Safety
    /// As in `launch`: device buffers of the checked shapes, a large enough workspace, and a
    /// stream on this rank's device.
    unsafe fn enqueue(
        &self,
        split: &Split,
        src: u64,
        dst: u64,
        ws: u64,
        staging: usize,
        stream: *mut std::ffi::c_void,
    ) -> Result<(), PluginError> {
        let Some(lease) = &self.lease else { return Ok(()) };
        let (nccl, comm, w) = (lease.nccl(), lease.handle(), self.spec.world_size);
        let (numel, e) = (split.numel().unwrap_or(0), self.dtype.block_bytes());
        unsafe {
            match self.kind {
                Collective::AllReduce => nccl.all_reduce(src, dst, numel, self.code, comm, stream)?,
                Collective::AllGather if staging == 0 => nccl.all_gather(src, dst, numel, self.code, comm, stream)?,
                Collective::AllGather => {
                    // ws [w, outer, L] → y [outer, w, L]
                    nccl.all_gather(src, ws, numel, self.code, comm, stream)?;
                    let l = split.row() * e;
                    for s in 0..w {
                        let from = ws + (s * split.outer * l) as u64;
                        driver::copy_2d(dst + (s * l) as u64, w * l, from, l, l, split.outer, stream)?;
                    }
                }
                Collective::ReduceScatter if staging == 0 => {
                    nccl.reduce_scatter(src, dst, numel / w, self.code, comm, stream)?
                }
                Collective::ReduceScatter => {
                    // x [outer, w, C] → ws [w, outer, C], reduce-scattered into y [outer, C]
                    let c = split.row() / w * e;
                    for s in 0..w {
                        let to = ws + (s * split.outer * c) as u64;
                        driver::copy_2d(to, c, src + (s * c) as u64, w * c, c, split.outer, stream)?;
                    }
                    nccl.reduce_scatter(ws, dst, numel / w, self.code, comm, stream)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::Op;

    #[test]
    fn creating_without_cuda_is_a_clear_error() {
        if driver::driver_present() {
            eprintln!("skipped: a CUDA driver is present, so the no-driver error path cannot be exercised");
            return;
        }
        let x = TensorMeta::of(DType::BF16, &[4, 8]);
        for world in [1i64, 2] {
            let attrs = Attrs::new().with("group", "no-cuda").with("rank", 0i64).with("world_size", world);
            let e = CudaAllReduce::create(std::slice::from_ref(&x), &attrs).err().expect("no driver");
            assert!(e.message().contains("CUDA is not available"), "{e}");
        }
        // Inference needs no device.
        let attrs = Attrs::new().with("group", "g").with("rank", 1i64).with("world_size", 2i64).with("axis", 1i64);
        let out = CudaAllGather::infer(&[x], &attrs).unwrap();
        assert_eq!(out[0].to_string(), "bf16[4, 16]");
    }

    #[test]
    fn staging_is_needed_only_with_dims_before_the_axis() {
        let s = |outer| Split { outer, len: 4, inner: 8 };
        assert!(!needs_staging(Collective::AllGather, &s(1), 2));
        assert!(needs_staging(Collective::AllGather, &s(3), 2));
        assert!(needs_staging(Collective::ReduceScatter, &s(3), 2));
        assert!(!needs_staging(Collective::AllReduce, &s(3), 2));
        assert!(!needs_staging(Collective::AllGather, &s(3), 1));
    }
}
