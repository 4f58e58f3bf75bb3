//! "Adding a kernel needs no Rust": `add` exists only as add_kernel in
//! kernels/triton/elementwise.py and an entry in kernels/triton/kernels.toml, yet the plugin's
//! exported op list (the same `collect_ops` the root module serves) has it, with the declared
//! shape inference. Runs on the CPU: declarations and inference need no CUDA.

use rtllm_plugin_api::{author::collect_ops, Attrs, DType, DeviceKind, Dim, TensorMeta};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn a_kernel_added_without_rust_is_registered_and_infers() {
    // No Rust source of the plugin names the op or its kernel.
    for entry in std::fs::read_dir(root().join("plugins/triton/src")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lib = path.file_name().is_some_and(|n| n != "tests.rs");
        assert!(!lib || !text.contains("add_kernel") && !text.contains("\"add\""), "{} names add", path.display());
    }
    let toml = std::fs::read_to_string(root().join("kernels/triton/kernels.toml")).unwrap();
    assert!(toml.contains("function = \"add_kernel\""));
    assert!(std::fs::read_to_string(root().join("kernels/triton/elementwise.py")).unwrap().contains("def add_kernel("));

    // Link the plugin crate (its op-set registration lives there).
    let _plugin: fn() -> _ = rtllm_triton::registry::manifest_ops;
    let ops = collect_ops().unwrap();
    let add = ops.iter().find(|d| d.name.as_str() == "add").expect("add is registered from the manifest");
    assert_eq!(add.device, DeviceKind::Cuda);
    assert!(add.priority < 0, "below the CUDA C plugin");
    assert_eq!(add.dtypes.as_slice(), &[DType::F32, DType::F16, DType::BF16]);

    let infer = |inputs: &[TensorMeta]| (add.infer)(inputs.into(), &Attrs::new()).into_result();
    let x = TensorMeta::new(DType::BF16, [Dim::sym("num_tokens"), Dim::from(2048)]);
    assert_eq!(infer(&[x.clone(), x.clone()]).unwrap().as_slice(), &[x.clone()]);
    let three = TensorMeta::of(DType::F16, &[3, 5, 129]);
    assert_eq!(infer(&[three.clone(), three.clone()]).unwrap().as_slice(), &[three]);
    let e = infer(&[x.clone(), TensorMeta::of(DType::BF16, &[2, 2048])]).unwrap_err();
    assert!(e.message().contains("a and b must have one shape"), "{e}");
    let e = infer(&[x.clone(), TensorMeta::new(DType::F32, x.dims.iter().cloned())]).unwrap_err();
    assert!(e.message().contains("b must be bf16"), "{e}");
    let e = infer(&[TensorMeta::of(DType::I32, &[4]), TensorMeta::of(DType::I32, &[4])]).unwrap_err();
    assert!(e.message().contains("a must be f32, bf16 or f16"), "{e}");
    let e = infer(&[x]).unwrap_err();
    assert!(e.message().contains("takes 2 inputs, got 1"), "{e}");
}

#[test]
fn every_kernels_toml_entry_is_in_the_committed_manifest() {
    let toml = std::fs::read_to_string(root().join("kernels/triton/kernels.toml")).unwrap();
    let manifest = std::fs::read_to_string(root().join("kernels/triton/artifacts/manifest.json")).unwrap();
    let names: Vec<&str> =
        toml.lines().filter_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"'))).collect();
    assert!(names.len() >= 5, "{names:?}");
    for n in names {
        assert!(
            manifest.contains(&format!("\"name\": \"{n}\"")),
            "kernel '{n}' is in kernels.toml but not in artifacts/manifest.json: rerun kernels/triton/compile.py"
        );
    }
}
