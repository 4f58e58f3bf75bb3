//! The OpenAI-compatible server's JSON request bodies (/v1/completions and
//! /v1/chat/completions), parsed as the server's JSON extractor parses them.
#![no_main]

use rtllm::serve::protocol::{ChatRequest, CompletionRequest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<CompletionRequest>(data) {
        let _ = format!("{r:?}");
    }
    if let Ok(r) = serde_json::from_slice::<ChatRequest>(data) {
        let _ = format!("{r:?}");
    }
});
