//! The CPU provider of the collectives: ranks are threads of one process, each running its own
//! engine; a kernel joins the group named by its `group` attribute in the process-global
//! rendezvous (see `rendezvous`), and each launch is one collective call of that group.

use crate::host::{self, Float};
use crate::ops::collective_ops;
use crate::rendezvous::{self, Member, Signature, Slot};
use rtllm_plugin_api::shapes::collective::{self, Collective, CollectiveAttrs};
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, OutputView, PluginError, TensorMeta, TensorView,
};
use std::time::Duration;

collective_ops! {
    DeviceKind::Cpu, CpuCollective,
    AllReduce = AllReduce: "sum of x over the ranks of a group (ranks are threads of this process); f32 accumulation in rank order";
    AllGather = AllGather: "x of every rank of a group concatenated along `axis` in rank order (ranks are threads of this process)";
    ReduceScatter = ReduceScatter: "slice `rank` along `axis` of the sum of x over the ranks of a group (ranks are threads of this process)";
}

/// Key of a CPU group in the rendezvous registry.
pub fn group_key(group: &str) -> String {
    format!("cpu/{group}")
}

/// A CPU collective kernel: one rank's member of its group.
pub struct CpuCollective {
    kind: Collective,
    spec: CollectiveAttrs,
    dtype: DType,
    timeout: Duration,
    /// None for world_size 1 (an identity copy needs no group).
    member: Option<Member>,
}

impl CpuCollective {
    pub fn new(kind: Collective, inputs: &[TensorMeta], attrs: &Attrs) -> Result<Self, PluginError> {
        let (_, spec) = collective::infer_with_attrs(kind, inputs, attrs)?;
        let timeout = rendezvous::timeout_from_env().map_err(|e| e.context(kind.name()))?;
        let member = match spec.world_size {
            1 => None,
            w => Some(Member::join(&group_key(&spec.group), &spec.group, w, spec.rank)?),
        };
        Ok(CpuCollective { kind, dtype: inputs[0].dtype, spec, timeout, member })
    }

    fn run<T: Float>(&self, ctx: &LaunchContext, slots: &[Slot], split: collective::Split) -> Result<(), PluginError> {
        let rank = self.spec.rank;
        let numel = split.numel().unwrap_or(0);
        // SAFETY: every rank checked its arguments against the same signature (the rendezvous
        // compares them), so each slot's buffers have the sizes these functions index; they
        // stay valid until the second barrier, which every rank passes only after all work.
        unsafe {
            match self.kind {
                Collective::AllReduce => host::all_reduce::<T>(ctx, slots, rank, numel),
                Collective::AllGather => host::all_gather(ctx, slots, rank, split, std::mem::size_of::<T>()),
                Collective::ReduceScatter => host::reduce_scatter::<T>(ctx, slots, rank, split),
            }
        }
    }
}

impl Kernel for CpuCollective {
    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let op = self.kind.name();
        let split = collective::check_launch(self.kind, &self.spec, self.dtype, inputs, outputs)?;
        let (x, y) = (&inputs[0], &mut outputs[0]);
        if x.device() != DeviceKind::Cpu || y.device() != DeviceKind::Cpu {
            return Err(PluginError::new(format!(
                "{op}: the CPU provider needs host tensors, got x on {} and output on {}",
                x.device(),
                y.device()
            )));
        }
        let numel = split.numel().unwrap_or(0);
        // Raw addresses: the ranks (threads) of a collective read each other's buffers.
        let (src, dst) = (x.as_ptr(), y.as_mut_ptr());
        if numel > 0 && (src.is_null() || dst.is_null()) {
            return Err(PluginError::new(format!("{op}: null data pointer for x {} or output {}", x.meta(), y.meta())));
        }
        let Some(member) = &self.member else {
            // SAFETY: x and the output both hold `numel` elements of the kernel's dtype.
            unsafe { host::identity(src, dst, numel * self.dtype.block_bytes()) };
            return Ok(());
        };
        let slot = Slot {
            input: src as usize,
            output: dst as usize,
            sig: Signature { what: op, dtype: self.dtype, dims: [split.outer, split.len, split.inner] },
        };
        let result = member.collective(slot, self.timeout, |slots| match self.dtype {
            DType::F32 => self.run::<f32>(ctx, slots, split),
            DType::BF16 => self.run::<half::bf16>(ctx, slots, split),
            DType::F16 => self.run::<half::f16>(ctx, slots, split),
            other => Err(PluginError::new(format!("{op}: unsupported dtype {other}"))),
        });
        result.map_err(|e| PluginError::new(format!("rank {} of {}: {e}", self.spec.rank, self.spec.world_size)))
    }
}
