//! Tensor parallelism on CPU threads (the nccl plugin's in-process collectives): a Llama split
//! over 2 and 4 ranks (4 ranks replicate the tiny model's 2 KV heads) computes the same logits
//! as one engine, within float reordering (prefill and decode steps fed directly), and the same
//! greedy tokens through the `Llm` API's executor (batched requests, n > 1 forks, device
//! sampling). Impossible layouts are clear errors. With the default model present, a 3-way
//! split of its Q4_1 weights (whole-block column slices) matches too, and FP8 checkpoints split
//! 2 ways match their torch reference.

use rtllm::api::{Llm, Prompt};
use rtllm::engine::{build_parts, registered_definition, BuildConfig, WeightSource};
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::registry::Registry;
use rtllm::sampling::SamplingParams;
use rtllm::weights::dummy::{dummy_model, DummySpec};
use rtllm_models::toml::ModelDefinition;
use rtllm_plugin_api::DeviceKind;
use std::sync::{Arc, OnceLock};

/// The built-in plugins plus the collectives.
fn registry() -> Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let mut files = rtllm_tests::builtin_plugin_files();
            files.push(rtllm_tests::dylib_path("rtllm-nccl"));
            let registry = rtllm_tests::registry_with(files);
            let errors: Vec<String> = registry.load_errors().iter().map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "plugins failed to load:\n{}", errors.join("\n"));
            Arc::new(registry)
        })
        .clone()
}

fn build(tp: usize) -> BuildConfig {
    BuildConfig {
        tensor_parallel_size: tp,
        max_batch_size: 4,
        max_seq_len: Some(128),
        tokens_per_block: 8,
        use_engine_cache: false,
        ..BuildConfig::default()
    }
}

fn tiny() -> DummySpec {
    DummySpec::new("tiny-llama")
}

fn prompt() -> Vec<u32> {
    vec![1, 7, 300, 42, 42, 9, 511, 128, 3, 77, 250]
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(n) }
}

/// Logits after the prompt, then after two fed tokens (prefill and decode), and the greedy
/// continuation through the model's executor.
fn run(mut model: Model, prompt: &[u32], tokens: usize) -> (Vec<f32>, Vec<u32>) {
    let mut probe = rtllm_tests::LogitsProbe::new();
    let mut logits = probe.feed(&mut model.engine, prompt);
    logits.extend(probe.feed(&mut model.engine, &[5]));
    logits.extend(probe.feed(&mut model.engine, &[6]));
    let llm = rtllm_tests::start(model);
    let generated = rtllm_tests::greedy_ids(&llm, &[prompt.to_vec()], &greedy(tokens)).remove(0);
    (logits, generated)
}

