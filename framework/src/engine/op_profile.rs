//! Per-op GPU time (`RTLLM_PROFILE_OPS=1`): CUDA events around every node of eagerly run steps
//! (graphs are not captured while profiling), summed per op and printed when the engine drops.

use crate::device::{CudaDevice, CudaError, CudaEvent};
use std::collections::BTreeMap;

pub(super) struct OpProfile {
    events: Vec<CudaEvent>,
    /// op name → (total ms, launches); "(step)" holds whole forward passes.
    totals: BTreeMap<String, (f64, u64)>,
}

impl OpProfile {
    /// A profiler when `RTLLM_PROFILE_OPS` is set.
    pub fn from_env() -> Option<OpProfile> {
        std::env::var_os("RTLLM_PROFILE_OPS")
            .filter(|v| v != "0")
            .map(|_| OpProfile { events: Vec::new(), totals: BTreeMap::new() })
    }

    /// The event to record before node `i` (index `nodes` is the step's end).
    pub fn event(&mut self, device: &CudaDevice, i: usize) -> Result<&CudaEvent, CudaError> {
        while self.events.len() <= i {
            self.events.push(CudaEvent::new(device)?);
        }
        Ok(&self.events[i])
    }

    /// After a step whose nodes were `ops` (events 0..=ops.len() recorded): waits and adds up.
    pub fn collect<'a>(&mut self, device: &CudaDevice, ops: impl Iterator<Item = &'a str>) -> Result<(), CudaError> {
        device.synchronize()?;
        let mut n = 0;
        for (i, op) in ops.enumerate() {
            let ms = self.events[i + 1].elapsed_ms_since(&self.events[i])? as f64;
            let e = self.totals.entry(op.to_string()).or_default();
            e.0 += ms;
            e.1 += 1;
            n = i + 1;
        }
        let step = self.events[n].elapsed_ms_since(&self.events[0])? as f64;
        let e = self.totals.entry("(step)".into()).or_default();
        e.0 += step;
        e.1 += 1;
        Ok(())
    }
}

impl Drop for OpProfile {
    fn drop(&mut self) {
        let mut rows: Vec<_> = self.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        eprintln!("{:<20} {:>12} {:>10} {:>12}", "op (GPU time)", "total ms", "launches", "us/launch");
        for (op, (ms, n)) in rows {
            eprintln!("{op:<20} {ms:>12.3} {n:>10} {:>12.2}", ms * 1000.0 / *n as f64);
        }
    }
}
