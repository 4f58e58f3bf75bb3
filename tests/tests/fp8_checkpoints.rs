//! HF FP8 checkpoints end to end (tests/fixtures/fp8, written with torch float8_e4m3fn by
//! scripts/reference/make_fp8_checkpoints.py in the three producers' formats, ModelOpt's two FP8 schemes): each loads,
//! builds its linears as `fp8_matmul` (Rust and TOML definitions alike), and its logits match
//! the script's reference (dequantized weights, the same activation quantization); checkpoints
//! holding equal weights in different formats generate the same tokens; damaged scales are
//! refused naming the tensor.

use rtllm::engine::BuildConfig;
use rtllm::model::{Model, ModelSpec};

use rtllm_tests::checkpoints::f32_tensor;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const FORMATS: [&str; 5] = ["ct_static", "modelopt", "ct_dynamic", "fbgemm", "modelopt_pcpt"];

/// The reference computes in f64 with the activations quantized exactly as rtllm does (same
/// x / s, same round-to-nearest-even, same saturation); rtllm sums in f32. Measured on this
/// fixture: max |Δ| 1.4e-6 (printed by the test). The bound leaves room for one activation
/// landing on the other E4M3 neighbour after a different f32 summation order on another CPU
/// (one term off by 1/16 of itself); anything systematic (a scale applied twice or not at
/// all, activations not quantized, per-channel read as per-tensor) is off by far more.
const LOGIT_TOLERANCE: f32 = 5e-3;

use rtllm_tests::checkpoints::{fp8_expected as expected, fp8_fixture as fixture, ids};

fn load(dir: &Path, def: Option<&Path>) -> Result<Model, String> {
    let mut spec = ModelSpec::path(dir);
    if let Some(d) = def {
        spec = spec.with_definition_file(d);
    }
    Model::load(&spec, rtllm_tests::registry(), &BuildConfig::default()).map_err(|e| e.to_string())
}

#[test]
fn every_format_matches_the_torch_reference_and_equal_weights_give_equal_tokens() {
    let want = expected();
    let prompts: Vec<Vec<u32>> = want["prompts"].as_array().expect("prompts").iter().map(ids).collect();
    let n = want["greedy_tokens"].as_u64().expect("greedy_tokens") as usize;
    let mut tokens = BTreeMap::new();
    let mut logits = BTreeMap::new();
    for format in FORMATS {
        let mut model = load(&fixture(format), None).unwrap_or_else(|e| panic!("{format}: {e}"));
        let graph = model.engine.single().expect("one engine").graph();
        let fp8 = graph.nodes.iter().filter(|n| n.op == "fp8_matmul").count();
        assert_eq!(fp8, 2 * 7, "{format}: every linear but lm_head is an fp8_matmul");
        let reference = &want["formats"][format];
        let (got_logits, max_diff) =
            rtllm_tests::checkpoints::logits_vs_reference(&mut model.engine, &prompts, reference);
        println!("{format}: max |logit - reference| = {max_diff:.2e}");
        assert!(max_diff < LOGIT_TOLERANCE, "{format}: logits differ from the reference by {max_diff}");
        let llm = rtllm_tests::start(model);
        let got = rtllm_tests::greedy_ids(&llm, &prompts, &rtllm_tests::greedy(n));
        let want_tokens: Vec<Vec<u32>> = reference["tokens"].as_array().unwrap().iter().map(ids).collect();
        assert_eq!(got, want_tokens, "{format}: greedy tokens differ from the reference");
        tokens.insert(format, got);
        logits.insert(format, got_logits);
    }
    // Equal weights and scales in two formats: the same tokens and bit-identical logits.
    for (a, b) in [("ct_static", "modelopt"), ("ct_dynamic", "fbgemm"), ("ct_dynamic", "modelopt_pcpt")] {
        assert_eq!(tokens[a], tokens[b], "{a} vs {b}");
        assert_eq!(logits[a], logits[b], "{a} vs {b}: same weights, same logits");
    }
    // Static and dynamic activation quantization differ (the quantization is really applied).
    assert_ne!(logits["ct_static"], logits["ct_dynamic"]);
}

#[test]
fn the_toml_definition_builds_the_same_fp8_graph_as_the_rust_one() {
    let def = rtllm_tests::repo_root().join("models/configs/llama.toml");
    for format in ["ct_static", "fbgemm"] {
        let rust = load(&fixture(format), None).unwrap();
        let toml = load(&fixture(format), Some(&def)).unwrap();
        let ops = |m: &Model| -> Vec<(String, Vec<String>)> {
            let g = m.engine.single().unwrap().graph();
            g.nodes
                .iter()
                .map(|n| (n.op.clone(), n.attrs.iter().map(|(k, v)| format!("{k}={v:?}")).collect()))
                .collect()
        };
        assert_eq!(ops(&rust), ops(&toml), "{format}");
    }
}

