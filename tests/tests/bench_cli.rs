//! `rtllm bench` end to end through the binary with dummy weights: throughput and latency
//! modes, a JSONL dataset, the JSON report's accounting; plus bad flags failing cleanly.

use rtllm_tests::{plugin_dir, rtllm_binary};
use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(rtllm_binary())
        .arg("--plugin-path")
        .arg(plugin_dir())
        .arg("bench")
        .args(["--dummy-weights", "tiny-llama"])
        .args(args)
        .output()
        .unwrap()
}

fn json_report(args: &[&str]) -> serde_json::Value {
    let out = bench(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn throughput_report_accounts_every_token() {
    let r = json_report(&["--num-requests", "6", "--input-len", "20", "--output-len", "7", "--json"]);
    assert_eq!(r["num_requests"], 6);
    assert_eq!(r["total_input_tokens"], 120);
    assert_eq!(r["total_output_tokens"], 42, "ignore_eos: every request generates its full length");
    assert_eq!(r["ttft_ms"]["count"], 6);
    assert_eq!(r["itl_ms"]["count"], 6 * 6);
    assert!(r["output_throughput"].as_f64().unwrap() > 0.0);
    assert!(r["kv_cache"]["total_blocks"].as_u64().unwrap() >= 1 && r["kv_cache"]["peak_used_blocks"].is_u64());
    assert_eq!(r["config"]["mode"], "throughput");
}

#[test]
fn latency_modes_and_dataset() {
    let r = json_report(&[
        "latency",
        "--concurrency",
        "2",
        "--num-requests",
        "4",
        "--input-len",
        "8",
        "--output-len",
        "5",
        "--input-len-std",
        "3",
        "--json",
    ]);
    assert_eq!(r["total_output_tokens"], 20);
    assert!(r["peak_running_requests"].as_u64().unwrap() <= 2);
    let r = json_report(&[
        "latency",
        "--request-rate",
        "50",
        "--num-requests",
        "4",
        "--input-len",
        "8",
        "--output-len",
        "3",
        "--json",
    ]);
    assert_eq!(r["total_output_tokens"], 12);

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"input_ids\": [5, 6, 7], \"output_tokens\": 4}\n\n{\"prompt\": \"hello\", \"output_tokens\": 2}\n",
    )
    .unwrap();
    let r = json_report(&["--dataset", data.to_str().unwrap(), "--json"]);
    assert_eq!(r["num_requests"], 2);
    assert_eq!(r["total_output_tokens"], 6);

    std::fs::write(&data, "{\"output_tokens\": 4}\n").unwrap();
    let out = bench(&["--dataset", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("d.jsonl:1"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn table_and_bad_flags() {
    let out = bench(&["--num-requests", "2", "--input-len", "4", "--output-len", "2", "--no-progress"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("TTFT") && text.contains("output throughput"), "{text}");
    let out = bench(&["--concurrency", "2"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("latency mode"));
    let out = bench(&["--dummy-dtype", "q4_0"]);
    assert!(!out.status.success());
}
