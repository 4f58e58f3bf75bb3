//! The FP8 KV cache end to end (docs/quantization.md, "The KV cache"), on the tiny FP8 fixtures
//! (scripts/reference/make_fp8_checkpoints.py): the compressed-tensors and ModelOpt checkpoints
//! with a KV scheme select the F8_E4M3 cache, match the torch reference that fake-quantizes k and
//! v with the checkpoint's scales, and give identical logits; `--kv-cache-dtype` overrides the
//! checkpoint; a model without scales runs with 1.0; damaged scales and unsupported schemes are
//! refused naming the tensor or field; engine directories and the engine cache keep the dtype
//! and the scales; the FP8 cache holds twice the blocks of bf16 in the same budget.

use rtllm::engine::{cache, BuildConfig};
use rtllm::model::{write_engine_dir, Model, ModelSpec};
use rtllm::parallel::ModelRunner;
use rtllm_plugin_api::DType;
use rtllm_tests::checkpoints::f32_tensor;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// As tests/tests/fp8_checkpoints.rs: the reference sums in f64 with the same quantization
/// (weights, activations, and here the KV cache); a k or v landing on the other E4M3
/// neighbour after a different f32 summation order moves a logit far less than this.
const LOGIT_TOLERANCE: f32 = 5e-3;

use rtllm_tests::checkpoints::{fp8_expected as expected, fp8_fixture as fixture, ids};

fn load_with(dir: &Path, build: &BuildConfig) -> Result<Model, String> {
    Model::load(&ModelSpec::path(dir), rtllm_tests::registry(), build).map_err(|e| e.to_string())
}

fn load(dir: &Path) -> Result<Model, String> {
    load_with(dir, &BuildConfig { use_engine_cache: false, ..BuildConfig::default() })
}

fn kv_dtype(m: &Model) -> DType {
    m.engine.single().expect("one engine").kv_cache_dtype()
}

fn prompts(want: &Value) -> Vec<Vec<u32>> {
    want["prompts"].as_array().expect("prompts").iter().map(ids).collect()
}

/// Last-position logits of every prompt, and the largest difference from `reference`.
fn logits_vs(model: &mut Model, prompts: &[Vec<u32>], reference: &Value) -> (Vec<Vec<f32>>, f32) {
    rtllm_tests::checkpoints::logits_vs_reference(&mut model.engine, prompts, reference)
}

#[test]
fn kv_checkpoints_select_the_fp8_cache_and_match_the_torch_reference() {
    let want = expected();
    let prompts = prompts(&want);
    let n = want["greedy_tokens"].as_u64().unwrap() as usize;
    let mut logits = BTreeMap::new();
    for format in ["ct_static_kv", "modelopt_kv"] {
        let mut model = load(&fixture(format)).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(kv_dtype(&model), DType::F8_E4M3, "{format}: the KV scheme selects the FP8 cache");
        let graph = model.engine.single().unwrap().graph();
        let attn: Vec<_> = graph.nodes.iter().filter(|n| n.op == "paged_attention").collect();
        assert_eq!(attn.len(), 2);
        assert!(attn.iter().all(|n| n.inputs.len() == 10), "{format}: scales appended");
        let reference = &want["formats"][format];
        let (got, max_diff) = logits_vs(&mut model, &prompts, reference);
        println!("{format}: max |logit - reference| = {max_diff:.2e}");
        assert!(max_diff < LOGIT_TOLERANCE, "{format}: logits differ from the reference by {max_diff}");
        let llm = rtllm_tests::start(model);
        let tokens = rtllm_tests::greedy_ids(&llm, &prompts, &rtllm_tests::greedy(n));
        let want_tokens: Vec<Vec<u32>> = reference["tokens"].as_array().unwrap().iter().map(ids).collect();
        assert_eq!(tokens, want_tokens, "{format}: greedy tokens (prefill, then decode over cached blocks)");
        logits.insert(format, got);
    }
    assert_eq!(logits["ct_static_kv"], logits["modelopt_kv"], "equal weights and scales, equal logits");
    // The cache really is quantized: the f32-cache reference differs.
    let (_, plain_diff) =
        logits_vs(&mut load(&fixture("ct_static_kv")).unwrap(), &prompts, &want["formats"]["ct_static"]);
    assert!(plain_diff > 10.0 * LOGIT_TOLERANCE, "FP8 cache logits equal the f32 cache's ({plain_diff})");
}

