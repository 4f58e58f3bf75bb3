//! TinyGpt2 end to end: random weights written as safetensors + config.json, the engine built
//! through the normal path (architecture found by its HF name through inventory) with the
//! built-in plugins plus the out-of-tree `gelu_tanh` plugin, a prefill, then a step that
//! decodes that sequence while prefilling another; logits checked against the f64 reference.

use rtllm::engine::{build_engine, BuildConfig, StepBatch};
use rtllm::registry::Registry;
use rtllm::weights::load_model_source;
use rtllm_example_custom_architecture::reference::{TinyGpt2Config, TinyGpt2Weights};
use rtllm_example_custom_architecture::{TinyGpt2, HF_NAME};
use rtllm_models::Architecture;
use std::path::PathBuf;
use std::sync::Arc;

fn custom_plugin() -> PathBuf {
    let dir = rtllm_tests::repo_root().join("examples/custom-kernel-plugin");
    rtllm_tests::build_out_of_tree(&dir, "rtllm-custom-kernel-plugin")
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("rtllm-{tag}-{}-{nanos}", std::process::id()))
}

fn config() -> TinyGpt2Config {
    TinyGpt2Config {
        vocab_size: 40,
        hidden_size: 32,
        num_heads: 4,
        num_layers: 2,
        intermediate_size: 64,
        max_positions: 24,
        eps: 1e-5,
    }
}

fn assert_logits(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: logits length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}: logit {i} = {g}, want {w}");
    }
}

#[test]
fn tiny_gpt2_matches_the_reference_through_the_engine() {
    assert_eq!(TinyGpt2.hf_names(), [HF_NAME]);
    let weights = TinyGpt2Weights::random(&config(), 42);
    let dir = temp_dir("tiny-gpt2");
    weights.write_hf_dir(&dir).unwrap();

    // docs:start:engine
    // The built-in plugins plus the out-of-tree one that provides `gelu_tanh`.
    let mut files = rtllm_tests::builtin_plugin_files();
    files.push(custom_plugin());
    let registry = Registry::load_paths(files);
    assert!(registry.load_errors().is_empty(), "{:?}", registry.load_errors());

    let loaded = load_model_source(&dir).unwrap();
    assert_eq!(loaded.config.architecture, HF_NAME);
    let bc = BuildConfig {
        max_batch_size: 8,
        max_num_tokens: 16,
        max_seq_len: Some(16),
        tokens_per_block: 4,
        num_kv_blocks: Some(8),
        ..BuildConfig::default()
    };
    // `build_engine` finds the architecture by the config's `architectures` name.
    let mut engine = build_engine(&loaded.config, Arc::new(loaded.weights), &registry, &bc).unwrap();
    // docs:end:engine
    let ops: Vec<String> = engine.graph().op_summary().into_iter().map(|(op, _, _)| op).collect();
    assert!(ops.iter().any(|o| o == "gelu_tanh") && ops.iter().any(|o| o == "layer_norm"), "{ops:?}");
    let vocab = engine.vocab_size();
    assert_eq!(vocab, 40);

    // Prefill sequence A (5 tokens over blocks 3 and 6), logits at every position.
    let a = [3u32, 17, 5, 30, 11];
    let mut batch = StepBatch::default();
    batch.clear();
    batch.push_sequence(&a, 0, &[3, 6], false);
    batch.logits_indices = (0..a.len() as i32).collect();
    let logits = engine.forward(&batch).unwrap().to_vec();
    let want = weights.forward(&a).unwrap();
    for (i, row) in want.iter().enumerate() {
        assert_logits(&logits[i * vocab..(i + 1) * vocab], row, &format!("prefill position {i}"));
    }

    // One step: A decodes its 6th token from the cache while B (3 tokens, block 1) prefills.
    let b = [7u32, 7, 39];
    batch.clear();
    batch.push_sequence(&[8], a.len(), &[3, 6], true);
    batch.push_sequence(&b, 0, &[1], true);
    let logits = engine.forward(&batch).unwrap().to_vec();
    let a_all: Vec<u32> = a.iter().copied().chain([8]).collect();
    let want_a = weights.forward(&a_all).unwrap();
    let want_b = weights.forward(&b).unwrap();
    assert_logits(&logits[..vocab], &want_a[a.len()], "decode of A");
    assert_logits(&logits[vocab..], &want_b[b.len() - 1], "prefill of B");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_the_custom_plugin_the_build_names_the_missing_op() {
    let dir = temp_dir("tiny-gpt2-missing");
    TinyGpt2Weights::random(&config(), 1).write_hf_dir(&dir).unwrap();
    let loaded = load_model_source(&dir).unwrap();
    let registry = Registry::load_paths(rtllm_tests::builtin_plugin_files());
    let err = build_engine(&loaded.config, Arc::new(loaded.weights), &registry, &BuildConfig::default())
        .err()
        .expect("gelu_tanh is not registered without the custom plugin");
    let msg = err.to_string();
    assert!(msg.contains("gelu_tanh") && msg.contains("RTLLM_PLUGIN_PATH"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
