//! `rtllm quantize --format fp8` end to end on a tiny Llama (dummy bf16 weights written as an HF
//! directory): every written tensor and the `quantization_config` equal what compressed-tensors
//! computes from the same weights and calibration maxima (tests/fixtures/quantize, made by
//! scripts/reference/make_fp8_quantize_fixtures.py), the calibration pass records each linear
//! layer's real input, a GGUF source becomes a complete HF directory, and bad input is refused
//! with nothing left behind.

use rtllm::engine::{abs_max, ActivationStats, BuildConfig};
use rtllm::quantize::{
    quantize, sequences, ActivationScheme, Calibration, CalibrationConfig, QuantizeOptions, WeightScheme, SHARD_BYTES,
};
use rtllm::tokenizer::spec::{TokenType, TokenizerModel, TokenizerSpec};
use rtllm::tokenizer::Tokenizer;
use rtllm::weights::dummy::{dummy_model, DummySpec};
use rtllm::weights::safetensors::parse_header;
use rtllm::weights::{hf_export, write_safetensors, GgufWriter, LoadedModel};
use rtllm_plugin_api::DType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CASES: [(&str, WeightScheme, ActivationScheme); 4] = [
    ("per-tensor-static", WeightScheme::PerTensor, ActivationScheme::Static),
    ("per-tensor-dynamic", WeightScheme::PerTensor, ActivationScheme::Dynamic),
    ("per-channel-static", WeightScheme::PerChannel, ActivationScheme::Static),
    ("per-channel-dynamic", WeightScheme::PerChannel, ActivationScheme::Dynamic),
];

/// GPT-2's byte → printable character map (what byte-level BPE vocabularies are written in).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// A byte-level BPE tokenizer: three specials, the 256 byte tokens, a few merges.
fn tokenizer_spec() -> TokenizerSpec {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    let mut merges = Vec::new();
    for (a, b) in [("t", "h"), ("th", "e"), ("Ġ", "th")] {
        merges.push(format!("{a} {b}"));
        tokens.push(format!("{a}{b}"));
    }
    let n = tokens.len();
    TokenizerSpec {
        model: TokenizerModel::ByteLevelBpe,
        token_types: (0..n).map(|i| if i < 3 { TokenType::Control } else { TokenType::Normal }).collect(),
        tokens,
        scores: vec![],
        merges,
        pre: Some("gpt2".into()),
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        eos_token_ids: vec![2],
        unk_token_id: Some(0),
        pad_token_id: None,
        add_bos_token: true,
        add_eos_token: false,
        chat_template: None,
    }
}

/// The tiny Llama with dummy bf16 weights (seed 0).
fn tiny_model() -> LoadedModel {
    dummy_model(&DummySpec { config: "tiny-llama".into(), dtype: DType::BF16, seed: 0 }).expect("dummy tiny-llama")
}

/// Writes the tiny Llama as an HF directory (bf16 safetensors, config.json, tokenizer files).
fn write_source(dir: &Path) -> LoadedModel {
    std::fs::create_dir_all(dir).expect("source dir");
    let model = tiny_model();
    let tensors: Vec<(&str, DType, &[usize], &[u8])> =
        model.weights.iter().map(|(n, t)| (n, t.dtype, t.shape.as_slice(), t.bytes())).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("model.safetensors"), &tensors, &meta).expect("writes the weights");
    let json = |v: &Value| serde_json::to_string_pretty(v).expect("json");
    std::fs::write(dir.join("config.json"), json(&hf_export::config_json(&model.config, "bfloat16"))).expect("config");
    let (tok, tok_config) = hf_export::tokenizer_files(&tokenizer_spec(), 512).expect("byte-level tokenizer");
    std::fs::write(dir.join("tokenizer.json"), json(&tok)).expect("tokenizer.json");
    std::fs::write(dir.join("tokenizer_config.json"), json(&tok_config)).expect("tokenizer_config.json");
    std::fs::write(dir.join("generation_config.json"), "{\"bos_token_id\": 1, \"eos_token_id\": 2}").expect("gen");
    model
}

