//! Shared helpers for the workspace integration tests: where the built plugin dylibs and the
//! `rtllm` binary are (target/<profile>/, next to the test executable's `deps/` folder), a
//! registry of the built-in plugins, (`generation`) generating through the `Llm` API and
//! reading an engine's logits directly, and (`checkpoints`) edited copies of checkpoint fixtures.
//!
//! The dylibs come from `cargo build --workspace`; a test that needs them and finds none says
//! so instead of failing obscurely.

pub mod checkpoints;
pub mod compare;
mod generation;

pub use generation::{greedy, greedy_ids, last_logits, start, LogitsProbe};

use rtllm::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The built-in kernel plugins (package names; the dylib is `lib<name with _>.so`).
pub const BUILTIN_PLUGINS: &[&str] = &["rtllm-attention", "rtllm-elementwise", "rtllm-gemm", "rtllm-rmsnorm"];

/// The test fixture plugins.
pub const FIXTURE_FAULTY: &str = "rtllm-fixture-faulty";
pub const FIXTURE_ABI_MISMATCH: &str = "rtllm-fixture-abi-mismatch";
/// The ABI-mismatch fixture built with its `abi1` feature: a plugin of ABI 1 (0.1.0).
pub const FIXTURE_ABI_V1: &str = "rtllm-fixture-abi-mismatch+abi1";
/// The ABI-mismatch fixture built with its `abi2` feature: a plugin of ABI 2 (0.2.0).
pub const FIXTURE_ABI_V2: &str = "rtllm-fixture-abi-mismatch+abi2";

/// target/<profile> (or target/<triple>/<profile>): the parent of the test executable's `deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot locate the test executable: {e}"));
    let deps = exe.parent().unwrap_or_else(|| panic!("test executable {} has no parent dir", exe.display()));
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().map(Path::to_path_buf).unwrap_or_else(|| deps.to_path_buf())
    } else {
        deps.to_path_buf()
    }
}

/// The file name of a cdylib package's library on this platform.
pub fn dylib_file_name(package: &str) -> String {
    format!("{}{}{}", std::env::consts::DLL_PREFIX, package.replace('-', "_"), std::env::consts::DLL_SUFFIX)
}

/// The built dylib of `package` (panics with instructions if it is not built).
pub fn dylib_path(package: &str) -> PathBuf {
    let path = plugin_dir().join(dylib_file_name(package));
    assert!(path.is_file(), "plugin dylib {} not found: run `cargo build --workspace` first", path.display());
    path
}

/// The directory holding the built plugin dylibs (panics if the built-in ones are absent).
pub fn plugin_dir() -> PathBuf {
    let dir = target_dir();
    let missing: Vec<String> =
        BUILTIN_PLUGINS.iter().map(|p| dylib_file_name(p)).filter(|f| !dir.join(f).is_file()).collect();
    assert!(
        missing.is_empty(),
        "plugin dylibs not found in {}: {} missing; run `cargo build --workspace` first",
        dir.display(),
        missing.join(", ")
    );
    dir
}

/// The built-in plugins' dylib paths.
pub fn builtin_plugin_files() -> Vec<PathBuf> {
    BUILTIN_PLUGINS.iter().map(|p| dylib_path(p)).collect()
}

/// A registry of exactly the built-in plugins (no environment, no executable-dir scan),
/// loaded once per test binary. Panics if any of them fails to load.
pub fn registry() -> &'static Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry::load_paths(builtin_plugin_files());
        let errors: Vec<String> = registry.load_errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "built-in plugins failed to load:\n{}", errors.join("\n"));
        Arc::new(registry)
    })
}

/// A registry of these dylib files or directories.
pub fn registry_with(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Registry {
    Registry::load_paths(paths)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// Builds a standalone crate (not a workspace member) with cargo, the way an out-of-tree
/// author would, into target/out-of-tree, and returns the path of its cdylib `package`.
/// Repeated calls are cheap (cargo finds it fresh).
pub fn build_out_of_tree(crate_dir: &Path, package: &str) -> PathBuf {
    build_out_of_tree_with(crate_dir, package, None)
}

/// [`build_out_of_tree`] with a cargo feature enabled (into a target dir of its own, so both
/// variants of one crate can exist at once).
fn build_out_of_tree_with(crate_dir: &Path, package: &str, feature: Option<&str>) -> PathBuf {
    let dir = match feature {
        Some(f) => format!("out-of-tree-{f}"),
        None => "out-of-tree".to_string(),
    };
    let target = target_dir().parent().map(|t| t.join(&dir)).unwrap_or_else(|| PathBuf::from("target").join(&dir));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = crate_dir.join("Cargo.toml");
    let mut command = std::process::Command::new(cargo);
    command.arg("build").arg("--quiet").arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(&target);
    if let Some(f) = feature {
        command.arg("--features").arg(f);
    }
    let status = command.status().unwrap_or_else(|e| panic!("cannot run cargo to build {}: {e}", manifest.display()));
    assert!(status.success(), "building {} failed ({status})", manifest.display());
    let path = target.join("debug").join(dylib_file_name(package));
    assert!(path.is_file(), "{} built but {} is missing", manifest.display(), path.display());
    path
}

/// A test fixture plugin (tests/fixtures/plugins/*), built on demand.
pub fn fixture_dylib(package: &str) -> PathBuf {
    let (dir, crate_name, feature) = match package {
        FIXTURE_FAULTY => ("faulty", FIXTURE_FAULTY, None),
        FIXTURE_ABI_MISMATCH => ("abi-mismatch", FIXTURE_ABI_MISMATCH, None),
        FIXTURE_ABI_V1 => ("abi-mismatch", FIXTURE_ABI_MISMATCH, Some("abi1")),
        FIXTURE_ABI_V2 => ("abi-mismatch", FIXTURE_ABI_MISMATCH, Some("abi2")),
        other => panic!("unknown fixture plugin {other}"),
    };
    build_out_of_tree_with(&repo_root().join("tests/fixtures/plugins").join(dir), crate_name, feature)
}

/// The built `rtllm` binary (panics with instructions if it is not built).
pub fn rtllm_binary() -> PathBuf {
    let path = target_dir().join(format!("rtllm{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "rtllm binary not found at {}: run `cargo build --workspace` first", path.display());
    path
}
