//! The `rtllm plugins` subcommands, run as the built binary: `list` shows each op with the
//! dylib file serving it; `check` passes on the built-in plugins.

use rtllm_tests::{builtin_plugin_files, fixture_dylib, registry, rtllm_binary, BUILTIN_PLUGINS, FIXTURE_ABI_MISMATCH};
use std::process::Command;

fn rtllm(args: &[&str]) -> (bool, String, String) {
    rtllm_with_plugin_path(args, None)
}

/// Runs the binary; `plugin_path` becomes RTLLM_PLUGIN_PATH (else it is unset).
fn rtllm_with_plugin_path(args: &[&str], plugin_path: Option<&std::path::Path>) -> (bool, String, String) {
    let mut cmd = Command::new(rtllm_binary());
    cmd.args(args).env_remove("RTLLM_PLUGIN_PATH");
    if let Some(p) = plugin_path {
        cmd.env("RTLLM_PLUGIN_PATH", p);
    }
    let out = cmd
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
    let mismatch = fixture_dylib(FIXTURE_ABI_MISMATCH);
    let (ok, stdout, stderr) = rtllm_with_plugin_path(&["plugins", "list"], Some(&mismatch));
    assert!(ok, "plugins list failed:\n{stdout}\n{stderr}");
    let files = builtin_plugin_files();
    for (op, providers) in registry().ops() {
        // One line per provider (the CUDA plugin next to the binary adds its own).
        let lines: Vec<&str> = stdout.lines().filter(|l| l.split_whitespace().next() == Some(op)).collect();
        assert!(!lines.is_empty(), "op {op} not listed:\n{stdout}");
        assert!(providers.iter().any(|p| stdout.contains(&p.plugin)), "{op}: provider missing:\n{stdout}");
        assert!(
            lines.iter().any(|l| files.iter().any(|f| l.contains(&*f.to_string_lossy())) || l.contains("fixture")),
            "{op}: file missing in {lines:?}"
        );
    }
    // The ABI-mismatch fixture on RTLLM_PLUGIN_PATH is listed as a load error.
    assert!(stdout.contains("LOAD ERRORS") && stdout.contains("abi_mismatch"), "{stdout}");
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
    // Filters that name a missing plugin fail; an unfiltered check fails when a plugin on the
    // path did not load, and passes when everything loaded.
    let (ok, stdout, _) = rtllm(&["plugins", "check", "--op", "matmul"]);
    assert!(ok, "{stdout}");
    let (ok, stdout, _) = rtllm(&["plugins", "check", "--plugin", "rtllm-gemm", "--plugin", "no-such-plugin"]);
    assert!(!ok, "{stdout}");
    let mismatch = fixture_dylib(FIXTURE_ABI_MISMATCH);
    let (ok, stdout, _) = rtllm_with_plugin_path(&["plugins", "check"], Some(&mismatch));
    assert!(!ok, "an unfiltered check must fail on the load error:\n{stdout}");
    let (ok, stdout, _) = rtllm(&["plugins", "check", "--seed", "3"]);
    assert!(ok, "an unfiltered check of the built-in plugins passes:\n{stdout}");
}
