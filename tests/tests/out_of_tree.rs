//! The out-of-tree extension points end to end. examples/custom-kernel-plugin is built the way
//! its author would (a standalone crate, cargo, no workspace) and loaded through
//! RTLLM_PLUGIN_PATH by the real `rtllm` binary: `plugins list` shows its op, `plugins check`
//! passes on it, and `generate` runs the TOML model in that crate (a GPT-2-style decoder that
//! uses the plugin's `gelu_tanh`). The same TOML model's logits are checked against the f64
//! reference of examples/custom-architecture and against its Rust definition.

use rtllm::engine::{build_engine, build_engine_with, BuildConfig, Engine, StepBatch};
use rtllm::registry::Registry;
use rtllm::weights::load_model_source;
use rtllm_example_custom_architecture::reference::{TinyGpt2Config, TinyGpt2Weights};
use rtllm_models::toml::ModelDefinition;
use rtllm_tests::{build_out_of_tree, builtin_plugin_files, repo_root, rtllm_binary};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const PACKAGE: &str = "rtllm-custom-kernel-plugin";
const PLUGIN: &str = "custom-kernel-plugin";

fn plugin_crate() -> PathBuf {
    repo_root().join("examples/custom-kernel-plugin")
}

fn model_toml() -> PathBuf {
    plugin_crate().join("models/tiny-gpt2.toml")
}

/// The built plugin (built once per test binary).
fn plugin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_out_of_tree(&plugin_crate(), PACKAGE))
}