#[test]
fn the_user_dtype_overrides_the_checkpoint_and_scales_default_to_one() {
    let want = expected();
    let prompts = prompts(&want);
    // An f32 cache named by the user: the checkpoint's weights with an unquantized cache.
    let f32_cache = BuildConfig {
        kv_cache_dtype: DType::F32,
        kv_cache_dtype_from_checkpoint: false,
        use_engine_cache: false,
        ..BuildConfig::default()
    };
    let mut model = load_with(&fixture("ct_static_kv"), &f32_cache).unwrap();
    assert_eq!(kv_dtype(&model), DType::F32);
    let (_, diff) = logits_vs(&mut model, &prompts, &want["formats"]["ct_static"]);
    assert!(diff < LOGIT_TOLERANCE, "f32 cache vs the ct_static reference: {diff}");
    // No kv scheme: the FP8 cache asked for runs with scales 1.0 (and a warning).
    let fp8 = BuildConfig { kv_cache_dtype: DType::F8_E4M3, use_engine_cache: false, ..BuildConfig::default() };
    let mut model = load_with(&fixture("ct_static"), &fp8).unwrap();
    assert_eq!(kv_dtype(&model), DType::F8_E4M3);
    let (_, diff) = logits_vs(&mut model, &prompts, &want["formats"]["ct_static"]);
    assert!(diff.is_finite() && diff > 0.0, "scale 1.0 quantizes the cache: {diff}");
}

type Tensors = rtllm_tests::checkpoints::Tensors;

/// A copy of checkpoint `name` with `edit` applied to its tensors and `config` to config.json.
fn damaged(name: &str, edit: impl FnOnce(&mut Tensors), config: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rtllm_tests::checkpoints::edited_copy(&fixture(name), dir.path(), edit, config);
    dir
}

#[test]
fn damaged_kv_scales_are_refused_naming_the_tensor() {
    let ks = "model.layers.1.self_attn.k_scale";
    let vs = "model.layers.0.self_attn.v_proj.v_scale";
    let set = |name: &'static str, values: Vec<f32>, shape: Vec<usize>| {
        move |t: &mut Tensors| drop(t.insert(name.into(), f32_tensor(&values, &shape)))
    };
    type Edit = Box<dyn FnOnce(&mut Tensors)>;
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        ("ct_static_kv", ks, Box::new(|t: &mut Tensors| drop(t.remove(ks))), "missing"),
        ("modelopt_kv", vs, Box::new(|t: &mut Tensors| drop(t.remove(vs))), "missing"),
        ("ct_static_kv", ks, Box::new(set(ks, vec![0.1, 0.2], vec![2])), "shape"),
        ("ct_static_kv", ks, Box::new(set(ks, vec![f32::NAN], vec![1])), "NaN"),
        ("modelopt_kv", vs, Box::new(set(vs, vec![f32::INFINITY], vec![])), "inf"),
        ("modelopt_kv", vs, Box::new(set(vs, vec![0.0], vec![])), "positive"),
        ("ct_static_kv", ks, Box::new(set(ks, vec![-0.01], vec![1])), "positive"),
    ];
    for (format, tensor, edit, why) in cases {
        let dir = damaged(format, edit, |_| {});
        let err = load(dir.path()).err().unwrap_or_else(|| panic!("{format} with a bad {tensor} loaded"));
        assert!(err.contains(tensor) && err.contains(why), "{format} / {tensor} / {why}: {err}");
    }
    // Scales without a scheme.
    let dir = damaged("ct_static_kv", |_| {}, |c| c["quantization_config"]["kv_cache_scheme"] = Value::Null);
    let err = load(dir.path()).err().expect("kv scales without a scheme load");
    assert!(err.contains("k_scale") && err.contains("no KV-cache scheme"), "{err}");
}

