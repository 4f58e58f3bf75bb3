//! Unit tests: the expression language, the manifest parser's errors, and inference from the
//! embedded manifest (all on the CPU; creating a kernel without CUDA is a clear error).

use crate::expr::{parse, Scope, Value};
use crate::manifest::{Manifest, ManifestError};
use crate::registry::{Artifacts, Registry};
use rtllm_plugin_api::{Attrs, DType, Dim, TensorMeta};

fn eval(src: &str, metas: &[(&str, TensorMeta)], attrs: &Attrs) -> Result<Value, String> {
    let s = Scope { tensors: metas.iter().map(|(n, m)| (*n, m, Some(4096u64))).collect(), attrs, vars: vec![] };
    s.eval(&parse(src).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

#[test]
fn expressions_follow_precedence_and_types() {
    let x = TensorMeta::of(DType::BF16, &[3, 10]);
    let a = Attrs::new().with("head_dim", 64usize).with("style", "neox");
    let ev = |s: &str| eval(s, &[("x", x.clone())], &a).unwrap();
    assert_eq!(ev("1 + 2 * 3 - 4 / 2"), Value::Int(5));
    assert_eq!(ev("(1 + 2) * 3 % 4"), Value::Int(1));
    assert_eq!(ev("x.shape[1] / 2 + x.rank"), Value::Int(7));
    assert_eq!(ev("x.numel * x.itemsize"), Value::Int(60));
    assert_eq!(ev("x.ptr % 16 == 0 && x.dtype == \"bf16\""), Value::Bool(true));
    assert_eq!(ev("cdiv(x.shape[1], 4)"), Value::Int(3));
    assert_eq!(ev("attr(\"eps\", 1e-6)"), Value::Float(1e-6));
    assert_eq!(ev("if(attr(\"style\") == \"neox\", 0, 1)"), Value::Int(0));
    assert_eq!(ev("one_of(attr(\"style\"), \"interleaved\", \"neox\")"), Value::Bool(true));
    assert_eq!(ev("-2 * -3 < 7 || attr(\"missing\") > 0"), Value::Bool(true));
    assert_eq!(ev("!(1 >= 2)"), Value::Bool(true));
    assert_eq!(ev("max(attr(\"head_dim\"), 3) + min(2, 5)"), Value::Int(66));
}

#[test]
fn symbolic_dims_stay_symbolic_and_errors_are_clear() {
    let x = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(8)]);
    let y = TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(8)]);
    let a = Attrs::new();
    let m = [("x", x), ("y", y)];
    assert_eq!(eval("x.shape[0]", &m, &a), Ok(Value::Sym("T".into())));
    assert_eq!(eval("x.shape[0] == y.shape[0]", &m, &a), Ok(Value::Bool(true)));
    assert_eq!(eval("x.shape[0] * 2", &m, &a), Ok(Value::Unknown));
    assert_eq!(eval("same_shape(x, y)", &m, &a), Ok(Value::Bool(true)));
    assert!(eval("attr(\"nope\")", &m, &a).unwrap_err().contains("missing attribute 'nope'"));
    assert!(eval("x.shape[5]", &m, &a).unwrap_err().contains("out of range"));
    assert!(eval("1 / 0", &m, &a).unwrap_err().contains("division by zero"));
    assert!(eval("z.rank", &m, &a).unwrap_err().contains("unknown tensor 'z'"));
    assert!(eval("x.size", &m, &a).unwrap_err().contains("unknown tensor field 'size'"));
    assert!(eval("1 +", &m, &a).unwrap_err().contains("unexpected end"));
    assert!(eval("(1", &m, &a).unwrap_err().contains("expected ')'"));
    assert!(eval("1 # 2", &m, &a).unwrap_err().contains("unexpected character '#' at column 3"));
    assert!(eval("\"a\" + 1", &m, &a).unwrap_err().contains("needs numbers"));
}

const GOOD: &str = r#"{"format": 1, "kernels": [{
  "name": "scale", "op": "scale", "inputs": [{"name": "x", "dtype": "T", "rank": 2}],
  "outputs": [{"name": "y", "dtype": "T", "shape": ["x.shape[0]", "x.shape[1] * 2"]}],
  "checks": [["x.shape[1] > 0", "x must not be empty"]],
  "args": [{"name": "x_ptr", "type": "*T", "value": "x.ptr"}, {"name": "n", "type": "i32", "value": "x.numel"}],
  "grid": ["cdiv(x.numel, BLOCK)"], "constexprs": {"BLOCK": 128},
  "variants": [{"types": {"T": "f32"}, "specialization": "generic", "cubin": "scale.cubin", "symbol": "scale",
                "num_warps": 4, "trailing_null_args": 2}]}]}"#;

