//! Process-wide glibc allocator tuning for the `rtllm` binary, kept out of the library (a
//! library must not change its host's allocator). While loading, big allocations get their own
//! mappings so untouched and freed pages are not resident; once the model is loaded, the heap
//! freed while loading goes back to the OS and per-step buffers reuse heap memory. Together
//! they keep the peak RSS of `rtllm generate` down. No-ops off glibc.

/// While loading, keeps glibc from holding freed memory: big allocations (≥ 128 KiB: KV pools,
/// the arena, file buffers) get their own mappings, so pages never written (a KV pool's scratch
/// block, blocks no sequence reached) are not resident and freed ones go back at once. glibc
/// raises that threshold after each big free otherwise, and the KV pools land in the heap.
/// [`release_freed_heap`] raises it again once loaded.
pub fn limit_heap_retention() {
    set_mmap_threshold(128 * 1024);
}

/// Hands the heap pages freed while loading (tokenizer parsing, plan JSON, build scratch) back
/// to the OS: glibc keeps them resident otherwise, a few MiB of peak RSS while generating.
/// Then lets per-step buffers below 1 MiB (a logits row) reuse heap memory instead of mapping
/// and faulting in fresh pages every step.
pub fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it is thread-safe.
        unsafe { malloc_trim(0) };
    }
    set_mmap_threshold(1 << 20);
}

fn set_mmap_threshold(bytes: std::ffi::c_int) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only changes allocator tuning; setting the threshold is thread-safe.
        unsafe { mallopt(M_MMAP_THRESHOLD, bytes) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}