/// Calibration maxima the fixture was made with: a spread of values per linear weight, one 0.
fn fixed_amax(targets: &[String]) -> ActivationStats {
    let amax = targets
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), if i == 0 { 0.0 } else { 0.3 + 0.731 * i as f32 }))
        .collect();
    ActivationStats { amax, rows: BTreeMap::new() }
}

fn options(
    source: &Path,
    output: &Path,
    w: WeightScheme,
    a: ActivationScheme,
    cal: Option<Calibration>,
) -> QuantizeOptions {
    QuantizeOptions {
        source: source.to_path_buf(),
        output: output.to_path_buf(),
        weight_scheme: w,
        activation_scheme: a,
        force: false,
        calibration: cal,
        kv_cache: false,
        shard_bytes: SHARD_BYTES,
    }
}

/// FNV-1a (64-bit) of `bytes` as hex, as the fixture script computes it.
fn fnv1a64(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    format!("{h:016x}")
}

/// Every tensor of a safetensors file as {name: {dtype, shape, fnv1a64}}.
fn digests(path: &Path) -> BTreeMap<String, Value> {
    let bytes = std::fs::read(path).expect("reads the output");
    let header = parse_header(&bytes).expect("a valid safetensors file");
    header
        .tensors
        .iter()
        .map(|t| {
            let d = serde_json::json!({"dtype": t.dtype_name, "shape": t.shape, "fnv1a64": fnv1a64(&bytes[t.start..t.end])});
            (t.name.clone(), d)
        })
        .collect()
}

fn linear_names(model: &LoadedModel) -> Vec<String> {
    model.weights.names().filter(|n| n.ends_with("_proj.weight")).map(String::from).collect()
}

