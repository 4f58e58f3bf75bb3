//! The one model loader refuses what cannot work, with errors that say why: an engine directory
//! with a model definition, with tensor parallelism or on another device than it was built
//! for; `rtllm build` of an engine directory or a tensor-parallel build; a missing model file,
//! an unreadable definition, a missing default model; and the CLI's conflicting model flags.

use rtllm::engine::BuildConfig;
use rtllm::model::{write_engine_dir, Model, ModelError, ModelSpec};
use rtllm::weights::dummy::DummySpec;
use rtllm_plugin_api::DeviceKind;
use rtllm_tests::registry;
use std::path::Path;

fn tiny() -> ModelSpec {
    ModelSpec::dummy(DummySpec::new("tiny-llama"))
}

fn load_error(spec: &ModelSpec, build: &BuildConfig) -> ModelError {
    match Model::load(spec, registry(), build) {
        Ok(_) => panic!("{spec:?} loaded"),
        Err(e) => e,
    }
}

fn llama_toml() -> std::path::PathBuf {
    rtllm_tests::repo_root().join("models/configs/llama.toml")
}

/// An engine directory of the tiny dummy model.
fn engine_dir(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("engine");
    write_engine_dir(&tiny(), registry(), &BuildConfig::default(), &out).expect("builds");
    out
}

#[test]
fn engine_directories_refuse_definitions_tensor_parallelism_and_other_devices() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = engine_dir(tmp.path());
    let cpu = BuildConfig::default();
    assert_eq!(Model::load(&ModelSpec::path(&dir), registry(), &cpu).expect("loads").config.num_hidden_layers, 2);

    let e = load_error(&ModelSpec::path(&dir).with_definition_file(llama_toml()), &cpu);
    assert!(matches!(e, ModelError::BadCombination(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("records its own plan") && e.contains("llama.toml"), "{e}");

    let e = load_error(&ModelSpec::path(&dir), &BuildConfig { tensor_parallel_size: 2, ..cpu.clone() }).to_string();
    assert!(e.contains("single-rank engine") && e.contains("tensor_parallel_size 2"), "{e}");

    let mut cuda = cpu.clone();
    cuda.selection.device = DeviceKind::Cuda;
    let e = load_error(&ModelSpec::path(&dir), &cuda).to_string();
    assert!(e.contains("built for cpu, not cuda") && e.contains("rtllm build --device cuda"), "{e}");

    // `rtllm build`: not from an engine directory, not tensor parallel.
    let e =
        write_engine_dir(&ModelSpec::path(&dir), registry(), &cpu, &tmp.path().join("again")).err().expect("refused");
    assert!(e.to_string().contains("is already an engine directory"), "{e}");
    let tp = BuildConfig { tensor_parallel_size: 2, ..cpu };
    let e = write_engine_dir(&tiny(), registry(), &tp, &tmp.path().join("tp")).err().expect("refused");
    assert!(e.to_string().contains("single-rank engine"), "{e}");
    assert!(!tmp.path().join("tp").exists(), "nothing written");
}

#[test]
fn missing_sources_and_bad_definitions_name_the_file() {
    let build = BuildConfig::default();
    let e = load_error(&ModelSpec::path("/nonexistent/model.gguf"), &build).to_string();
    assert!(e.contains("/nonexistent/model.gguf") && e.contains("no such file"), "{e}");

    let tmp = tempfile::tempdir().expect("temp dir");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[model\nname = ").expect("writes");
    let e = load_error(&tiny().with_definition_file(&bad), &build);
    assert!(matches!(e, ModelError::Definition { .. }), "{e:?}");
    assert!(e.to_string().contains("bad.toml"), "{e}");

    // A TOML definition over dummy weights builds, but cannot be split across ranks.
    let toml = tiny().with_definition_file(llama_toml());
    assert_eq!(Model::load(&toml, registry(), &build).expect("builds").engine.tensor_parallel_size(), 1);
    let e = load_error(&toml, &BuildConfig { tensor_parallel_size: 2, ..build }).to_string();
    assert!(e.contains("TOML-defined model") && e.contains("cannot be split"), "{e}");
}

fn rtllm(args: &[&str], cache_dir: &Path) -> (bool, String) {
    let bin = rtllm_tests::rtllm_binary();
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("RTLLM_CACHE_DIR", cache_dir)
        .env("RTLLM_PLUGIN_PATH", rtllm_tests::plugin_dir())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_cli_says_what_is_missing_or_conflicting() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ok, err) = rtllm(&["generate", "Hello"], tmp.path());
    assert!(!ok && err.contains("default model not found") && err.contains("fetch-default-model.sh"), "{err}");
    let (ok, err) = rtllm(&["generate", "--model", "x.gguf", "--dummy-weights", "tiny-llama", "Hello"], tmp.path());
    assert!(!ok && err.contains("--dummy-weights") && err.contains("cannot be used with"), "{err}");
    let (ok, err) = rtllm(&["build", "--dummy-weights", "tiny-llama", "--tp", "2", "--output", "x"], tmp.path());
    assert!(!ok && err.contains("single-rank engine"), "{err}");
}
