//! Engine directories and the engine cache: `rtllm build` output loads and generates the same
//! greedy tokens as its source; a second load hits the cache; a config change misses; a
//! corrupt entry is detected, removed and rebuilt; a missing plugin is a clear error.

use rtllm::cli::build::BuildArgs;
use rtllm::cli::{EngineArgs, ModelArgs};
use rtllm::engine::cache;
use rtllm::engine::BuildConfig;
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::parallel::ModelRunner;
use rtllm::weights::dummy::DummySpec;
use rtllm_plugin_api::DType;
use rtllm_tests::{builtin_plugin_files, registry, registry_with};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Tests share the process-wide cache counters and RTLLM_CACHE_DIR.
static LOCK: Mutex<()> = Mutex::new(());

fn model_args(model: Option<PathBuf>, dummy: Option<&str>) -> ModelArgs {
    ModelArgs {
        model,
        dummy_weights: dummy.map(String::from),
        dummy_dtype: DType::F32,
        dummy_seed: 3,
        engine: EngineArgs {
            no_build_cache: true,
            max_batch_size: Some(4),
            max_num_tokens: Some(256),
            max_seq_len: Some(256),
            ..EngineArgs::default()
        },
        ..ModelArgs::default()
    }
}

/// 12 greedy tokens through the model's executor.
fn greedy(model: Model, prompt: &[u32]) -> Vec<u32> {
    rtllm_tests::greedy_ids(&rtllm_tests::start(model), &[prompt.to_vec()], &rtllm_tests::greedy(12)).remove(0)
}

fn load(path: &Path, build: &BuildConfig) -> Model {
    Model::load(&ModelSpec::path(path), registry(), build).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn default_model() -> Option<PathBuf> {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: default model not found at {} (run scripts/fetch-default-model.sh)", path.display());
        return None;
    }
    Some(path)
}

fn build_dir(args: ModelArgs, out: &Path) {
    let args = BuildArgs { model: args, output: Some(out.to_path_buf()), explain: false, disable_ops: vec![] };
    rtllm::cli::build::run(&args, registry()).unwrap();
    for f in ["plan.json", "model.safetensors"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn built_dummy_engine_dir_generates_like_its_source() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("engine");
    let args = model_args(None, Some("tiny-llama"));
    build_dir(args.clone(), &out);
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    let node = &plan["nodes"][0];
    assert!(node["provider"]["plugin"].as_str().is_some_and(|p| p.starts_with("rtllm-")), "{node}");
    assert!(plan["memory"]["arena_bytes"].as_u64().unwrap() > 0);

    let bc = args.build_config();
    let source = Model::load(&args.spec(), registry(), &bc).unwrap();
    let built = load(&out, &BuildConfig::default());
    assert_eq!(built.engine.limits(), source.engine.limits());
    let prompt = [5u32, 77, 300, 12, 9];
    assert_eq!(greedy(built, &prompt), greedy(source, &prompt));
}

#[test]
fn missing_plugin_names_the_op_and_plugin() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("engine");
    build_dir(model_args(None, Some("tiny-llama")), &out);
    let without_rmsnorm: Vec<PathBuf> =
        builtin_plugin_files().into_iter().filter(|p| !p.to_string_lossy().contains("rmsnorm")).collect();
    let partial = Arc::new(registry_with(without_rmsnorm));
    let err =
        Model::load(&ModelSpec::path(&out), &partial, &BuildConfig::default()).err().expect("must fail").to_string();
    assert!(err.contains("rtllm-rmsnorm") && err.contains("op '"), "{err}");
}