fn fixture() -> Value {
    let path = rtllm_tests::repo_root().join("tests/fixtures/quantize/tiny_llama_fp8.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("fixture json")
}

#[test]
fn quantize_matches_the_compressed_tensors_fixture() {
    let keep = std::env::var_os("RTLLM_QUANTIZE_FIXTURE_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let source = root.join("source");
    let _ = std::fs::remove_dir_all(&source);
    let model = write_source(&source);
    let stats = fixed_amax(&linear_names(&model));
    if keep.is_some() {
        std::fs::write(root.join("amax.json"), serde_json::to_string_pretty(&stats.amax).expect("json")).expect("amax");
    }
    for (case, w, a) in CASES {
        let mut opts = options(&source, &root.join(case), w, a, Some(Calibration::Stats(stats.clone())));
        opts.force = true;
        let report = quantize(&opts, rtllm_tests::registry(), &BuildConfig::default()).expect("quantizes");
        assert_eq!(report.quantized, 14, "{case}: 7 linear layers x 2 blocks");
    }
    let fixture = fixture();
    let want_source: BTreeMap<String, Value> = serde_json::from_value(fixture["source"].clone()).expect("map");
    assert_eq!(digests(&source.join("model.safetensors")), want_source, "the fixture's source weights");
    for (case, _, _) in CASES {
        let out = root.join(case);
        let want = &fixture["cases"][case];
        let got = digests(&out.join("model.safetensors"));
        let want_tensors: BTreeMap<String, Value> = serde_json::from_value(want["tensors"].clone()).expect("map");
        for (name, d) in &want_tensors {
            assert_eq!(got.get(name), Some(d), "{case}: tensor `{name}`");
        }
        assert_eq!(got.len(), want_tensors.len(), "{case}: tensor count");
        let text = std::fs::read_to_string(out.join("config.json")).expect("config");
        let config: Value = serde_json::from_str(&text).expect("json");
        let mut q = config["quantization_config"].clone();
        assert_eq!(q["version"], rtllm::quantize::COMPRESSED_TENSORS_VERSION);
        q.as_object_mut().expect("object").remove("version");
        assert_eq!(q, want["quantization_config"], "{case}: quantization_config");
        assert_eq!(config["hidden_size"], 64, "{case}: the source config is kept");
        for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            assert!(out.join(f).is_file(), "{case}: {f} carried over");
        }
    }
}

#[test]
fn calibration_observes_each_linear_layers_real_input() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("source");
    let model = write_source(&source);
    let text = "the theme of the thesis: these three then thought that the other one. ".repeat(6);
    let config = CalibrationConfig { tokens: 200, seq_len: 64, build: BuildConfig::default() };
    let cal = Calibration::Text { text: text.clone(), config };
    let out = tmp.path().join("fp8");
    let opts = options(&source, &out, WeightScheme::PerChannel, ActivationScheme::Static, Some(cal));
    let report = quantize(&opts, rtllm_tests::registry(), &BuildConfig::default()).expect("quantizes");
    let stats = report.stats.expect("a calibration pass");
    let mut observed: Vec<&str> = stats.amax.keys().map(String::as_str).collect();
    observed.retain(|n| *n != "lm_head.weight" && n.ends_with(".weight"));
    assert_eq!(observed, linear_names(&model), "every linear weight observed (and the head, left unquantized)");
    let a = |n: &str| stats.amax[n];
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}.weight");
        assert_eq!(a(&p("self_attn.q_proj")), a(&p("self_attn.k_proj")), "q, k and v read one input");
        assert_eq!(a(&p("self_attn.q_proj")), a(&p("self_attn.v_proj")));
        assert_eq!(a(&p("mlp.gate_proj")), a(&p("mlp.up_proj")), "gate and up read one input");
        assert!(a(&p("self_attn.o_proj")) > 0.0 && a(&p("mlp.down_proj")) > 0.0);
    }
    // Layer 0's q/k/v input is input_layernorm(embedding): recomputed here from the weights.
    let tokenizer =
        Tokenizer::from_hf_file(&source.join("tokenizer.json"), Some(&source.join("tokenizer_config.json")))
            .expect("tokenizer");
    let seqs = sequences(&tokenizer, &text, 200, 64).expect("sequences");
    assert_eq!(report.calibration_tokens, seqs.iter().map(Vec::len).sum::<usize>());
    assert!(seqs.iter().all(|s| s[0] == 1 && s.len() <= 64), "each sequence starts with BOS");
    let embed = model.weights.to_f32("model.embed_tokens.weight").expect("embedding");
    let norm = model.weights.to_f32("model.layers.0.input_layernorm.weight").expect("norm");
    let mut rows = Vec::new();
    for &id in seqs.iter().flatten() {
        let x = &embed[id as usize * 64..(id as usize + 1) * 64];
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / 64.0 + 1e-5).sqrt();
        rows.extend(x.iter().zip(&norm).map(|(v, w)| v / rms * w));
    }
    let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    let want = abs_max(DType::F32, &bytes).expect("finite");
    let got = a("model.layers.0.self_attn.q_proj.weight");
    assert!((got - want).abs() <= want * 1e-5, "observed {got}, recomputed {want}");
    assert_eq!(stats.rows["model.layers.0.self_attn.q_proj.weight"], report.calibration_tokens as u64);

    // The written input scale is that amax / 448 in bf16.
    let header_bytes = std::fs::read(out.join("model.safetensors")).expect("output");
    let header = parse_header(&header_bytes).expect("safetensors");
    let t =
        header.tensors.iter().find(|t| t.name == "model.layers.0.self_attn.q_proj.input_scale").expect("input_scale");
    assert_eq!((t.dtype_name.as_str(), t.shape.as_slice()), ("BF16", &[1usize][..]));
    let scale = half::bf16::from_le_bytes([header_bytes[t.start], header_bytes[t.start + 1]]).to_f32();
    assert_eq!(scale, rtllm::quantize::scale_for(got, DType::BF16));
}

