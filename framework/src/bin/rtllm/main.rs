//! The `rtllm` binary: a thin shell over `rtllm::cli`, plus what only a binary may do to the
//! process (the allocator tuning in `alloc`, around the model load).

mod alloc;

fn main() -> std::process::ExitCode {
    alloc::limit_heap_retention();
    rtllm::cli::main_with(rtllm::cli::Hooks { after_model_load: alloc::release_freed_heap })
}
