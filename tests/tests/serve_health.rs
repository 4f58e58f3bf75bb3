//! Issue 20, item 5: /health_generate must not wait behind user requests. With every batch slot
//! taken by long generations and more requests waiting, /health_generate answers 200 while
//! those requests are still running and waiting (its one-token probe jumps the queue into the
//! slot reserved for it), and concurrent probes all answer.

mod serve_support;

use rtllm::runtime::executor::ExecutorConfig;
use rtllm::sampling::SamplingParams;
use rtllm::serve::ServeConfig;
use serde_json::Value;
use serve_support::{client, load, start, MODEL};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_generate_answers_on_a_saturated_executor() {
    let Some(llm) = load(ExecutorConfig::with_max_batch_size(2)) else { return };
    let mut config = ServeConfig::new(MODEL);
    config.health_generate_timeout = Duration::from_secs(600);
    let server = start(llm.clone(), config, 2);
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(4000) };
    let prompts = ["Once upon a time", "The capital of France is", "def f(x):", "Hello", "A B C", "1 2 3"];
    let mut streams = Vec::new();
    for p in prompts {
        streams.push(llm.generate_async_stream(p, &params).expect("submits"));
    }
    for s in streams.iter_mut().take(2) {
        assert!(s.next().await.is_some_and(|o| o.is_ok()), "the first two run");
    }
    assert_eq!(llm.queued().0, 4, "four wait");

    let probes: Vec<_> = (0..8)
        .map(|_| {
            let url = server.url("/health_generate");
            tokio::spawn(async move {
                let r = client().get(url).send().await.expect("sends");
                (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    for p in probes {
        let (status, body) = p.await.expect("the probe task completes");
        assert_eq!((status, &body["status"]), (200, &Value::from("ok")), "{body}");
    }
    let stats = llm.stats();
    assert_eq!(stats.running_requests, 2, "the user requests still run: {stats:?}");
    assert_eq!(llm.queued().0, 4, "and still wait: the probes did not queue behind them");
}
