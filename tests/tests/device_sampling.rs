//! The executor's device-sampling path (`Engine::forward_sample` with a `sample` kernel, what a
//! GPU build uses so logits never reach the host), exercised on the CPU with the CPU provider of
//! `sample`: greedy tokens equal the host sampler's, seeded sampling reproduces, and requests
//! the device sampler cannot serve (penalties, logprobs) fall back to the host.

use rtllm::api::{Llm, Prompt};
use rtllm::engine::BuildConfig;
use rtllm::sampling::SamplingParams;
use rtllm::weights::dummy::DummySpec;
use std::sync::Arc;

fn llm(device_sampling: bool) -> Llm {
    let registry = Arc::new(rtllm_tests::registry_with(rtllm_tests::builtin_plugin_files()));
    let build = BuildConfig { device_sampling: Some(device_sampling), use_engine_cache: false, ..Default::default() };
    Llm::builder()
        .registry(registry)
        .build_config(build)
        .dummy_weights(DummySpec::new("tiny-llama"))
        .build()
        .expect("the dummy model builds")
}

fn prompts() -> Vec<Prompt> {
    [vec![5u32, 9, 200], vec![17], (1..40).collect::<Vec<u32>>()].into_iter().map(Prompt::Tokens).collect()
}

fn tokens(llm: &Llm, params: &SamplingParams) -> Vec<Vec<u32>> {
    let outs = llm.generate(prompts(), params).expect("generates");
    outs.iter().map(|o| o.outputs[0].token_ids.clone()).collect()
}

#[test]
fn device_sampling_matches_the_host_and_reproduces() {
    let (device, host) = (llm(true), llm(false));
    let greedy = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(16) };
    let want = tokens(&host, &greedy);
    assert_eq!(tokens(&device, &greedy), want, "greedy through the sample kernel = the host sampler");
    assert!(want.iter().all(|t| t.len() == 16));

    let seeded = SamplingParams { temperature: 0.8, top_k: 20, top_p: 0.9, seed: Some(11), ..greedy.clone() };
    let a = tokens(&device, &seeded);
    assert_eq!(a, tokens(&device, &seeded), "same seed, same tokens");
    assert_ne!(a, want, "sampling at temperature 0.8 should leave the greedy path somewhere in 48 tokens");

    // A repetition penalty needs the host sampler: the step falls back and still matches it.
    let penalised = SamplingParams { repetition_penalty: 1.3, ..greedy };
    assert_eq!(tokens(&device, &penalised), tokens(&host, &penalised));
}
