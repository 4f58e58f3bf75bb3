//! The FP8 checkpoint fixtures (tests/fixtures/fp8, scripts/reference/make_fp8_checkpoints.py):
//! their paths, the torch reference (expected.json), and edited copies for the refusal tests (a
//! fixture directory copied, the tensors of its model.safetensors and its config.json edited).

use rtllm::weights::safetensors::load_safetensors;
use rtllm::weights::{write_safetensors, WeightStore};
use rtllm_plugin_api::DType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// tests/fixtures/fp8/`name`.
pub fn fp8_fixture(name: &str) -> PathBuf {
    crate::repo_root().join("tests/fixtures/fp8").join(name)
}

/// tests/fixtures/fp8/expected.json: prompts, and per format the reference logits and tokens.
pub fn fp8_expected() -> Value {
    let text = std::fs::read_to_string(fp8_fixture("expected.json")).expect("tests/fixtures/fp8/expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

/// The last-position logits of every prompt through `engine`, and their largest difference
/// from `reference["logits"]` (one list per prompt).
pub fn logits_vs_reference(
    engine: &mut dyn rtllm::parallel::ModelRunner,
    prompts: &[Vec<u32>],
    reference: &Value,
) -> (Vec<Vec<f32>>, f32) {
    let mut max_diff = 0f32;
    let mut all = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let l = crate::last_logits(engine, prompt);
        let r: Vec<f32> = reference["logits"][i]
            .as_array()
            .expect("reference logits")
            .iter()
            .map(|x| x.as_f64().expect("a logit") as f32)
            .collect();
        assert_eq!(l.len(), r.len(), "prompt {i}: logits of the vocabulary");
        max_diff = l.iter().zip(&r).map(|(a, b)| (a - b).abs()).fold(max_diff, f32::max);
        all.push(l);
    }
    (all, max_diff)
}

/// A JSON list of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("a list").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

/// A checkpoint's tensors by name: dtype, shape, bytes.
pub type Tensors = BTreeMap<String, (DType, Vec<usize>, Vec<u8>)>;

/// Copies the checkpoint directory `from` into `to` (an existing empty directory), applying
/// `edit` to its tensors and `config` to its config.json.
pub fn edited_copy(from: &Path, to: &Path, edit: impl FnOnce(&mut Tensors), config: impl FnOnce(&mut Value)) {
    for f in std::fs::read_dir(from).expect("the fixture directory") {
        let f = f.expect("a fixture file").path();
        std::fs::copy(&f, to.join(f.file_name().expect("a file name"))).expect("copies the fixture");
    }
    let file = to.join("model.safetensors");
    let mut store = WeightStore::new();
    load_safetensors(&file, &mut store).expect("the fixture's weights");
    let mut tensors: Tensors =
        store.iter().map(|(n, t)| (n.to_string(), (t.dtype, t.shape.clone(), t.bytes().to_vec()))).collect();
    edit(&mut tensors);
    let list: Vec<(&str, DType, &[usize], &[u8])> =
        tensors.iter().map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice())).collect();
    write_safetensors(&file, &list, &BTreeMap::new()).expect("writes the edited weights");
    let cfg_path = to.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).expect("config.json");
    let mut cfg: Value = serde_json::from_str(&text).expect("config.json parses");
    config(&mut cfg);
    std::fs::write(&cfg_path, cfg.to_string()).expect("writes config.json");
}

/// An f32 tensor of `values` with `shape`.
pub fn f32_tensor(values: &[f32], shape: &[usize]) -> (DType, Vec<usize>, Vec<u8>) {
    (DType::F32, shape.to_vec(), values.iter().flat_map(|v| v.to_le_bytes()).collect())
}
