//! The `rtllm plugins` subcommands, run as the built binary: `list` shows each op with the
//! dylib file serving it; `check` passes on the built-in plugins.

use rtllm_tests::{builtin_plugin_files, registry, rtllm_binary, BUILTIN_PLUGINS};
use std::process::Command;

fn rtllm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rtllm_binary())
        .args(args)
        .env_remove("RTLLM_PLUGIN_PATH")
        .env("RTLLM_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", rtllm_binary().display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_shows_every_op_with_its_file() {
    let (ok, stdout, stderr) = rtllm(&["plugins", "list"]);
    assert!(ok, "plugins list failed:\n{stdout}\n{stderr}");
    let files = builtin_plugin_files();
    for (op, providers) in registry().ops() {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(op))
            .unwrap_or_else(|| panic!("op {op} not listed:\n{stdout}"));
        assert!(
            providers.iter().any(|p| stdout.contains(&p.plugin)),
            "{op}: provider missing:\n{stdout}"
        );
        assert!(
            files.iter().any(|f| line.contains(&*f.to_string_lossy())) || line.contains("fixture"),
            "{op}: file missing in {line}"
        );
    }
    // The binary's own directory holds the ABI-mismatch fixture: it is listed as a load error.
    assert!(
        stdout.contains("LOAD ERRORS") && stdout.contains("abi_mismatch"),
        "{stdout}"
    );
}

#[test]
fn check_passes_on_the_builtin_plugins() {
    let mut args = vec!["plugins", "check", "--seed", "7"];
    for p in BUILTIN_PLUGINS {
        args.extend(["--plugin", p]);
    }
    let (ok, stdout, stderr) = rtllm(&args);
    assert!(ok, "plugins check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS") && !stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
}

#[test]
fn check_fails_on_a_broken_kernel_and_on_load_errors() {
    // fixture_panic has no reference and no examples: skipped, not failed; but an unfiltered
    // check fails because the ABI-mismatch fixture next to the binary did not load.
    let (ok, stdout, _) = rtllm(&["plugins", "check", "--op", "matmul"]);
    assert!(ok, "{stdout}");
    let (ok, stdout, _) = rtllm(&[
        "plugins",
        "check",
        "--plugin",
        "rtllm-gemm",
        "--plugin",
        "no-such-plugin",
    ]);
    assert!(!ok, "{stdout}");
    let (ok, stdout, _) = rtllm(&["plugins", "check"]);
    assert!(!ok, "an unfiltered check must fail on the load error:\n{stdout}");
}