fn load(spec: &ModelSpec, build: &BuildConfig) -> Model {
    let tp = build.tensor_parallel_size;
    Model::load(spec, &registry(), build).unwrap_or_else(|e| panic!("tp {tp} builds: {e}"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logits of different sizes");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn tp2_and_tp4_match_one_rank() {
    let (want_logits, want_tokens) = run(load(&ModelSpec::dummy(tiny()), &build(1)), &prompt(), 24);
    assert_eq!(want_tokens.len(), 24);
    for tp in [2, 4] {
        let split = load(&ModelSpec::dummy(tiny()), &build(tp));
        assert_eq!(split.engine.tensor_parallel_size(), tp);
        let (logits, tokens) = run(split, &prompt(), 24);
        let diff = max_abs_diff(&logits, &want_logits);
        eprintln!("tp {tp}: max |logit diff| vs one rank = {diff:e} over {} logits", logits.len());
        assert!(diff < 1e-4, "tp {tp}: logits differ by {diff}");
        assert_eq!(tokens, want_tokens, "tp {tp}: greedy tokens");
    }
}

fn llm(tp: usize, device_sampling: bool) -> Llm {
    let build = BuildConfig { device_sampling: Some(device_sampling), ..build(tp) };
    Llm::builder()
        .registry(registry())
        .build_config(build)
        .tensor_parallel_size(tp)
        .dummy_weights(tiny())
        .build()
        .unwrap_or_else(|e| panic!("tp {tp} Llm builds: {e}"))
}

fn outputs(llm: &Llm, params: &SamplingParams) -> Vec<Vec<Vec<u32>>> {
    let prompts: Vec<Prompt> =
        [prompt(), vec![17], (1..30).collect::<Vec<u32>>()].into_iter().map(Prompt::Tokens).collect();
    let outs = llm.generate(prompts, params).expect("generates");
    outs.iter().map(|o| o.outputs.iter().map(|s| s.token_ids.clone()).collect()).collect()
}

#[test]
fn executor_drives_the_ranks_in_lockstep() {
    let params = greedy(12);
    let forked = SamplingParams { n: 2, temperature: 0.8, top_k: 20, seed: Some(3), ..greedy(9) };
    let one = llm(1, false);
    let (want, want_forked) = (outputs(&one, &params), outputs(&one, &forked));
    drop(one);
    let split = llm(2, false);
    assert_eq!(outputs(&split, &params), want, "batched greedy requests, host sampling");
    assert_eq!(outputs(&split, &forked), want_forked, "n = 2 samples fork (KV block copies on every rank)");
    drop(split);
    let sampled_on_device = llm(2, true);
    assert_eq!(outputs(&sampled_on_device, &params), want, "rank 0 samples on the device");
}

fn tp_error(tp: usize, build_config: BuildConfig, definition: Option<&ModelDefinition>) -> String {
    let build_config = BuildConfig { tensor_parallel_size: tp, ..build_config };
    let mut spec = ModelSpec::dummy(tiny());
    if let Some(d) = definition {
        spec = spec.with_definition(d.clone());
    }
    match Model::load(&spec, &registry(), &build_config) {
        Ok(_) => panic!("tp {tp} built"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn impossible_layouts_are_clear_errors() {
    // tiny-llama: 4 query heads, 2 KV heads, intermediate 128.
    let e = tp_error(3, build(1), None);
    assert!(e.contains("tensor_parallel_size 3 must divide num_attention_heads (4)"), "{e}");
    let e = tp_error(8, build(1), None);
    assert!(e.contains("must divide num_attention_heads"), "{e}");
    let e = tp_error(0, build(1), None);
    assert!(e.contains("tensor_parallel_size must be >= 1"), "{e}");

    let toml = ModelDefinition::from_toml_file(&rtllm_tests::repo_root().join("models/configs/llama.toml"))
        .expect("the TOML Llama parses");
    let e = tp_error(2, build(1), Some(&toml));
    assert!(e.contains("TOML-defined model") && e.contains("cannot be split"), "{e}");

    let mut on_gpu = build(1);
    on_gpu.selection.device = DeviceKind::Cuda;
    on_gpu.device_ordinal = 64;
    let e = tp_error(2, on_gpu, None);
    assert!(e.contains("needs GPUs 64..=65") && e.contains("visible"), "{e}");

    // The single-engine build path refuses a split and says where it is built.
    let loaded = dummy_model(&tiny()).expect("dummy weights");
    let weights: Arc<dyn WeightSource> = Arc::new(loaded.weights);
    let definition = registered_definition(&loaded.config).expect("llama");
    let e = build_parts(&definition, &loaded.config, weights, &registry(), &build(2)).err().expect("refused");
    assert!(e.to_string().contains("one engine per rank"), "{e}");
}

#[test]
fn default_model_q4_1_splits_three_ways() {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
        return;
    }
    let one = load(&ModelSpec::default_model(), &build(1));
    let prompt = one.tokenizer.encode("The capital of France is", true).expect("encodes");
    let (want_logits, want_tokens) = run(one, &prompt, 8);
    // SmolLM2-135M: 9 heads, 3 KV heads; its Q4_1 column splits are whole 32-element blocks.
    let (logits, tokens) = run(load(&ModelSpec::default_model(), &build(3)), &prompt, 8);
    let scale = want_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = max_abs_diff(&logits, &want_logits);
    eprintln!("default model tp 3: max |logit diff| = {diff:e} (max |logit| {scale})");
    assert!(diff <= 2e-2 * scale.max(1.0), "tp 3 logits differ by {diff}");
    assert_eq!(tokens, want_tokens, "tp 3 greedy tokens");
}

/// FP8 checkpoints split over 2 ranks against the torch reference of
/// scripts/reference/make_fp8_checkpoints.py: column-parallel linears shard `w` and a
/// per-channel `w_scale` by rows, row-parallel ones shard `w` by columns and keep the scales
/// whole; static `input_scale`s and the FP8 KV cache's k/v scales stay whole. With static scales
/// every rank quantizes as one engine does, so the one-engine reference holds. With dynamic
/// per-token scales a row-parallel rank scales its own slice of x (as vLLM's ranks do), which
/// moves these logits by up to 0.26 (the greedy tokens too): their reference is `tp2`, written
/// the same way. (FP8 weights have no float fallback: a build that succeeds runs `fp8_matmul`.)
#[test]
fn fp8_checkpoints_split_two_ways_match_the_torch_reference() {
    use rtllm_tests::checkpoints::{fp8_expected, fp8_fixture, ids, logits_vs_reference};
    let want = fp8_expected();
    let prompts: Vec<Vec<u32>> = want["prompts"].as_array().expect("prompts").iter().map(ids).collect();
    let n = want["greedy_tokens"].as_u64().expect("greedy_tokens") as usize;
    let formats = &want["formats"];
    for (name, reference) in [
        ("ct_static", &formats["ct_static"]),
        ("ct_static_kv", &formats["ct_static_kv"]),
        ("ct_dynamic", &formats["ct_dynamic"]["tp2"]),
        ("modelopt_pcpt", &formats["modelopt_pcpt"]["tp2"]),
    ] {
        let mut model = load(&ModelSpec::path(fp8_fixture(name)), &build(2));
        let (_, diff) = logits_vs_reference(&mut model.engine, &prompts, reference);
        eprintln!("{name} tp 2: max |logit - reference| = {diff:e}");
        // As in fp8_checkpoints.rs: f32 sums against f64, room for one activation landing on
        // the neighbouring E4M3 code.
        assert!(diff < 5e-3, "{name} tp 2: logits differ from the reference by {diff}");
        let llm = rtllm_tests::start(model);
        let got = rtllm_tests::greedy_ids(&llm, &prompts, &greedy(n));
        let want_tokens: Vec<Vec<u32>> = reference["tokens"].as_array().expect("tokens").iter().map(ids).collect();
        assert_eq!(got, want_tokens, "{name} tp 2: greedy tokens");
    }
}
