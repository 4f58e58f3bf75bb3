//! The memory an engine is about to take, checked before it allocates any of it: each part
//! (activation arena, kernel workspace, step inputs, logits readback, KV cache pools and the KV
//! manager's per-block entries) is computed with checked arithmetic from the limits, and the
//! parts on the host are compared with what the host has (`MemAvailable`, capped by the
//! cgroup's limit), those on a GPU with its free memory. A build that cannot fit fails with a
//! message naming the largest part and the setting that sizes it, instead of the allocator
//! aborting the process ("memory allocation of N bytes failed").

use super::error::EngineError;
use crate::device::CudaDevice;
use std::sync::Arc;

/// Host bytes the KV cache manager keeps per block (reference count, prefix key, LRU tick:
/// `runtime::kv_cache::pool`), rounded up.
pub(super) const KV_BLOCK_ENTRY_BYTES: usize = 128;

/// One allocation the engine will make.
pub(super) struct Part {
    pub what: &'static str,
    /// None: the size overflows.
    pub bytes: Option<usize>,
    /// The settings that size it, as a user would change them.
    pub sized_by: &'static str,
    /// On the GPU (else host memory, pinned or not).
    pub on_device: bool,
}

impl Part {
    pub fn host(what: &'static str, bytes: Option<usize>, sized_by: &'static str) -> Part {
        Part { what, bytes, sized_by, on_device: false }
    }
}

/// `a * b * ...`, or None on overflow.
pub(super) fn product(factors: &[usize]) -> Option<usize> {
    factors.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Checks that `parts` can be allocated: no size overflows, the host parts fit the memory the
/// host has available and the device parts the free memory of `device`.
pub(super) fn check(parts: &[Part], device: Option<&Arc<CudaDevice>>) -> Result<(), EngineError> {
    for p in parts {
        if p.bytes.is_none() {
            return Err(EngineError::Setup(format!("the {} size overflows; lower {}", p.what, p.sized_by)));
        }
    }
    let side = |on_device: bool| parts.iter().filter(move |p| p.on_device == on_device);
    let total = |on_device: bool| side(on_device).try_fold(0usize, |a, p| a.checked_add(p.bytes.unwrap_or(0)));
    let check_side = |on_device: bool, available: usize, place: &str| -> Result<(), EngineError> {
        let need = total(on_device).unwrap_or(usize::MAX);
        if need <= available {
            return Ok(());
        }
        let largest = side(on_device).max_by_key(|p| p.bytes.unwrap_or(0));
        let (what, bytes, sized_by) = largest.map(|p| (p.what, p.bytes.unwrap_or(0), p.sized_by)).unwrap_or_default();
        Err(EngineError::Setup(format!(
            "the engine needs {} of {place} memory but {} is available; the largest part is the {what} \
             ({}), sized by {sized_by}: lower it",
            gib(need),
            gib(available),
            gib(bytes)
        )))
    };
    if let Some(available) = host_available() {
        check_side(false, available, "host")?;
    }
    if let Some(d) = device {
        if side(true).next().is_some() {
            let (free, _) = d.mem_info().map_err(|e| EngineError::Setup(format!("reading free GPU memory: {e}")))?;
            check_side(true, free, "GPU")?;
        }
    }
    Ok(())
}

/// Bytes the host can still give this process: `MemAvailable` from /proc/meminfo, capped by
/// what the cgroup (v2) still allows. None where neither can be read (the check is skipped).
pub fn host_available() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|m| meminfo_kib(m, "MemAvailable:")).map(|kib| kib * 1024);
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => max
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|max| current.trim().parse::<usize>().ok().map(|c| max.saturating_sub(c))),
        _ => None,
    };
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// The value in KiB of a `/proc/meminfo` line such as `MemAvailable:  123456 kB`.
fn meminfo_kib(meminfo: &str, key: &str) -> Option<usize> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_parse() {
        let m = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(meminfo_kib(m, "MemAvailable:"), Some(22_000_000));
        assert_eq!(meminfo_kib(m, "SwapFree:"), None);
        assert!(host_available().is_some_and(|b| b > 0), "this Linux host reports its available memory");
    }

    #[test]
    fn oversized_and_overflowing_parts_name_their_setting() {
        let kv = Part::host("KV cache", product(&[1 << 20, 1 << 20, 1 << 4]), "num_kv_blocks (--num-kv-blocks)");
        let small = Part::host("activation arena", Some(1 << 20), "max_num_tokens (--max-num-tokens)");
        let e = check(&[small, kv], None).unwrap_err().to_string();
        assert!(e.contains("host memory but") && e.contains("the largest part is the KV cache (16384.00 GiB)"), "{e}");
        assert!(e.contains("sized by num_kv_blocks (--num-kv-blocks): lower it"), "{e}");
        let over = Part::host("step inputs", product(&[usize::MAX, 2]), "max_batch_size (--max-batch-size)");
        let e = check(&[over], None).unwrap_err().to_string();
        assert_eq!(e, "engine setup: the step inputs size overflows; lower max_batch_size (--max-batch-size)");
        check(&[Part::host("arena", Some(4096), "x")], None).expect("4 KiB fits");
    }
}
