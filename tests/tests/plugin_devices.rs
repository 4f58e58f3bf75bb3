//! Plugins that declare their devices (`export_plugin!(.., devices: ["cuda"])`, as rtllm-cuda
//! and rtllm-triton do) are not opened by a run on another device — a CPU run does not map the
//! GPU plugins' code — while a listing (no device asked for) and a CUDA run still load them,
//! and plugins that declare nothing load for every device.

use rtllm::registry::{DiscoveryOptions, Registry};
use rtllm_plugin_api::DeviceKind;
use rtllm_tests::{builtin_plugin_files, dylib_file_name, plugin_dir};

const GPU_ONLY: [&str; 2] = ["rtllm-cuda", "rtllm-triton"];

fn names(r: &Registry) -> Vec<String> {
    r.plugins().iter().map(|p| p.name.clone()).collect()
}

#[test]
fn cpu_runs_skip_gpu_only_plugins_and_listings_keep_them() {
    let dir = plugin_dir();
    let gpu: Vec<_> = GPU_ONLY.iter().map(|p| dir.join(dylib_file_name(p))).filter(|f| f.is_file()).collect();
    if gpu.len() < GPU_ONLY.len() {
        eprintln!("skipping: the GPU plugins are not built in {} (cargo build --workspace)", dir.display());
        return;
    }
    let files: Vec<_> = builtin_plugin_files().into_iter().chain(gpu).collect();
    let load = |device: Option<DeviceKind>| {
        let mut opts = DiscoveryOptions::only(files.clone());
        opts.device = device;
        let r = Registry::load(&opts);
        let errors: Vec<String> = r.load_errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{device:?}: {errors:?}");
        r
    };
    let (all, cpu, cuda) = (load(None), load(Some(DeviceKind::Cpu)), load(Some(DeviceKind::Cuda)));
    for p in GPU_ONLY {
        assert!(names(&all).iter().any(|n| n == p), "the listing loads {p}: {:?}", names(&all));
        assert!(names(&cuda).iter().any(|n| n == p), "a CUDA run loads {p}: {:?}", names(&cuda));
        assert!(!names(&cpu).iter().any(|n| n == p), "a CPU run does not open {p}: {:?}", names(&cpu));
    }
    // Undeclared plugins load everywhere, and the CPU run keeps every CPU provider.
    assert_eq!(names(&cpu).len() + GPU_ONLY.len(), names(&all).len());
    assert_eq!(names(&cuda), names(&all));
    for (op, providers) in all.ops() {
        let want: Vec<String> =
            providers.iter().filter(|p| p.device() == DeviceKind::Cpu).map(|p| p.describe()).collect();
        let got: Vec<String> =
            cpu.providers(op).iter().filter(|p| p.device() == DeviceKind::Cpu).map(|p| p.describe()).collect();
        assert_eq!(got, want, "CPU providers of {op}");
    }
}