#[test]
fn default_model_engine_dir_and_cache() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let Some(gguf) = default_model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("RTLLM_CACHE_DIR", tmp.path().join("cache"));
    let prompt = [1u32, 504, 3458, 282, 4649, 314];

    // rtllm build → engine dir → same greedy tokens as the GGUF.
    let out = tmp.path().join("engine");
    build_dir(model_args(Some(gguf.clone()), None), &out);
    let bc = model_args(None, None).build_config();
    let want = greedy(load(&gguf, &bc), &prompt);
    assert_eq!(greedy(load(&out, &BuildConfig::default()), &prompt), want);

    // First load stores, second hits.
    let cached = BuildConfig { use_engine_cache: true, ..bc.clone() };
    let before = cache::counters();
    let first = load(&gguf, &cached);
    let mid = cache::counters();
    assert_eq!((mid.misses - before.misses, mid.stores - before.stores), (1, 1));
    let second = load(&gguf, &cached);
    let after = cache::counters();
    assert_eq!(after.hits - mid.hits, 1, "second load must hit");
    eprintln!("load from GGUF {:?}, from the cache {:?}", first.load_time, second.load_time);
    assert_eq!(greedy(first, &prompt), want);
    assert_eq!(greedy(second, &prompt), want);

    // A changed build config is a different key: a miss and a second entry.
    let other = BuildConfig { max_batch_size: 2, ..cached.clone() };
    let _ = load(&gguf, &other);
    let c = cache::counters();
    assert_eq!((c.misses - after.misses, c.hits - after.hits), (1, 0));
    let engines = tmp.path().join("cache").join("engines");
    assert_eq!(std::fs::read_dir(&engines).unwrap().count(), 2);

    // Corruption (truncated weights, then garbage JSON) is detected, removed and rebuilt.
    let key = cache::cache_key(&gguf, &cached, None, registry()).unwrap();
    let entry = engines.join(&key.0);
    for (file, damage) in [("model.safetensors", 0usize), ("plan.json", 1)] {
        let path = entry.join(file);
        let bytes = std::fs::read(&path).unwrap();
        if damage == 0 {
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        } else {
            std::fs::write(&path, b"{ not json").unwrap();
        }
        let before = cache::counters();
        let rebuilt = load(&gguf, &cached);
        let after = cache::counters();
        assert_eq!(
            (after.corrupt - before.corrupt, after.stores - before.stores, after.hits - before.hits),
            (1, 1, 0),
            "{file}"
        );
        assert_eq!(greedy(rebuilt, &prompt), want);
    }
    // The rebuilt entry is trusted again.
    let before = cache::counters();
    let _ = load(&gguf, &cached);
    assert_eq!(cache::counters().hits - before.hits, 1);

    // Issue 20 item 9: weights edited in place, same size, mtime put back: a miss, not the
    // stale engine.
    let copy = tmp.path().join("edited.gguf");
    std::fs::copy(&gguf, &copy).unwrap();
    let _ = load(&copy, &cached);
    let mtime = std::fs::metadata(&copy).unwrap().modified().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.seek(SeekFrom::End(-1000)).unwrap();
        f.write_all(&[0x55; 4]).unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), mtime);
    let before = cache::counters();
    let _ = load(&copy, &cached);
    let after = cache::counters();
    assert_eq!((after.hits - before.hits, after.stores - before.stores), (0, 1), "edited weights must rebuild");
    let _ = DummySpec::new("tiny-llama");
}

#[test]
fn corrupt_plan_structure_and_limits_are_refused() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("engine");
    build_dir(model_args(None, Some("tiny-llama")), &out);
    let plan_path = out.join("plan.json");
    let pristine: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    let first_output = pristine["nodes"][0]["outputs"][0].as_u64().unwrap() as usize;
    let last = pristine["nodes"].as_array().unwrap().len() - 1;
    let last_output = pristine["nodes"][last]["outputs"][0].clone();
    type Damage = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a node output claiming to be a weight",
            Box::new(move |p| {
                p["values"][first_output]["source"] =
                    serde_json::json!({"kind": "weight", "name": "model.norm.weight", "dtype": "f32"})
            }),
            "whose source is",
        ),
        ("tokens_per_block 0", Box::new(|p| p["limits"]["tokens_per_block"] = 0.into()), "tokens_per_block"),
        ("max_seq_len 0", Box::new(|p| p["limits"]["max_seq_len"] = 0.into()), "max_seq_len"),
        // Issue 20 item 6: sizes no host has are errors naming the limit, not allocator aborts.
        (
            "num_kv_blocks 1e8",
            Box::new(|p| p["limits"]["num_kv_blocks"] = 100_000_000u64.into()),
            "the largest part is the KV cache",
        ),
        (
            "max_num_tokens 1e12",
            Box::new(|p| p["limits"]["max_num_tokens"] = 1_000_000_000_000u64.into()),
            "limits.max_num_tokens (--max-num-tokens) is 1000000000000; it must be between 1 and 2147483647",
        ),
        (
            "max_batch_size 1e9",
            Box::new(|p| p["limits"]["max_batch_size"] = 1_000_000_000u64.into()),
            "of host memory but",
        ),
        (
            "max_seq_len 1e12",
            Box::new(|p| p["limits"]["max_seq_len"] = 1_000_000_000_000u64.into()),
            "limits.max_seq_len (--max-seq-len) is 1000000000000",
        ),
        (
            "the first node reading the last node's output",
            Box::new(move |p| p["nodes"][0]["inputs"][0] = last_output.clone()),
            "not an earlier node",
        ),
        ("a value out of range", Box::new(|p| p["nodes"][0]["inputs"][0] = 1_000_000.into()), "out of range"),
    ];
    for (what, damage, expect) in cases {
        let mut plan = pristine.clone();
        damage(&mut plan);
        std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
        let err = Model::load(&ModelSpec::path(&out), registry(), &BuildConfig::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: the corrupt plan loaded"))
            .to_string();
        assert!(err.contains(expect), "{what}: {err}");
    }
}
