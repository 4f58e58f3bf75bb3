//! `rtllm generate` end to end: greedy text on the default model equals the expected text (what
//! the CLI printed before it moved onto the executor), chat applies the template, and `--stats`
//! prints its one line: load time, prompt tokens and prefill speed, decoded tokens and decode
//! speed, finish reason.

use rtllm::model::default_model_path;
use std::process::Output;

fn rtllm(args: &[&str]) -> Output {
    let bin = rtllm_tests::rtllm_binary();
    let out = std::process::Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "rtllm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8_lossy(&rtllm(args).stdout).into_owned()
}

fn default_model_present() -> bool {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipping: {} is missing; run scripts/fetch-default-model.sh", path.display());
    }
    path.exists()
}

#[test]
fn greedy_text_on_the_default_model_is_the_expected_text() {
    if !default_model_present() {
        return;
    }
    let cases: [(&[&str], &str); 4] = [
        (
            &["generate", "Once upon a time", "--max-tokens", "32"],
            "Once upon a time, the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling \
             streets. But as the years went by, the city began to lose its original\n",
        ),
        (
            &["generate", "The capital of France is", "--max-tokens", "48"],
            "The capital of France is Paris.\n\nThe answer is: 2018-01-22 12:12:53.\n",
        ),
        // Chat: the template is applied and the turn ends at <|im_end|>; the prompt is not echoed.
        (&["generate", "--chat", "What is the capital of France?"], "The capital of France is Paris.\n"),
        // A prompt prefilled in chunks of 3 tokens gives the same text.
        (
            &["generate", "Once upon a time", "--max-tokens", "32", "--max-num-tokens", "3"],
            "Once upon a time, the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling \
             streets. But as the years went by, the city began to lose its original\n",
        ),
    ];
    for (args, want) in cases {
        assert_eq!(stdout(args), want, "rtllm {args:?}");
    }
}

/// The prompt tokens, decoded tokens and finish reason of a `--stats` line, checking its shape:
/// `load 0.06s | prompt 6 tokens in 0.054s (110.4 tok/s) | 63 tokens decoded at 28.2 tok/s | finish: length`.
fn parse_stats(line: &str) -> (usize, usize, &str) {
    let number = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("{s:?} in {line}"));
    let parts: Vec<&str> = line.split(" | ").collect();
    assert_eq!(parts.len(), 4, "{line}");
    let load = parts[0].strip_prefix("load ").and_then(|s| s.strip_suffix('s')).unwrap_or_else(|| panic!("{line}"));
    assert!(number(load) >= 0.0, "{line}");
    let prompt: Vec<&str> = parts[1].split(' ').collect();
    assert_eq!(prompt.len(), 7, "{line}");
    assert_eq!((prompt[0], prompt[2], prompt[3], prompt[6]), ("prompt", "tokens", "in", "tok/s)"), "{line}");
    number(prompt[4].trim_end_matches('s'));
    number(prompt[5].trim_start_matches('('));
    let decoded: Vec<&str> = parts[2].split(' ').collect();
    assert_eq!(decoded.len(), 6, "{line}");
    assert_eq!((decoded[1], decoded[2], decoded[3], decoded[5]), ("tokens", "decoded", "at", "tok/s"), "{line}");
    number(decoded[4]);
    let finish = parts[3].strip_prefix("finish: ").unwrap_or_else(|| panic!("{line}"));
    (number(prompt[1]) as usize, number(decoded[0]) as usize, finish)
}

#[test]
fn stats_line_reports_load_prefill_decode_and_finish() {
    // Dummy weights: the shape of the line, not the text, is under test.
    let args = ["generate", "--dummy-weights", "tiny-llama", "Hello", "--max-tokens", "6", "--ignore-eos", "--stats"];
    let out = rtllm(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("load ")).unwrap_or_else(|| panic!("no stats line: {stderr}"));
    let (prompt, decoded, finish) = parse_stats(line);
    assert!(prompt > 0, "{line}");
    assert_eq!((decoded, finish), (5, "length"), "six tokens: the first from prefill, five decoded: {line}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Hello"), "the prompt is echoed");
    // A stop: the chat turn of the default model ends at its eos token.
    if default_model_present() {
        let out = rtllm(&["generate", "--chat", "What is the capital of France?", "--stats"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().find(|l| l.starts_with("load ")).unwrap_or_else(|| panic!("no stats line: {stderr}"));
        let (_, _, finish) = parse_stats(line);
        assert!(finish.starts_with("stop (eos token "), "{line}");
    }
}