#[test]
fn kv_cache_scales_are_calibrated_written_compressed_tensors_style_and_select_the_fp8_cache() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("source");
    write_source(&source);
    let text = "the theme of the thesis: these three then thought that the other one. ".repeat(6);
    let config = CalibrationConfig { tokens: 200, seq_len: 64, build: BuildConfig::default() };
    let out = tmp.path().join("fp8");
    // Dynamic activations: the calibration pass runs for the KV cache alone.
    let mut opts = options(&source, &out, WeightScheme::PerChannel, ActivationScheme::Dynamic, None);
    opts.kv_cache = true;
    let e = quantize(&opts, rtllm_tests::registry(), &BuildConfig::default()).expect_err("no calibration text");
    assert!(e.to_string().contains("KV cache"), "{e}");
    opts.calibration = Some(Calibration::Text { text, config });
    let report = quantize(&opts, rtllm_tests::registry(), &BuildConfig::default()).expect("quantizes");
    let stats = report.stats.expect("a calibration pass");

    let cfg: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("config")).expect("json");
    let kv = &cfg["quantization_config"]["kv_cache_scheme"];
    assert_eq!((kv["num_bits"].as_u64(), kv["type"].as_str()), (Some(8), Some("float")), "{kv}");
    assert_eq!((kv["strategy"].as_str(), kv["dynamic"].as_bool()), (Some("tensor"), Some(false)), "{kv}");
    let bytes = std::fs::read(out.join("model.safetensors")).expect("output");
    let header = parse_header(&bytes).expect("safetensors");
    for l in 0..2 {
        for which in ['k', 'v'] {
            let name = format!("model.layers.{l}.self_attn.{which}_scale");
            let t = header.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} written"));
            assert_eq!((t.dtype_name.as_str(), t.shape.as_slice()), ("BF16", &[1usize][..]), "{name}");
            let scale = half::bf16::from_le_bytes([bytes[t.start], bytes[t.start + 1]]).to_f32();
            let amax = stats.amax[&name];
            assert!(amax > 0.0, "{name}: observed k/v");
            assert_eq!(scale, rtllm::quantize::scale_for(amax, DType::BF16), "{name}");
        }
        assert!(!header.tensors.iter().any(|t| t.name.ends_with("input_scale")), "dynamic: no input scales");
    }
    // rtllm loads it with the FP8 cache and those scales.
    let mut model = rtllm::model::Model::load(
        &rtllm::model::ModelSpec::path(&out),
        rtllm_tests::registry(),
        &BuildConfig { use_engine_cache: false, ..BuildConfig::default() },
    )
    .expect("the output loads");
    assert_eq!(model.engine.single().expect("one engine").kv_cache_dtype(), DType::F8_E4M3);
    let logits = rtllm_tests::last_logits(&mut model.engine, &[1, 40, 41, 42, 43, 44]);
    assert!(!logits.is_empty() && logits.iter().all(|x| x.is_finite()));
}

