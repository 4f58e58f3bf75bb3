//! Every kernel source compiles with NVRTC for sm_90 (PTX; no GPU needed). Skips with a
//! reason when libnvrtc cannot be loaded (scripts/test.sh installs it from PyPI).

use crate::runtime::{compile, nvrtc_present, KernelSource};

/// Every .cu file in kernels/cuda.
fn all_sources() -> Vec<KernelSource> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/cuda");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("kernels/cuda exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "cu") {
            let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_string();
            let text = std::fs::read_to_string(&path).expect("readable source");
            out.push(KernelSource { name: Box::leak(name.into_boxed_str()), text: Box::leak(text.into_boxed_str()) });
        }
    }
    out.sort_by_key(|s| s.name);
    out
}

/// Whether NVRTC can run here (else the test says why it skips).
fn nvrtc_or_skip() -> bool {
    let present = nvrtc_present();
    if !present {
        eprintln!("skipped: libnvrtc is not loadable here (set LD_LIBRARY_PATH to a CUDA 13 NVRTC)");
    }
    present
}

#[test]
fn every_kernel_source_compiles_for_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let sources = all_sources();
    for s in &sources {
        let ptx = compile(s, "compute_90").unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&ptx);
        assert!(text.contains(".entry"), "{}: PTX with no kernel entry", s.name);
    }
    eprintln!("compiled {} kernel sources", sources.len());
}

#[test]
fn attention_entry_points_exist_for_every_cache_dtype() {
    if !nvrtc_or_skip() {
        return;
    }
    let sources = all_sources();
    let ptx = |name: &str| {
        let s = sources.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} missing"));
        String::from_utf8_lossy(&compile(s, "compute_90").unwrap_or_else(|e| panic!("{e}"))).into_owned()
    };
    let (prefill, decode) = (ptx("attention_prefill.cu"), ptx("attention_decode.cu"));
    for act in ["f32", "bf16", "f16"] {
        for cache in ["f32", "bf16", "f16", "f8"] {
            let entry = format!(".entry pa_prefill_{act}_{cache}(");
            assert!(prefill.contains(&entry), "{entry}");
            for gt in [1, 2, 4, 8] {
                let entry = format!(".entry pa_decode{gt}_{act}_{cache}(");
                assert!(decode.contains(&entry), "{entry}");
            }
        }
    }
}