fn parse_with(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, &|f| f == "scale.cubin")
}

#[test]
fn manifest_rules_infer_shapes() {
    let m = parse_with(GOOD).unwrap();
    let k = &m.kernels[0];
    let out =
        crate::rules::infer_entry(k, &[TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(3)])], &Attrs::new())
            .unwrap();
    assert_eq!(out, vec![TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::from(6)])]);
    let e = crate::rules::infer_entry(k, &[TensorMeta::of(DType::F32, &[2, 0])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("x must not be empty"), "{e}");
    let e = crate::rules::infer_entry(k, &[TensorMeta::of(DType::BF16, &[2, 3])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("x must be f32"), "{e}");
    let e = crate::rules::infer_entry(k, &[TensorMeta::of(DType::F32, &[6])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("rank 2"), "{e}");
}

#[test]
fn malformed_manifests_are_clear_errors() {
    let e = parse_with("{not json").unwrap_err();
    assert!(matches!(e, ManifestError::Json(_)), "{e}");
    let e = parse_with(&GOOD.replace("\"format\": 1", "\"format\": 7")).unwrap_err();
    assert!(e.to_string().contains("format 7"), "{e}");
    let e = parse_with(&GOOD.replace("x.shape[1] * 2", "x.shape[1] *")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "manifest kernel 'scale': outputs[0].shape[1]: `x.shape[1] *`: unexpected end of expression at column 13"
    );
    let e = parse_with(&GOOD.replace("\"*T\"", "\"f64\"")).unwrap_err();
    assert!(e.to_string().contains("args.x_ptr.type: unknown type 'f64'"), "{e}");
    let e = parse_with(&GOOD.replace("scale.cubin", "gone.cubin")).unwrap_err();
    assert_eq!(e, ManifestError::MissingCubin { kernel: "scale".into(), file: "gone.cubin".into() });
    let e = parse_with(&GOOD.replace("{\"T\": \"f32\"}", "{\"U\": \"f32\"}")).unwrap_err();
    assert!(e.to_string().contains("variants[0].types: binds [\"U\"], the inputs use [\"T\"]"), "{e}");
    let e = parse_with(&GOOD.replace("\"grid\": [\"cdiv(x.numel, BLOCK)\"]", "\"grid\": []")).unwrap_err();
    assert!(e.to_string().contains("grid: takes 1 to 3 expressions"), "{e}");
    let no_manifest = Registry::new(Artifacts { files: Default::default(), origin: "test".into() }).err().unwrap();
    assert!(no_manifest.to_string().contains("no manifest.json in test"), "{no_manifest}");
}

#[test]
fn embedded_manifest_registers_every_op_below_the_cuda_plugin() {
    let reg = Registry::new(Artifacts::embedded()).unwrap();
    let decls = reg.decls();
    let names: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
    for op in ["rmsnorm", "fused_add_rmsnorm", "silu_mul", "rope", "add"] {
        assert!(names.contains(&op), "{op} missing from {names:?}");
    }
    for d in &decls {
        assert!(d.priority < 0, "{} has priority {}", d.name, d.priority);
        assert_eq!(d.device, rtllm_plugin_api::DeviceKind::Cuda);
        let examples = (d.examples)();
        assert!(!examples.is_empty(), "{} has no examples", d.name);
        for ex in examples.iter() {
            let out = (d.infer)(ex.inputs.as_slice().into(), &ex.attrs).into_result();
            let out = out.unwrap_or_else(|e| panic!("{} example {:?}: {e}", d.name, ex.inputs));
            assert_eq!(out[0].dtype, ex.inputs[0].dtype, "{}: outputs take the activation dtype", d.name);
        }
    }
}

#[test]
fn embedded_rules_match_the_cpu_providers_semantics() {
    let reg = Registry::new(Artifacts::embedded()).unwrap();
    let op = |n: &str| reg.ops.iter().find(|o| o.name == n).unwrap();
    let infer = |n: &str, inputs: &[TensorMeta], attrs: &Attrs| {
        crate::rules::infer(n, &op(n).entries, inputs, attrs).map(|(_, o)| o)
    };
    let t = || Dim::sym("num_tokens");
    // silu_mul: two inputs or one fused [T, 2I].
    let fused = infer("silu_mul", &[TensorMeta::new(DType::BF16, [t(), Dim::from(8)])], &Attrs::new()).unwrap();
    assert_eq!(fused, vec![TensorMeta::new(DType::BF16, [t(), Dim::from(4)])]);
    let e = infer("silu_mul", &[TensorMeta::of(DType::BF16, &[2, 7])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("odd"), "{e}");
    // fused_add_rmsnorm: two outputs like x; mixed weight dtype.
    let x = TensorMeta::new(DType::F16, [t(), Dim::from(64)]);
    let out = infer("fused_add_rmsnorm", &[x.clone(), x.clone(), TensorMeta::of(DType::F32, &[64])], &Attrs::new());
    assert_eq!(out.unwrap(), vec![x.clone(), x.clone()]);
    let e = infer("rmsnorm", &[x.clone(), TensorMeta::of(DType::F16, &[63])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("w must be [H]"), "{e}");
    let e = infer("rmsnorm", &[x.clone(), TensorMeta::of(DType::BF16, &[64])], &Attrs::new()).unwrap_err();
    assert!(e.message().contains("no compiled variant for T=f16, W=bf16"), "{e}");
    // rope: attrs validated like plugin-api's RopeAttrs.
    let rope_in = [TensorMeta::new(DType::BF16, [t(), Dim::from(256)]), TensorMeta::new(DType::I32, [t()])];
    let ok = Attrs::new().with("head_dim", 64usize);
    assert_eq!(infer("rope", &rope_in, &ok).unwrap()[0], rope_in[0]);
    for (attrs, msg) in [
        (ok.clone().with("style", "gptj"), "style must be"),
        (ok.clone().with("rotary_dim", 63usize), "rotary_dim must be even"),
        (Attrs::new().with("head_dim", 48usize), "not a multiple of head_dim"),
        (ok.clone().with("scaling_type", "linear"), "missing attribute 'scaling_factor'"),
        (Attrs::new(), "missing attribute 'head_dim'"),
    ] {
        let e = infer("rope", &rope_in, &attrs).unwrap_err();
        assert!(e.message().contains(msg), "{attrs}: {e}");
    }
}

#[test]
fn creating_without_cuda_is_a_clear_error() {
    if crate::driver::driver_present() {
        eprintln!("skipped: a CUDA driver is present, so the no-CUDA error path cannot be exercised");
        return;
    }
    let reg = Registry::new(Artifacts::embedded()).unwrap();
    let d = reg.decls().into_iter().find(|d| d.name.as_str() == "add").unwrap();
    let x = [TensorMeta::of(DType::F32, &[4]), TensorMeta::of(DType::F32, &[4])];
    let e = (d.create)(x.as_slice().into(), &Attrs::new()).into_result().err().unwrap();
    assert!(e.message().contains("CUDA is not available"), "{e}");
}

#[test]
fn rope_style_picks_its_compiled_entry() {
    // kernels.toml's rope_interleaved `extends` rope: compile.py expands it into a full entry
    // with INTERLEAVED = 1; the neox entry keeps INTERLEAVED = 0 and every example.
    let reg = Registry::new(Artifacts::embedded()).unwrap();
    let rope = reg.ops.iter().find(|o| o.name == "rope").unwrap();
    let names: Vec<&str> = rope.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["rope_interleaved", "rope"]);
    let flag = |name: &str| {
        let e = rope.entries.iter().find(|e| e.name == name).unwrap();
        e.constexprs.iter().find(|(k, _)| k == "INTERLEAVED").map(|(_, v)| v.clone())
    };
    assert_eq!(flag("rope_interleaved"), Some(Value::Int(1)));
    assert_eq!(flag("rope"), Some(Value::Int(0)));
    let x =
        [TensorMeta::new(DType::F16, [Dim::sym("T"), Dim::from(256)]), TensorMeta::new(DType::I32, [Dim::sym("T")])];
    let pick = |style: &str| {
        let attrs = Attrs::new().with("head_dim", 128usize).with("style", style);
        crate::rules::infer("rope", &rope.entries, &x, &attrs).map(|(e, _)| e.name.clone())
    };
    assert_eq!(pick("interleaved").unwrap(), "rope_interleaved");
    assert_eq!(pick("neox").unwrap(), "rope");
    // An invalid style fails on the general check, before the entry's own style check.
    let e = pick("gptj").unwrap_err();
    assert!(e.message().contains("style must be \"neox\" or \"interleaved\""), "{e}");
}