#[test]
fn a_gguf_source_becomes_a_complete_hf_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let model = tiny_model();
    let spec = tokenizer_spec();
    let mut w = GgufWriter::new();
    let c = &model.config;
    w.kv_str("general.architecture", "qwen2")
        .kv_u32("qwen2.embedding_length", c.hidden_size as u32)
        .kv_u32("qwen2.feed_forward_length", c.intermediate_size as u32)
        .kv_u32("qwen2.block_count", c.num_hidden_layers as u32)
        .kv_u32("qwen2.attention.head_count", c.num_attention_heads as u32)
        .kv_u32("qwen2.attention.head_count_kv", c.num_key_value_heads as u32)
        .kv_u32("qwen2.context_length", 512)
        .kv_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "qwen2")
        .kv_strs("tokenizer.ggml.tokens", &spec.tokens.iter().map(String::as_str).collect::<Vec<_>>())
        .kv_strs("tokenizer.ggml.merges", &spec.merges.iter().map(String::as_str).collect::<Vec<_>>())
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2);
    let mut names: Vec<&str> = model.weights.names().collect();
    names.sort();
    for name in names {
        let gguf = gguf_name(name);
        let t = model.weights.get(name).expect("tensor");
        let values = model.weights.to_f32(name).expect("f32");
        // Linear weights as Q8_0 (dequantized by quantize), the rest f32.
        let dtype = if name.ends_with("_proj.weight") { DType::Q8_0 } else { DType::F32 };
        let bytes = rtllm::weights::Tensor::from_f32(name, t.shape.clone(), &values)
            .expect("t")
            .to_dtype_bytes(name, dtype)
            .expect("q8");
        w.tensor(&gguf, dtype, &t.shape, bytes).expect("adds a tensor");
    }
    // Qwen2 has Q/K/V biases.
    for l in 0..c.num_hidden_layers {
        for (p, n) in [("attn_q", c.hidden_size), ("attn_k", 32), ("attn_v", 32)] {
            w.tensor_f32(&format!("blk.{l}.{p}.bias"), &[n], &vec![0.01; n]).expect("bias");
        }
    }
    let gguf = tmp.path().join("tiny.gguf");
    w.write(&gguf).expect("writes the GGUF");
    let out = tmp.path().join("fp8");
    let opts = options(&gguf, &out, WeightScheme::PerChannel, ActivationScheme::Dynamic, None);
    let report = quantize(&opts, rtllm_tests::registry(), &BuildConfig::default()).expect("quantizes a GGUF");
    assert_eq!(report.quantized, 14);
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let config_text = std::fs::read_to_string(out.join("config.json")).expect("config");
    let config = rtllm_models::ModelConfig::from_hf_json(&config_text).expect("config.json parses");
    assert_eq!(
        (config.architecture.as_str(), config.hidden_size, config.attention_bias),
        ("Qwen2ForCausalLM", 64, true)
    );
    let header_bytes = std::fs::read(out.join("model.safetensors")).expect("output");
    let header = parse_header(&header_bytes).expect("safetensors");
    let dtype_of = |n: &str| header.tensors.iter().find(|t| t.name == n).map(|t| t.dtype_name.clone());
    assert_eq!(dtype_of("model.norm.weight").as_deref(), Some("BF16"), "kept tensors become bf16");
    assert_eq!(dtype_of("model.layers.0.self_attn.q_proj.bias").as_deref(), Some("BF16"));
    assert!(dtype_of("model.layers.0.self_attn.q_proj.input_scale").is_none(), "dynamic: no input scales");
    // The written tokenizer encodes like the GGUF's own.
    let from_files = Tokenizer::from_hf_file(&out.join("tokenizer.json"), Some(&out.join("tokenizer_config.json")))
        .expect("tokenizer.json loads");
    let from_spec = Tokenizer::from_spec(rtllm::weights::load_gguf(&gguf).expect("gguf").tokenizer.expect("spec"))
        .expect("spec tokenizer");
    for text in ["the theme", "Hello, world! 123 x", "  spaced\nlines"] {
        assert_eq!(
            from_files.encode(text, true).expect("encodes"),
            from_spec.encode(text, true).expect("encodes"),
            "{text:?}"
        );
    }
}

/// The GGUF name of an HF tensor name of the tiny Llama.
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").expect("a layer tensor");
    let (layer, rest) = rest.split_once('.').expect("layer index");
    let parts = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    let (module, suffix) = rest.rsplit_once('.').expect("suffix");
    let g = parts.iter().find(|(h, _)| *h == module).map(|(_, g)| *g).expect("known module");
    format!("blk.{layer}.{g}.{suffix}")
}

