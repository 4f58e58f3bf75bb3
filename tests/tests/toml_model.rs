//! The TOML model format end to end: models/configs/llama.toml builds through the same engine
//! builder as the Rust Llama definition and generates exactly its tokens (on small random
//! weights written here, fused and unfused, with and without bias and a separate head, and on
//! the default SmolLM2 model); build errors name the file, line, key, layer, op and shapes;
//! `rtllm generate --model-def --weights` prints what the default path prints.

use rtllm::engine::{build_engine, build_engine_with, BuildConfig, Engine, WeightMetas, WeightSource};
use rtllm::model::{default_model_path, Model, ModelSpec};
use rtllm::runtime::{Executor, ExecutorConfig, Request};
use rtllm::sampling::SamplingParams;
use rtllm_models::toml::{ModelDefinition, TomlModel};
use rtllm_models::ModelConfig;
use rtllm_plugin_api::{DType, TensorMeta};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

fn llama_toml_path() -> PathBuf {
    rtllm_tests::repo_root().join("models").join("configs").join("llama.toml")
}

fn llama_toml() -> ModelDefinition {
    ModelDefinition::from_toml_file(&llama_toml_path()).unwrap_or_else(|e| panic!("{e}"))
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..SamplingParams::greedy(n) }
}

/// f32 weights held in memory.
struct TinyWeights(BTreeMap<String, (TensorMeta, Vec<u8>)>);

impl WeightMetas for TinyWeights {
    fn weight_meta(&self, name: &str) -> Option<TensorMeta> {
        self.0.get(name).map(|(m, _)| m.clone())
    }
    fn nearest_weight_names(&self, name: &str) -> Vec<String> {
        let common = |n: &str| n.bytes().zip(name.bytes()).take_while(|(a, b)| a == b).count();
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(common(n)));
        names.into_iter().take(3).cloned().collect()
    }
}

impl WeightSource for TinyWeights {
    fn weight_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|(_, b)| b.as_slice())
    }
}

const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FFN: usize = 64;
const VOCAB: usize = 48;
const LAYERS: usize = 2;

fn tiny_config(tied: bool, bias: bool) -> ModelConfig {
    let json = format!(
        r#"{{"architectures":["LlamaForCausalLM"],"vocab_size":{VOCAB},"hidden_size":{HIDDEN},"intermediate_size":{FFN},
        "num_hidden_layers":{LAYERS},"num_attention_heads":{HEADS},"num_key_value_heads":{KV_HEADS},"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":{tied},"attention_bias":{bias}}}"#
    );
    ModelConfig::from_hf_json(&json).expect("tiny config parses")
}

/// Deterministic weights in [-0.5, 0.5) (norm weights around 1).
fn tiny_weights(lm_head: bool, bias: bool) -> TinyWeights {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut t = BTreeMap::new();
    let mut add = |name: String, shape: &[usize], norm: bool| {
        let n: usize = shape.iter().product();
        let mut bytes = Vec::with_capacity(n * 4);
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            bytes.extend_from_slice(&(if norm { 1.0 + x * 0.2 } else { x }).to_le_bytes());
        }
        t.insert(name, (TensorMeta::of(DType::F32, shape), bytes));
    };
    add("model.embed_tokens.weight".into(), &[VOCAB, HIDDEN], false);
    add("model.norm.weight".into(), &[HIDDEN], true);
    if lm_head {
        add("lm_head.weight".into(), &[VOCAB, HIDDEN], false);
    }
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), &[HIDDEN], true);
        add(format!("{p}.post_attention_layernorm.weight"), &[HIDDEN], true);
        for (name, rows) in
            [("q_proj", HEADS * HEAD_DIM), ("k_proj", KV_HEADS * HEAD_DIM), ("v_proj", KV_HEADS * HEAD_DIM)]
        {
            add(format!("{p}.self_attn.{name}.weight"), &[rows, HIDDEN], false);
            if bias {
                add(format!("{p}.self_attn.{name}.bias"), &[rows], false);
            }
        }
        add(format!("{p}.self_attn.o_proj.weight"), &[HIDDEN, HEADS * HEAD_DIM], false);
        add(format!("{p}.mlp.gate_proj.weight"), &[FFN, HIDDEN], false);
        add(format!("{p}.mlp.up_proj.weight"), &[FFN, HIDDEN], false);
        add(format!("{p}.mlp.down_proj.weight"), &[HIDDEN, FFN], false);
    }
    TinyWeights(t)
}

