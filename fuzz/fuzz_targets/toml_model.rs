//! TOML model definitions: parsing, compiling and checking the file, then building it for a
//! small Llama config through a builder that accepts every op and weight (no registry, no
//! plugins), so the executor's conditions, loops, blocks and expressions all run.
#![no_main]

use rtllm_models::builder::{BuildError, GraphBuilder, Value};
use rtllm_models::toml::TomlModel;
use rtllm_models::{BuildOptions, ModelConfig};
use rtllm_plugin_api::{Attrs, DType, TensorMeta};
use std::sync::OnceLock;

/// Every op exists and gives one output shaped like its first input (`fused*` ops give two);
/// every weight exists. Stops after a bounded number of values so a huge `repeat` ends.
#[derive(Default)]
struct AnyOp {
    metas: Vec<TensorMeta>,
}

const MAX_VALUES: usize = 20_000;

impl AnyOp {
    fn push(&mut self, meta: TensorMeta) -> Result<Value, BuildError> {
        if self.metas.len() >= MAX_VALUES {
            return Err(BuildError::Invalid { scope: String::new(), message: "too many values".into() });
        }
        self.metas.push(meta);
        Ok(Value(self.metas.len() - 1))
    }
}

impl GraphBuilder for AnyOp {
    fn input(&mut self, _: &str, meta: TensorMeta) -> Result<Value, BuildError> {
        self.push(meta)
    }
    fn weight(&mut self, _: &str) -> Result<Value, BuildError> {
        self.push(TensorMeta::of(DType::F32, &[8, 8]))
    }
    fn has_weight(&self, name: &str) -> bool {
        !name.contains("bias")
    }
    fn op(&mut self, op: &str, inputs: &[Value], _: Attrs) -> Result<Vec<Value>, BuildError> {
        let meta = inputs.first().map(|v| self.meta(*v)).unwrap_or_else(|| TensorMeta::of(DType::F32, &[8]));
        let n = if op.starts_with("fused") { 2 } else { 1 };
        (0..n).map(|_| self.push(meta.clone())).collect()
    }
    fn has_op(&self, op: &str) -> bool {
        !op.starts_with("fused")
    }
    fn meta(&self, value: Value) -> TensorMeta {
        self.metas.get(value.0).cloned().unwrap_or_else(|| TensorMeta::of(DType::F32, &[1]))
    }
    fn output(&mut self, _: &str, _: Value) -> Result<(), BuildError> {
        Ok(())
    }
    fn set_scope(&mut self, _: &str) {}
}

fn config() -> &'static ModelConfig {
    static CONFIG: OnceLock<ModelConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let json = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":32,"hidden_size":16,"intermediate_size":32,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
            "rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":true}"#;
        ModelConfig::from_hf_json(json).expect("the fuzz config parses")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(model) = TomlModel::from_str(text, "fuzz.toml") {
        let _ = model.build(config(), &BuildOptions::default(), &mut AnyOp::default());
    }
});
