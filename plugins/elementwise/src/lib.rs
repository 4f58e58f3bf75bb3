//! rtllm elementwise plugin: the CPU kernels between the big matmuls of a decoder layer —
//! token embedding lookup (float and GGUF-quantized tables), rotary position embedding,
//! SwiGLU's `silu(gate) * up`, residual add, greedy argmax and row gathers. Each op is one
//! file that registers itself; every kernel spreads its rows over the host's thread pool.
rtllm_plugin_api::export_plugin!(name: "rtllm-elementwise", version: env!("CARGO_PKG_VERSION"));

pub mod add;
pub mod argmax;
pub mod embedding;
pub mod gather_rows;
pub mod rope;
pub mod rope_freqs;
pub mod sample;
pub mod silu_mul;
mod util;

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod registry_tests {
    #[test]
    fn every_op_is_registered() {
        let ops = rtllm_plugin_api::author::collect_ops().unwrap();
        let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["add", "argmax", "embedding", "gather_rows", "rope", "sample", "silu_mul"]);
        for op in ops.iter() {
            assert!(!(op.examples)().is_empty(), "{} has examples", op.name);
        }
    }
}