fn ops_and_scopes(engine: &Engine) -> Vec<(String, String)> {
    engine.graph().nodes.iter().map(|n| (n.op.clone(), n.scope.clone())).collect()
}

/// `n` greedy tokens through an executor over `engine`, and the logits after the prompt.
fn run(mut engine: Engine, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let logits = rtllm_tests::last_logits(&mut engine, prompt);
    let ex = Executor::new(engine, ExecutorConfig::default()).expect("the executor starts");
    let mut samples = ex.submit(Request::new(prompt.to_vec(), greedy(n))).expect("submits").wait().expect("generates");
    (samples.remove(0).token_ids, logits)
}

fn graph_of(model: &Model) -> Vec<(String, String)> {
    ops_and_scopes(model.engine.single().expect("one engine"))
}

#[test]
fn tiny_llama_from_toml_equals_the_rust_definition() {
    let registry = rtllm_tests::registry();
    let def = llama_toml();
    for (tied, lm_head, bias) in [(false, true, false), (true, false, true), (false, false, false)] {
        for fused in [true, false] {
            let mut bc = BuildConfig::default();
            if !fused {
                bc.selection.disabled_ops.push("fused_add_rmsnorm".into());
            }
            let config = tiny_config(tied, bias);
            let weights: Arc<dyn WeightSource> = Arc::new(tiny_weights(lm_head, bias));
            let case = format!("tied={tied} lm_head={lm_head} bias={bias} fused={fused}");
            let rust = build_engine(&config, weights.clone(), registry, &bc).unwrap_or_else(|e| panic!("{case}: {e}"));
            let toml =
                build_engine_with(&def, &config, weights, registry, &bc).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(ops_and_scopes(&toml), ops_and_scopes(&rust), "{case}: graphs differ");
            assert_eq!(toml.graph().nodes.iter().any(|n| n.op == "fused_add_rmsnorm"), fused, "{case}");
            let prompt = [1, 7, 19, 3, 42, 5];
            let (rt, rl) = run(rust, &prompt, 12);
            let (tt, tl) = run(toml, &prompt, 12);
            assert_eq!(tt, rt, "{case}: tokens differ");
            assert_eq!(tl, rl, "{case}: prompt logits differ");
        }
    }
}

fn read_fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("parity").join("smollm2_greedy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn smollm2_from_toml_generates_the_rust_definitions_tokens() {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
        return;
    }
    let registry = rtllm_tests::registry();
    let bc = BuildConfig::default();
    let rust = Model::load(&ModelSpec::default_model(), registry, &bc).expect("default model loads");
    let toml = Model::load(&ModelSpec::default_model().with_definition(llama_toml()), registry, &bc)
        .expect("default model loads with llama.toml");
    assert_eq!(graph_of(&toml), graph_of(&rust), "graphs differ");
    let (rust, toml) = (rtllm_tests::start(rust), rtllm_tests::start(toml));
    let fixture = read_fixture();
    for case in fixture["cases"].as_array().expect("cases").iter().take(3) {
        let prompt: Vec<u32> =
            case["prompt_ids"].as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect();
        let a = rtllm_tests::greedy_ids(&rust, &[prompt.clone()], &greedy(16)).remove(0);
        let b = rtllm_tests::greedy_ids(&toml, &[prompt], &greedy(16)).remove(0);
        assert_eq!(b, a, "{}: TOML and Rust definitions disagree", case["name"]);
        assert_eq!(b.len(), 16);
    }
}

