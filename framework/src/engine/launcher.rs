//! How a step's nodes are launched: the executable graph wrapped by what replays or observes
//! it — a CUDA graph captured per decode bucket and replayed after, the per-op GPU profiler
//! (`RTLLM_PROFILE_OPS`, eager steps, no graphs) and the per-step profiler
//! (`RTLLM_PROFILE_STEPS`), the calibration observer (`observe`: matmul inputs and k/v recorded node by
//! node, eager steps, no graphs) — and on the CPU the host pool the whole step runs inside.

use super::decode_graphs::DecodeGraphs;
use super::error::EngineError;
use super::executable::ExecutableGraph;
use super::observe::{ActivationStats, MatmulObserver};
use super::op_profile::OpProfile;
use super::step_profile::StepProfile;
use crate::device::CudaDevice;
use crate::host_pool::HostPool;
use rtllm_plugin_api::{DeviceKind, LaunchEnv};
use std::sync::Arc;

pub(super) struct Launcher {
    device: Option<Arc<CudaDevice>>,
    graphs: Option<DecodeGraphs>,
    profile: Option<OpProfile>,
    step_profile: Option<StepProfile>,
    observer: Option<MatmulObserver>,
    pool: &'static HostPool,
    /// Run CPU steps inside `pool` (off when collectives block: see `Placement`).
    step_in_pool: bool,
}

impl Launcher {
    /// On a GPU: decode graphs when `cuda_graphs` (and no per-op profile or observer),
    /// profilers from the environment. On the host: steps inside the global host pool when
    /// `step_in_pool`. With `observer`, every step runs eagerly, node by node, observed.
    pub fn new(
        device: Option<Arc<CudaDevice>>,
        cuda_graphs: bool,
        step_in_pool: bool,
        limits: (usize, usize),
        observer: Option<MatmulObserver>,
    ) -> Launcher {
        let (max_batch_size, max_num_tokens) = limits;
        let profile = device.as_ref().and_then(|_| OpProfile::from_env());
        let step_profile = device.as_ref().and_then(|d| StepProfile::from_env(d));
        let graphs = (device.is_some() && cuda_graphs && profile.is_none() && observer.is_none())
            .then(|| DecodeGraphs::new(max_batch_size, max_num_tokens));
        Launcher { device, graphs, profile, step_profile, observer, pool: HostPool::global(), step_in_pool }
    }

    /// What the calibration observer has recorded (None: this engine observes nothing).
    pub fn activation_stats(&self) -> Option<&ActivationStats> {
        self.observer.as_ref().map(MatmulObserver::stats)
    }

    /// The bucket a decode step of `seqs` sequences is padded to and replayed as (None: no
    /// graphs, or too many sequences).
    pub fn bucket_for(&self, seqs: usize) -> Option<usize> {
        self.graphs.as_ref().and_then(|g| g.bucket_for(seqs))
    }

    /// Decode-step CUDA graphs captured so far.
    pub fn captured(&self) -> usize {
        self.graphs.as_ref().map_or(0, |g| g.captured())
    }

    /// Drops the captured graphs (before the kernels they launch go).
    pub fn release_graphs(&mut self) {
        self.graphs = None;
    }