#[test]
fn unsupported_kv_schemes_are_refused_naming_the_field() {
    type ConfigEdit = fn(&mut Value);
    let cases: [(&str, ConfigEdit, &str); 4] = [
        (
            "ct_static_kv",
            |c| c["quantization_config"]["kv_cache_scheme"]["dynamic"] = true.into(),
            "kv_cache_scheme.dynamic",
        ),
        (
            "ct_static_kv",
            |c| c["quantization_config"]["kv_cache_scheme"]["strategy"] = "head".into(),
            "kv_cache_scheme.strategy",
        ),
        (
            "ct_static_kv",
            |c| c["quantization_config"]["kv_cache_scheme"]["num_bits"] = 4.into(),
            "kv_cache_scheme.num_bits",
        ),
        ("modelopt_kv", |c| c["quantization_config"]["kv_cache_quant_algo"] = "NVFP4".into(), "kv_cache_quant_algo"),
    ];
    for (format, edit, field) in cases {
        let dir = damaged(format, |_| {}, edit);
        let err = load(dir.path()).err().unwrap_or_else(|| panic!("{format}: {field} edited still loads"));
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn engine_dirs_and_the_engine_cache_keep_the_dtype_and_the_scales() {
    let want = expected();
    let prompts = prompts(&want);
    let tmp = tempfile::tempdir().unwrap();
    let build = BuildConfig { use_engine_cache: false, ..BuildConfig::default() };
    let mut source = load(&fixture("ct_static_kv")).unwrap();
    let (want_logits, _) = logits_vs(&mut source, &prompts, &want["formats"]["ct_static_kv"]);

    let out = tmp.path().join("engine");
    write_engine_dir(&ModelSpec::path(fixture("ct_static_kv")), rtllm_tests::registry(), &build, &out).unwrap();
    let plan: Value = serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["build"]["kv_cache_dtype"], "f8_e4m3", "{}", plan["build"]);
    let mut built = load(&out).unwrap();
    assert_eq!(kv_dtype(&built), DType::F8_E4M3);
    assert_eq!(logits_vs(&mut built, &prompts, &want["formats"]["ct_static_kv"]).0, want_logits);

    // The engine cache: a store, then a hit that runs the same FP8 cache with the same scales.
    std::env::set_var("RTLLM_CACHE_DIR", tmp.path().join("cache"));
    let cached = BuildConfig { use_engine_cache: true, ..BuildConfig::default() };
    let before = cache::counters();
    let first = load_with(&fixture("ct_static_kv"), &cached).unwrap();
    let mut second = load_with(&fixture("ct_static_kv"), &cached).unwrap();
    let after = cache::counters();
    assert_eq!((after.stores - before.stores, after.hits - before.hits), (1, 1));
    drop(first);
    assert_eq!(kv_dtype(&second), DType::F8_E4M3);
    assert_eq!(logits_vs(&mut second, &prompts, &want["formats"]["ct_static_kv"]).0, want_logits);
}

#[test]
fn the_fp8_cache_holds_twice_the_blocks_of_bf16() {
    let budget = |dtype| {
        let b = BuildConfig {
            kv_cache_dtype: dtype,
            kv_cache_dtype_from_checkpoint: false,
            kv_cache_bytes: 1 << 20,
            max_batch_size: 64,
            max_seq_len: Some(256),
            tokens_per_block: 16,
            use_engine_cache: false,
            ..BuildConfig::default()
        };
        load_with(&fixture("ct_static_kv"), &b).unwrap().engine.limits().num_kv_blocks
    };
    let (bf16, fp8) = (budget(DType::BF16), budget(DType::F8_E4M3));
    assert_eq!(fp8, 2 * bf16, "bf16 {bf16} blocks, fp8 {fp8}");
}
