//! The `rtllm` binary: a thin shell over `rtllm::cli`.

fn main() -> std::process::ExitCode {
    rtllm::cli::main()
}
