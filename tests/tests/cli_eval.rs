//! `rtllm eval` from the command line: a perplexity run prints its JSON, and bad input (an empty,
//! missing, unreadable or non-UTF-8 file, a text shorter than 2 tokens, a context below 2, a
//! stride of 0 or beyond the context, a context the engine cannot hold, a compare without two
//! models or tokens) fails with a message naming the problem, never a panic.

use rtllm::model::default_model_path;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn rtllm<S: AsRef<str>>(args: &[S]) -> Output {
    let bin = rtllm_tests::rtllm_binary();
    std::process::Command::new(&bin)
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
}

/// Runs `args`, expects a failure whose stderr contains `want`.
fn fails_with<S: AsRef<str>>(args: &[S], want: &str) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = rtllm(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rtllm {args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "rtllm {args:?} ended by a signal or a clap error: {stderr}");
    assert!(!stderr.contains("panicked"), "rtllm {args:?} panicked: {stderr}");
    assert!(stderr.contains(want), "rtllm {args:?}: expected {want:?} in: {stderr}");
}

fn default_model_present() -> bool {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
    }
    path.exists()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writes");
    path.display().to_string()
}

#[test]
fn bad_files_and_settings_are_refused_before_the_model_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = write(dir.path(), "text.txt", b"It is a truth universally acknowledged.");
    let empty = write(dir.path(), "empty.txt", b"");
    let blank = write(dir.path(), "blank.txt", b"  \n\t\n");
    let binary = write(dir.path(), "binary.txt", &[0xff, 0xfe, 0x00, 0x41]);
    let missing = dir.path().join("missing.txt").display().to_string();
    let folder = dir.path().display().to_string();
    // A model that does not exist: each refusal must come before loading it.
    let model = dir.path().join("no-such-model.gguf").display().to_string();
    let ppl = |extra: &[&str]| -> Vec<String> {
        ["eval", "perplexity", "--model", &model].iter().chain(extra).map(|s| s.to_string()).collect()
    };
    fails_with(&ppl(&[&empty]), "is empty: there is nothing to evaluate");
    fails_with(&ppl(&[&blank]), "is empty");
    fails_with(&ppl(&[&missing]), "No such file or directory");
    fails_with(&ppl(&[&folder]), "a directory, not a regular file");
    fails_with(&ppl(&[&binary]), "not UTF-8 text");
    fails_with(&ppl(&[&text, "--context-len", "1"]), "context length 1 is too small");
    fails_with(&ppl(&[&text, "--context-len", "0"]), "context length 0 is too small");
    fails_with(
        &ppl(&[&text, "--context-len", "64", "--stride", "0"]),
        "stride 0 must be between 1 and the context length (64)",
    );
    fails_with(
        &ppl(&[&text, "--context-len", "64", "--stride", "65"]),
        "stride 65 must be between 1 and the context length (64)",
    );
    fails_with(&["eval", "compare", "--model", &model], "exactly two --model flags");
    fails_with(&["eval", "compare", "--model", &model, "--model", &model, "--model", &model], "got 3");
    fails_with(
        &["eval", "compare", "--model", &model, "--model", &model, "--max-tokens", "0"],
        "--max-tokens must be at least 1",
    );
    fails_with(&["eval", "compare", "--model", &model, "--model", &model, "--prompts", &empty], "is empty");
}

#[test]
fn perplexity_prints_json_and_refuses_texts_and_contexts_it_cannot_score() {
    if !default_model_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let one_token = write(dir.path(), "one.txt", b"Hello");
    fails_with(&["eval", "perplexity", &one_token], "the text has 1 token(s); perplexity needs at least 2");
    let sample = rtllm_tests::repo_root().join("tests/fixtures/eval/pride_and_prejudice_ch1.txt").display().to_string();
    fails_with(
        &["eval", "perplexity", &sample, "--context-len", "300", "--max-seq-len", "200"],
        "a context length of 300 needs max_seq_len >= 301",
    );
    let out = rtllm(&["eval", "perplexity", &sample, "--context-len", "128", "--stride", "128", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let count = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(count("context_len"), 128);
    // Disjoint windows: every window's first token goes unscored.
    assert_eq!(count("tokens_scored"), count("text_tokens") - count("windows"));
    let ppl = v["perplexity"].as_f64().expect("perplexity");
    let mean = v["mean_nll"].as_f64().expect("mean_nll");
    assert!((ppl - mean.exp()).abs() < 1e-9 * ppl && ppl > 1.0 && ppl < 100.0, "{v}");
}
