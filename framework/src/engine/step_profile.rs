//! Per-step GPU time against host time (`RTLLM_PROFILE_STEPS=1`): CUDA events around each
//! device-sampled step (inputs upload to the sampled tokens), the wall time of the call, and
//! the host time between calls (the executor's scheduling, detokenizing, streaming), summed
//! for decode-only steps and for the others and printed when the engine drops. Graphs stay
//! on, so the decode numbers are those of the replayed CUDA graphs.

use crate::device::{CudaDevice, CudaError, CudaEvent};
use std::time::Instant;

#[derive(Default)]
struct Totals {
    steps: u64,
    gpu_ms: f64,
    call_ms: f64,
    gap_ms: f64,
}

pub(super) struct StepProfile {
    start: CudaEvent,
    end: CudaEvent,
    call_start: Option<Instant>,
    last_end: Option<Instant>,
    gap_ms: f64,
    /// [decode-only steps, other steps].
    totals: [Totals; 2],
}

impl StepProfile {
    /// A profiler when `RTLLM_PROFILE_STEPS` is set (and not `0`).
    pub fn from_env(device: &CudaDevice) -> Option<StepProfile> {
        std::env::var_os("RTLLM_PROFILE_STEPS").filter(|v| v != "0")?;
        let (start, end) = (CudaEvent::new(device).ok()?, CudaEvent::new(device).ok()?);
        Some(StepProfile { start, end, call_start: None, last_end: None, gap_ms: 0.0, totals: Default::default() })
    }

    /// At the start of a step, before its inputs are uploaded.
    pub fn begin(&mut self, device: &CudaDevice) -> Result<(), CudaError> {
        let now = Instant::now();
        self.gap_ms = self.last_end.map_or(0.0, |t| now.duration_since(t).as_secs_f64() * 1e3);
        self.call_start = Some(now);
        self.start.record(device)
    }

    /// After the step's last kernel is enqueued.
    pub fn mark_end(&self, device: &CudaDevice) -> Result<(), CudaError> {
        self.end.record(device)
    }

    /// After the step's results were synchronized back: adds the step up.
    pub fn finish(&mut self, decode_only: bool) -> Result<(), CudaError> {
        let now = Instant::now();
        let gpu = self.end.elapsed_ms_since(&self.start)? as f64;
        let t = &mut self.totals[usize::from(!decode_only)];
        t.steps += 1;
        t.gpu_ms += gpu;
        t.call_ms += self.call_start.map_or(0.0, |s| now.duration_since(s).as_secs_f64() * 1e3);
        t.gap_ms += self.gap_ms;
        self.last_end = Some(now);
        Ok(())
    }
}

impl Drop for StepProfile {
    fn drop(&mut self) {
        eprintln!(
            "{:<14} {:>7} {:>14} {:>14} {:>16}",
            "steps", "count", "GPU us/step", "call us/step", "host gap us/step"
        );
        for (name, t) in ["decode-only", "other"].iter().zip(&self.totals) {
            let per = |ms: f64| ms * 1000.0 / t.steps.max(1) as f64;
            eprintln!(
                "{name:<14} {:>7} {:>14.1} {:>14.1} {:>16.1}",
                t.steps,
                per(t.gpu_ms),
                per(t.call_ms),
                per(t.gap_ms)
            );
        }
    }
}
