//! The OpenAI-compatible server's JSON request bodies (/v1/completions and
//! /v1/chat/completions): every check a route makes before the model is involved (JSON,
//! unsupported fields, model name, the bounded prompt parse, messages, sampling parameters).
#![no_main]

use rtllm::serve::fuzzing::{chat_body, completions_body};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = completions_body(data, 2048) {
        let _ = format!("{e:?}");
    }
    if let Err(e) = chat_body(data, 2048) {
        let _ = format!("{e:?}");
    }
});