/// Builds the tiny model from a modified llama.toml; returns the error text and the 1-based
/// line of the first line containing `marker`.
fn build_error(edit: impl Fn(&str) -> String, marker: &str) -> (String, usize) {
    let text = edit(&std::fs::read_to_string(llama_toml_path()).expect("llama.toml readable"));
    let line = text
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("marker {marker} not in the edited file"))
        + 1;
    let def = ModelDefinition::from(TomlModel::from_str(&text, "edited.toml").unwrap_or_else(|e| panic!("{e}")));
    let weights: Arc<dyn WeightSource> = Arc::new(tiny_weights(true, false));
    let err =
        build_engine_with(&def, &tiny_config(false, false), weights, rtllm_tests::registry(), &BuildConfig::default())
            .err()
            .expect("the build fails");
    (err.to_string(), line)
}

#[test]
fn unknown_op_names_the_line_and_similar_registered_ops() {
    let (e, line) = build_error(|t| t.replace("op = \"silu_mul\"", "op = \"silu_mull\""), "silu_mull");
    assert!(e.contains(&format!("edited.toml:{line}: `graph[1].body[11].op`: layer 0: op 'silu_mull'")), "{e}");
    assert!(e.contains("closest registered ops: silu_mul"), "{e}");
}

#[test]
fn unknown_config_reference_names_the_line_and_key() {
    let (e, line) =
        build_error(|t| t.replace("theta = \"config.rope_theta\"", "theta = \"config.rope_thetta\""), "rope_thetta");
    assert!(e.contains(&format!("edited.toml:{line}: `blocks.rope.body[0].attrs.theta`: layer 0: ")), "{e}");
    assert!(e.contains("unknown config reference 'config.rope_thetta' (did you mean: rope_theta"), "{e}");
}

#[test]
fn shape_mismatch_names_the_layer_op_and_shapes() {
    let (e, line) = build_error(
        |t| t.replace("inputs = [\"act\", \"down_proj\", \"down_bias?\"]", "inputs = [\"act\", \"up_proj\"]"),
        "[\"act\", \"up_proj\"]",
    );
    // The op's location is its `op` key, the line above `inputs`.
    assert!(
        e.contains(&format!("edited.toml:{}: `graph[1].body[12].op`: layer 0: op 'matmul' on inputs", line - 1)),
        "{e}"
    );
    assert!(e.contains(&FFN.to_string()) && e.contains(&HIDDEN.to_string()), "the shapes are named: {e}");
}

#[test]
fn missing_weight_names_the_line_and_the_nearest_present() {
    let (e, line) = build_error(|t| t.replace("self_attn.q_proj.weight\"", "self_attn.q_prj.weight\""), "q_prj");
    assert!(
        e.contains("`graph[1].body[1].inputs[1]`: layer 0: missing weight 'model.layers.0.self_attn.q_prj.weight'"),
        "{e}"
    );
    assert!(e.contains("nearest present: model.layers.0.self_attn.q_proj.weight"), "{e}");
    assert!(e.contains(&format!("`weights.q_proj` is declared at line {line}")), "{e}");
}

#[test]
fn dtype_mismatch_names_the_op_and_dtypes() {
    // Positions are i32 tokens; feeding them where floats belong fails inference on that op.
    let (e, line) = build_error(
        |t| t.replace("inputs = [\"gate\", \"up\"]", "inputs = [\"gate\", \"positions\"]"),
        "[\"gate\", \"positions\"]",
    );
    assert!(
        e.contains(&format!("edited.toml:{}: `graph[1].body[11].op`: layer 0: op 'silu_mul' on inputs", line - 1)),
        "{e}"
    );
    assert!(e.contains("i32"), "{e}");
}

#[test]
fn cli_generates_from_a_toml_definition() {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
        return;
    }
    let bin = rtllm_tests::rtllm_binary();
    let out = |args: &[&str]| {
        let o =
            std::process::Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(o.status.success(), "rtllm {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let def = llama_toml_path();
    let prompt = "The capital of France is";
    let toml = out(&[
        "generate",
        "--model-def",
        &def.to_string_lossy(),
        "--weights",
        &path.to_string_lossy(),
        "--max-tokens",
        "8",
        prompt,
    ]);
    let default = out(&["generate", "--max-tokens", "8", prompt]);
    assert_eq!(toml, default);
    assert!(toml.starts_with("The capital of France is Paris."), "{toml}");
}