/// Runs the `rtllm` binary with only the custom plugin on RTLLM_PLUGIN_PATH (the built-in
/// ones come from the binary's own directory).
fn rtllm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rtllm_binary())
        .args(args)
        .env("RTLLM_PLUGIN_PATH", plugin())
        .env("RTLLM_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", rtllm_binary().display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("rtllm-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// One character per token: a BPE vocabulary of single characters with no merges.
const VOCAB: &str = "abcdefghijklmnopqrstuvwxyz0123456789.,!?";

fn tiny_config() -> TinyGpt2Config {
    TinyGpt2Config {
        vocab_size: VOCAB.len(),
        hidden_size: 32,
        num_heads: 4,
        num_layers: 2,
        intermediate_size: 64,
        max_positions: 64,
        eps: 1e-5,
    }
}

/// Writes config.json, model.safetensors and a character-level tokenizer.json into a fresh
/// directory.
fn write_model(tag: &str, weights: &TinyGpt2Weights) -> PathBuf {
    let dir = temp_dir(tag);
    weights.write_hf_dir(&dir).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> =
        VOCAB.chars().enumerate().map(|(i, c)| (c.to_string(), i.into())).collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "model": { "type": "BPE", "vocab": vocab, "merges": [] },
        "decoder": { "type": "Fuse" },
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir
}

fn registry() -> Registry {
    let mut files = builtin_plugin_files();
    files.push(plugin().to_path_buf());
    let registry = Registry::load_paths(files);
    assert!(registry.load_errors().is_empty(), "{:?}", registry.load_errors());
    registry
}

fn build_config() -> BuildConfig {
    BuildConfig { max_seq_len: Some(32), tokens_per_block: 4, num_kv_blocks: Some(16), ..BuildConfig::default() }
}

/// Logits at every position of `tokens`, prefilled in one step.
fn prefill_logits(engine: &mut Engine, tokens: &[u32]) -> Vec<f32> {
    let mut batch = StepBatch::default();
    batch.clear();
    let blocks: Vec<u32> = (0..tokens.len().div_ceil(4) as u32).collect();
    batch.push_sequence(tokens, 0, &blocks, false);
    batch.logits_indices = (0..tokens.len() as i32).collect();
    engine.forward(&batch).unwrap().to_vec()
}

#[test]
fn plugins_list_shows_the_op_from_the_plugin_file() {
    let (ok, stdout, stderr) = rtllm(&["plugins", "list"]);
    assert!(ok, "plugins list failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.split_whitespace().next() == Some("gelu_tanh")).collect();
    assert_eq!(lines.len(), 2, "two gelu_tanh providers (fast and reference):\n{stdout}");
    let file = plugin().to_string_lossy().into_owned();
    for line in &lines {
        assert!(line.contains(PLUGIN) && line.contains(&file), "{line}");
    }
    // Best first: the fast kernel (priority 0) above the reference (-100).
    assert!(lines[0].contains(" 0 ") && lines[1].contains("-100"), "{lines:?}");
    assert!(stdout.lines().any(|l| l.starts_with("layer_norm")), "{stdout}");
}

#[test]
fn plugins_check_passes_on_the_plugin() {
    let (ok, stdout, stderr) = rtllm(&["plugins", "check", "--plugin", PLUGIN, "--seed", "11"]);
    assert!(ok, "plugins check failed:\n{stdout}\n{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("gelu_tanh")).collect();
    assert_eq!(rows.len(), 8, "5 examples of the fast provider, 3 of the reference:\n{stdout}");
    // Each provider was compared with the other one, not just run.
    assert!(rows.iter().all(|r| r.contains("PASS (tol") && r.contains(&format!("vs {PLUGIN}"))), "{stdout}");
    assert!(stdout.contains("8 checks, 0 failed"), "{stdout}");
}

#[test]
fn toml_model_matches_the_reference_and_the_rust_definition() {
    let weights = TinyGpt2Weights::random(&tiny_config(), 7);
    let dir = write_model("toml-gpt2", &weights);
    let loaded = load_model_source(&dir).unwrap();
    let config = loaded.config.clone();
    let source = Arc::new(loaded.weights);
    let registry = registry();
    let definition = ModelDefinition::from_toml_file(&model_toml()).unwrap();
    let mut toml_engine = build_engine_with(&definition, &config, source.clone(), &registry, &build_config()).unwrap();
    let mut rust_engine = build_engine(&config, source, &registry, &build_config()).unwrap();

    let tokens = [4u32, 0, 19, 33, 12, 12, 7];
    let vocab = VOCAB.len();
    let from_toml = prefill_logits(&mut toml_engine, &tokens);
    let from_rust = prefill_logits(&mut rust_engine, &tokens);
    let want = weights.forward(&tokens).unwrap();
    for (pos, row) in want.iter().enumerate() {
        for (i, &w) in row.iter().enumerate() {
            let g = from_toml[pos * vocab + i] as f64;
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "position {pos} logit {i}: {g}, want {w}");
        }
    }
    assert_eq!(from_toml, from_rust, "the TOML and Rust definitions build the same graph");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_runs_the_toml_model_with_the_plugin_op() {
    let weights = TinyGpt2Weights::random(&tiny_config(), 3);
    let dir = write_model("generate-gpt2", &weights);
    let prompt = "hello";
    let mut tokens: Vec<u32> = prompt.chars().map(|c| VOCAB.find(c).unwrap() as u32).collect();
    for _ in 0..6 {
        let logits = weights.forward(&tokens).unwrap();
        let last = logits.last().unwrap();
        let best = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        tokens.push(best as u32);
    }
    let want: String = tokens.iter().map(|&t| VOCAB.as_bytes()[t as usize] as char).collect();

    let (def, dir_s) = (model_toml(), dir.to_string_lossy().into_owned());
    let args = [
        "generate",
        "--model-def",
        def.to_str().unwrap(),
        "--weights",
        &dir_s,
        "--max-tokens",
        "6",
        "--ignore-eos",
        prompt,
    ];
    let (ok, stdout, stderr) = rtllm(&args);
    assert!(ok, "generate failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim_end(), want, "greedy tokens of the TOML model vs the reference");
    let _ = std::fs::remove_dir_all(&dir);
}