    /// The environment every kernel of a step launches in.
    ///
    /// # Safety
    /// `workspace` must address that many bytes (host or device memory, as the launcher's
    /// device), valid while the environment is used, and used by no one else meanwhile.
    pub unsafe fn env(&self, workspace: (*mut u8, usize)) -> LaunchEnv<'static> {
        let device = if self.device.is_some() { DeviceKind::Cuda } else { DeviceKind::Cpu };
        let ordinal = self.device.as_ref().map_or(0, |d| d.ordinal as i32);
        let stream = self.device.as_ref().map_or(std::ptr::null_mut(), |d| d.stream());
        // SAFETY: the caller's contract on the workspace; the stream is this device's.
        unsafe { LaunchEnv::new(device, ordinal, stream, workspace.0, workspace.1, self.pool.services()) }
    }

    /// Runs the prepared `exe` once: replays (or first captures) `bucket`'s decode graph,
    /// profiles it op by op, or launches it eagerly (on the CPU inside the host pool).
    pub fn run(
        &mut self,
        exe: &mut ExecutableGraph,
        env: &mut LaunchEnv<'_>,
        bucket: Option<usize>,
    ) -> Result<(), EngineError> {
        match (bucket, self.graphs.as_ref().and_then(|g| bucket.and_then(|b| g.get(b)))) {
            (Some(_), Some(graph)) => graph.launch().map_err(|e| EngineError::device("graph launch", e)),
            (Some(b), None) => self.capture(exe, env, b),
            (None, _) if self.observer.is_some() => self.launch_observed(exe, env),
            (None, _) if self.profile.is_some() => self.launch_profiled(exe, env),
            (None, _) if self.device.is_none() && self.step_in_pool => {
                // On the CPU the whole step runs inside the host pool: each kernel's
                // parallel_for then starts from a pool thread (~1.5 µs) instead of being
                // injected from this one (~6 µs), some 400 times a decode step.
                self.pool.install(|| exe.launch(env))
            }
            (None, _) => exe.launch(env),
        }
    }

    /// The first run of decode bucket `b`: runs it, then records the same launches for replay.
    fn capture(&mut self, exe: &mut ExecutableGraph, env: &mut LaunchEnv<'_>, b: usize) -> Result<(), EngineError> {
        exe.launch(env)?;
        let device = self.device.clone().ok_or_else(|| EngineError::Setup("graphs need a GPU".into()))?;
        device.begin_capture().map_err(|e| EngineError::device("begin capture", e))?;
        let recorded = exe.launch(env);
        let graph = device.end_capture();
        recorded?;
        let graph = graph.map_err(|e| EngineError::device("end capture", e))?;
        if let Some(g) = self.graphs.as_mut() {
            g.insert(b, graph);
        }
        tracing::debug!(bucket = b, "captured a decode-step CUDA graph");
        Ok(())
    }

    /// `exe.launch` node by node, the observer recording each observed node's activation input
    /// before the node runs (on the CPU inside the host pool, as an unobserved step).
    fn launch_observed(&mut self, exe: &mut ExecutableGraph, env: &mut LaunchEnv<'_>) -> Result<(), EngineError> {
        let Some(mut observer) = self.observer.take() else { return exe.launch(env) };
        let device = self.device.clone();
        let mut step = || -> Result<(), EngineError> {
            for i in 0..exe.graph().nodes.len() {
                for (k, name) in observer.observed(i) {
                    let input =
                        exe.input(i, k).ok_or_else(|| EngineError::Setup(format!("node {i} has no input {k}")))?;
                    observer.record(&name, input, device.as_ref())?;
                }
                exe.launch_node(i, env)?;
            }
            Ok(())
        };
        let result = if device.is_none() && self.step_in_pool { self.pool.install(step) } else { step() };
        self.observer = Some(observer);
        result
    }

    /// `exe.launch` with an event before each node and after the last (RTLLM_PROFILE_OPS).
    fn launch_profiled(&mut self, exe: &mut ExecutableGraph, env: &mut LaunchEnv<'_>) -> Result<(), EngineError> {
        let (Some(device), Some(mut profile)) = (self.device.clone(), self.profile.take()) else {
            return exe.launch(env);
        };
        let count = exe.graph().nodes.len();
        let mut result = Ok(());
        for i in 0..count {
            if let Err(e) = profile.event(&device, i).and_then(|ev| ev.record(&device)) {
                result = Err(EngineError::device("profile event", e));
                break;
            }
            if let Err(e) = exe.launch_node(i, env) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            let nodes = &exe.graph().nodes;
            let end = profile.event(&device, nodes.len()).and_then(|ev| ev.record(&device));
            let collected = end.and_then(|_| profile.collect(&device, nodes.iter().map(|n| n.op.as_str())));
            result = collected.map_err(|e| EngineError::device("profile", e));
        }
        self.profile = Some(profile);
        result
    }

    /// At the start of a device-sampled step (RTLLM_PROFILE_STEPS).
    pub fn begin_step(&mut self) -> Result<(), EngineError> {
        if let (Some(p), Some(d)) = (self.step_profile.as_mut(), self.device.as_ref()) {
            p.begin(d).map_err(|e| EngineError::Setup(format!("step profile: {e}")))?;
        }
        Ok(())
    }

    /// After the step's last kernel (the sampler) is enqueued.
    pub fn end_step(&self) -> Result<(), EngineError> {
        if let (Some(p), Some(d)) = (self.step_profile.as_ref(), self.device.as_ref()) {
            p.mark_end(d).map_err(|e| EngineError::Setup(format!("step profile: {e}")))?;
        }
        Ok(())
    }

    /// After the step's tokens were read back.
    pub fn finish_step(&mut self, decode_only: bool) -> Result<(), EngineError> {
        if let Some(p) = self.step_profile.as_mut() {
            p.finish(decode_only).map_err(|e| EngineError::Setup(format!("step profile: {e}")))?;
        }
        Ok(())
    }
}
