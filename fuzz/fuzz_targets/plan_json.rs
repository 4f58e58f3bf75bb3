//! An engine directory's plan.json: parsing, the structural checks, and the memory the recorded
//! limits would need (computed and checked, never allocated).
#![no_main]

use rtllm::engine::serialize::parse_plan;
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(plan) = parse_plan(data, Path::new("plan.json")) {
        let _ = rtllm::engine::EngineLimits::from(&plan.limits).check();
    }
});