#[test]
fn bad_input_is_refused_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("source");
    let model = write_source(&source);
    let registry = rtllm_tests::registry();
    let bc = BuildConfig::default();
    let run = |opts: &QuantizeOptions| quantize(opts, registry, &bc).err().map(|e| e.to_string()).unwrap_or_default();
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    };

    // A non-empty output directory without --force: refused, untouched.
    let out = tmp.path().join("taken");
    std::fs::create_dir(&out).expect("dir");
    std::fs::write(out.join("keep.txt"), "mine").expect("file");
    let err = run(&options(&source, &out, WeightScheme::PerChannel, ActivationScheme::Dynamic, None));
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).expect("kept"), "mine");

    // Static scales whose calibration never reached a layer: refused, no output, no staging dir.
    let mut partial = fixed_amax(&linear_names(&model));
    partial.amax.remove("model.layers.1.mlp.down_proj.weight");
    let out = tmp.path().join("fresh");
    let err = run(&options(
        &source,
        &out,
        WeightScheme::PerChannel,
        ActivationScheme::Static,
        Some(Calibration::Stats(partial)),
    ));
    assert!(err.contains("model.layers.1.mlp.down_proj.weight"), "{err}");
    assert!(!out.exists() && leftovers().is_empty(), "a failed run leaves nothing: {:?}", leftovers());

    // A source that is already quantized.
    let fp8 = tmp.path().join("fp8");
    quantize(&options(&source, &fp8, WeightScheme::PerChannel, ActivationScheme::Dynamic, None), registry, &bc)
        .expect("quantizes");
    let err = run(&options(&fp8, &tmp.path().join("again"), WeightScheme::PerChannel, ActivationScheme::Dynamic, None));
    assert!(err.contains("already quantized") && err.contains("compressed-tensors"), "{err}");
    // ... also when its config.json no longer says so: the F8_E4M3 tensors do.
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fp8.join("config.json")).expect("c")).expect("json");
    config.as_object_mut().expect("object").remove("quantization_config");
    std::fs::write(fp8.join("config.json"), config.to_string()).expect("config");
    let err = run(&options(&fp8, &tmp.path().join("again"), WeightScheme::PerChannel, ActivationScheme::Dynamic, None));
    // (the FP8 loader refuses it first, naming the tensor and the missing quantization_config)
    assert!(err.to_ascii_lowercase().contains("f8_e4m3") && err.contains("quantization_config"), "{err}");

    // An architecture rtllm has no definition for.
    let gpt2 = tmp.path().join("gpt2");
    std::fs::create_dir(&gpt2).expect("dir");
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(source.join(f), gpt2.join(f)).expect("copy");
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).expect("c")).expect("json");
    config["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    config["model_type"] = "gpt2".into();
    std::fs::write(gpt2.join("config.json"), config.to_string()).expect("config");
    let err = run(&options(&gpt2, &tmp.path().join("g"), WeightScheme::PerChannel, ActivationScheme::Dynamic, None));
    assert!(err.contains("GPT2LMHeadModel") && err.contains("architecture"), "{err}");

    // Static scales with an empty calibration text; the dynamic scheme refuses a text.
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "  \n").expect("file");
    let err = rtllm::quantize::read_text(&empty).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("empty") && err.contains("empty.txt"), "{err}");
    assert!(!tmp.path().join("g").exists() && !tmp.path().join("again").exists() && leftovers().is_empty());
}

#[test]
fn the_cli_quantizes_and_explains_refusals() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("source");
    write_source(&source);
    let text = tmp.path().join("calib.txt");
    std::fs::write(&text, "the theme of the thesis: these three then thought that the other one. ".repeat(4))
        .expect("text");
    let out = tmp.path().join("fp8");
    let bin = rtllm_tests::rtllm_binary();
    let (src, dst, calib) = (source.to_str().expect("utf8"), out.to_str().expect("utf8"), text.to_str().expect("utf8"));
    // `rtllm quantize --format fp8 --model SRC --output DST` followed by `extra`.
    let run = |extra: &[&str]| {
        let mut args = vec!["quantize", "--format", "fp8", "--model", src, "--output", dst];
        args.extend_from_slice(extra);
        std::process::Command::new(&bin).args(&args).output().expect("runs rtllm")
    };
    let ok = run(&["--calib-file", calib, "--calib-tokens", "64"]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("quantized 14 linear weights") && stderr.contains("calibration tokens"), "{stderr}");
    let again = run(&["--activation-scheme", "dynamic"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("--force"), "{stderr}");
    let bad = run(&["--activation-scheme", "dynamic", "--calib-file", calib, "--force"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("needs no calibration"), "{stderr}");
}