type Tensors = rtllm_tests::checkpoints::Tensors;

/// An edit of a checkpoint's tensors.
type Edit = Box<dyn FnOnce(&mut Tensors)>;

/// A copy of checkpoint `name` in a temp dir with `edit` applied to its tensors.
fn damaged(name: &str, edit: impl FnOnce(&mut Tensors)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rtllm_tests::checkpoints::edited_copy(&fixture(name), dir.path(), edit, |_| {});
    dir
}

#[test]
fn damaged_scales_are_refused_naming_the_tensor() {
    let ws = "model.layers.1.mlp.up_proj.weight_scale";
    let is = "model.layers.0.self_attn.k_proj.input_scale";
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        ("ct_static", ws, Box::new(|t: &mut Tensors| drop(t.remove(ws))), "missing"),
        ("ct_static", is, Box::new(|t: &mut Tensors| drop(t.remove(is))), "missing"),
        (
            "ct_static",
            ws,
            Box::new(|t: &mut Tensors| drop(t.insert(ws.into(), f32_tensor(&[0.1, 0.2], &[2])))),
            "shape",
        ),
        (
            "ct_dynamic",
            ws,
            Box::new(|t: &mut Tensors| drop(t.insert(ws.into(), f32_tensor(&[0.1; 3], &[3, 1])))),
            "shape",
        ),
        ("modelopt", ws, Box::new(|t: &mut Tensors| drop(t.insert(ws.into(), f32_tensor(&[f32::NAN], &[])))), "NaN"),
        ("modelopt", is, Box::new(|t: &mut Tensors| drop(t.insert(is.into(), f32_tensor(&[0.0], &[])))), "positive"),
        ("modelopt", is, Box::new(|t: &mut Tensors| drop(t.insert(is.into(), f32_tensor(&[-0.5], &[])))), "positive"),
        (
            "fbgemm",
            ws,
            Box::new(|t: &mut Tensors| {
                let mut v = vec![0.01f32; 128];
                v[7] = f32::INFINITY;
                drop(t.insert(ws.into(), f32_tensor(&v, &[128, 1])))
            }),
            "inf",
        ),
        ("ct_dynamic", is, Box::new(|t: &mut Tensors| drop(t.insert(is.into(), f32_tensor(&[0.1], &[1])))), "dynamic"),
    ];
    for (format, tensor, edit, why) in cases {
        let dir = damaged(format, edit);
        let err = load(dir.path(), None).err().unwrap_or_else(|| panic!("{format} with a bad {tensor} loaded"));
        assert!(err.contains(tensor), "{format}: the error names {tensor}: {err}");
        assert!(err.contains(why), "{format}: the error says {why}: {err}");
    }
}

#[test]
fn unknown_or_inconsistent_configs_are_refused_naming_the_field() {
    let edit_config = |name: &str, edit: &dyn Fn(&mut Value)| {
        let dir = damaged(name, |_| {});
        let path = dir.path().join("config.json");
        let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(&path, cfg.to_string()).unwrap();
        load(dir.path(), None).err().unwrap_or_else(|| panic!("{name}: the edited config loaded"))
    };
    let e = edit_config("ct_static", &|c| c["quantization_config"]["quant_method"] = "awq".into());
    assert!(e.contains("quant_method") && e.contains("awq"), "{e}");
    let e = edit_config("ct_static", &|c| {
        c["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "group".into()
    });
    assert!(e.contains("weights.strategy"), "{e}");
    // The config says static activations but the checkpoint was written for dynamic ones.
    let e = edit_config("ct_dynamic", &|c| {
        let acts = &mut c["quantization_config"]["config_groups"]["group_0"]["input_activations"];
        acts["dynamic"] = false.into();
        acts["strategy"] = "tensor".into();
    });
    assert!(e.contains("input_scale") && e.contains("missing"), "{e}");
    // lm_head is ignored by the config but an FP8 tensor.
    let e = edit_config("ct_static", &|c| c["quantization_config"]["ignore"] = serde_json::json!(["re:.*down_proj"]));
    assert!(e.contains("down_proj.weight") && e.contains("ignore"), "{e}");
    // No quantization_config at all: FP8 tensors are not read as plain floats.
    let e = edit_config("fbgemm", &|c| drop(c.as_object_mut().unwrap().remove("quantization_config")));
    assert!(e.contains("F8_E4M3") && e.contains("quantization_config"), "{e}");
}
