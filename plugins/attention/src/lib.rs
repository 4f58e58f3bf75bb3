//! rtllm attention plugin: the CPU `paged_attention` kernel — causal GQA attention over a
//! paged KV cache for packed batches that mix prefill and decode, with an online-softmax loop
//! over cache blocks spread across the host's thread pool.
rtllm_plugin_api::export_plugin!(name: "rtllm-attention", version: env!("CARGO_PKG_VERSION"));

pub mod batch;
pub mod cache;
pub mod flash;
pub mod paged_attention;
pub mod params;

#[cfg(test)]
mod tests;
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../elementwise/src/testutil.rs"]
mod testutil;

#[cfg(test)]
mod registry_tests {
    #[test]
    fn paged_attention_is_registered() {
        let ops = rtllm_plugin_api::author::collect_ops().unwrap();
        let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["paged_attention"]);
    }
}
