//! Files and settings that used to kill the process (issue 20): a model file truncated while it
//! is served, a truncated plugin in the search path (both SIGBUS before), huge limits (an
//! allocator abort) and a FIFO named as the model (a hang). Each is now an error, or nothing.
//! (Engine cache keys on edited weights and huge limits in plan.json: tests/engine_cache.rs;
//! TOML recursion: models' toml tests.)

use rtllm::engine::BuildConfig;
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::registry::Registry;
use rtllm::weights::dummy::DummySpec;
use rtllm_tests::{builtin_plugin_files, dylib_path, registry};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn no_cache() -> BuildConfig {
    BuildConfig {
        use_engine_cache: false,
        max_batch_size: 2,
        max_num_tokens: 128,
        max_seq_len: Some(128),
        ..Default::default()
    }
}

fn greedy(llm: &rtllm::api::Llm, prompt: &[u32]) -> Vec<u32> {
    rtllm_tests::greedy_ids(llm, &[prompt.to_vec()], &rtllm_tests::greedy(6)).remove(0)
}

/// Runs `f` on a thread and fails the test (instead of hanging it) if it has not returned
/// within a deadline far beyond what it needs.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("{what} did not return: it hangs"))
}

#[test]
fn weights_truncated_while_served_keep_serving() {
    let source = default_model_path();
    if !source.exists() {
        eprintln!("skipping: default model not found at {} (run scripts/fetch-default-model.sh)", source.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("model.gguf");
    std::fs::copy(&source, &copy).unwrap();
    let llm = rtllm_tests::start(Model::load(&ModelSpec::path(&copy), registry(), &no_cache()).unwrap());
    let prompt = [1u32, 504, 3458, 282, 4649, 314];
    let before = greedy(&llm, &prompt);
    // Cut the file to a few bytes under the running engine: its weights were read, not mapped.
    std::fs::OpenOptions::new().write(true).open(&copy).unwrap().set_len(1000).unwrap();
    assert_eq!(greedy(&llm, &prompt), before);
    // Loading the truncated file now is a clear error.
    let e = Model::load(&ModelSpec::path(&copy), registry(), &no_cache()).err().expect("truncated").to_string();
    assert!(e.contains("model.gguf") && e.contains("GGUF"), "{e}");
}

#[test]
fn truncated_plugins_are_load_errors_and_the_others_load() {
    let full = std::fs::read(dylib_path("rtllm-elementwise")).unwrap();
    let name = rtllm_tests::dylib_file_name("rtllm-elementwise");
    let tmp = tempfile::tempdir().unwrap();
    for len in [full.len() / 100, full.len() / 2, full.len() - 1] {
        let dir = tmp.path().join(format!("cut{len}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&name), &full[..len]).unwrap();
        let mut paths: Vec<PathBuf> = builtin_plugin_files().into_iter().filter(|p| !p.ends_with(&name)).collect();
        paths.push(dir.clone());
        let reg = Registry::load_paths(paths);
        let errors: Vec<String> = reg.load_errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{len} bytes: {errors:?}");
        assert!(errors[0].contains(&name) && errors[0].contains("truncated ELF file"), "{}", errors[0]);
        assert!(reg.providers("rmsnorm").iter().any(|p| p.plugin == "rtllm-rmsnorm"), "the others still load");
    }
}

#[test]
fn huge_limits_are_errors_naming_the_flag() {
    let spec = ModelSpec::dummy(DummySpec::new("tiny-llama"));
    let cases: [(BuildConfig, &str); 4] = [
        (BuildConfig { num_kv_blocks: Some(100_000_000), ..no_cache() }, "sized by num_kv_blocks (--num-kv-blocks"),
        (
            BuildConfig { max_num_tokens: 1_000_000_000_000, ..no_cache() },
            "max_num_tokens (--max-num-tokens) is 1000000000000; it must be between 1 and 2147483647",
        ),
        (BuildConfig { max_batch_size: 1_000_000_000, ..no_cache() }, "(--max-num-tokens, --max-batch-size): lower it"),
        (
            BuildConfig { max_seq_len: Some(1_000_000_000_000), ..no_cache() },
            "max_seq_len (--max-seq-len) is 1000000000000",
        ),
    ];
    for (build, expect) in cases {
        let e = Model::load(&spec, registry(), &build).err().expect("must fail").to_string();
        assert!(e.contains(expect), "{e}");
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn a_fifo_as_model_or_definition_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("model.gguf");
    mkfifo(&fifo);
    let f = fifo.clone();
    let e = within_deadline("loading a FIFO", move || {
        Model::load(&ModelSpec::path(&f), registry(), &BuildConfig::default()).err().map(|e| e.to_string())
    })
    .expect("a FIFO is no model");
    assert!(e.contains("a FIFO, not a regular file"), "{e}");

    // A FIFO named as a plugin: a load error, never opened (in a scanned directory: skipped).
    let plugin = tmp.path().join(rtllm_tests::dylib_file_name("rtllm-fifo"));
    mkfifo(&plugin);
    let errors = within_deadline("loading a FIFO plugin", move || {
        let dir = Registry::load_paths([plugin.parent().unwrap().to_path_buf()]).load_errors().len();
        let named = Registry::load_paths([plugin]).load_errors().iter().map(|e| e.to_string()).collect::<Vec<_>>();
        (dir, named)
    });
    assert_eq!(errors.0, 0, "a FIFO in a plugin directory is not a candidate");
    assert!(errors.1.len() == 1 && errors.1[0].contains("a FIFO, not a regular file"), "{:?}", errors.1);

    let def = tmp.path().join("model.toml");
    mkfifo(&def);
    let e = within_deadline("loading a FIFO definition", move || {
        let spec = ModelSpec::dummy(DummySpec::new("tiny-llama")).with_definition_file(&def);
        Model::load(&spec, registry(), &BuildConfig::default()).err().map(|e| e.to_string())
    })
    .expect("a FIFO is no definition");
    assert!(e.contains("not a regular file"), "{e}");
}
