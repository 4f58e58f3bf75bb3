//! Planning without a device: models/configs/llama.toml and the Rust Llama both write the plain
//! graph, and the fusion pass gives them the same kernels on the CPU and on CUDA (the CUDA
//! plugin's op declarations load without a GPU) — one per node: scope, op, provider plugin,
//! input and output metas, attributes. Tensor-parallel ranks fuse the same way, and
//! `rtllm build --explain` prints the plan.

use rtllm::engine::explain::{kernel_lines, KernelLine};
use rtllm::engine::{plan_graph, registered_definition, BuildConfig, Graph};
use rtllm::registry::Registry;
use rtllm::weights::dummy::{dummy_model, DummySpec};
use rtllm_models::toml::ModelDefinition;
use rtllm_models::Parallel;
use rtllm_plugin_api::{DType, DeviceKind};
use std::sync::OnceLock;

/// The built-in CPU plugins, the CUDA plugin and the collectives.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut files = rtllm_tests::builtin_plugin_files();
        files.push(rtllm_tests::dylib_path("rtllm-cuda"));
        files.push(rtllm_tests::dylib_path("rtllm-nccl"));
        let registry = rtllm_tests::registry_with(files);
        let errors: Vec<String> = registry.load_errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "plugins failed to load:\n{}", errors.join("\n"));
        registry
    })
}

/// What `--device` sets up (quantized weights and the KV cache in bf16 on a GPU).
fn build_config(device: DeviceKind) -> BuildConfig {
    let mut bc = BuildConfig::default();
    bc.selection.device = device;
    if device == DeviceKind::Cuda {
        bc.selection.weight_fallback_dtype = Some(DType::BF16);
        bc.kv_cache_dtype = DType::BF16;
    }
    bc
}

fn llama_toml() -> ModelDefinition {
    ModelDefinition::from_toml_file(&rtllm_tests::repo_root().join("models/configs/llama.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The planned graph of `spec` on `device` (rank `parallel`) with the Rust Llama or `toml`.
fn plan(spec: &DummySpec, device: DeviceKind, toml: Option<&ModelDefinition>, parallel: &Parallel) -> Graph {
    let loaded = dummy_model(spec).expect("dummy weights");
    let definition = match toml {
        Some(t) => t.clone(),
        None => registered_definition(&loaded.config).expect("llama is registered"),
    };
    plan_graph(&definition, &loaded.config, &loaded.weights, registry(), &build_config(device), parallel)
        .unwrap_or_else(|e| panic!("{} on {device}: {e}", spec.config))
}

fn count(lines: &[KernelLine], op: &str) -> usize {
    lines.iter().filter(|l| l.op == op).count()
}

#[test]
fn llama_toml_plans_the_rust_llamas_kernels_on_cpu_and_cuda() {
    let toml = llama_toml();
    for (config, dtype) in [("smollm2-135m", DType::F32), ("smollm2-135m", DType::BF16), ("llama-3.2-1b", DType::F32)] {
        let spec = DummySpec { dtype, ..DummySpec::new(config) };
        let layers = dummy_model(&spec).expect("dummy weights").config.num_hidden_layers;
        for device in [DeviceKind::Cpu, DeviceKind::Cuda] {
            let case = format!("{config} {dtype} on {device}");
            let rust = kernel_lines(&plan(&spec, device, None, &Parallel::single()));
            let from_toml = kernel_lines(&plan(&spec, device, Some(&toml), &Parallel::single()));
            assert_eq!(from_toml.len(), rust.len(), "{case}: node counts");
            for (i, (t, r)) in from_toml.iter().zip(&rust).enumerate() {
                assert_eq!(t, r, "{case}: node {i}");
            }
            assert_eq!(count(&rust, "fused_add_rmsnorm"), 2 * layers, "{case}");
            assert_eq!(count(&rust, "add"), 0, "{case}");
            if device == DeviceKind::Cuda {
                assert_eq!(count(&rust, "qkv_rope_matmul"), layers, "{case}");
                assert_eq!(count(&rust, "swiglu_matmul"), layers, "{case}");
                assert_eq!(count(&rust, "matmul"), 2 * layers + 1, "{case}: o, down and the head");
                assert_eq!(count(&rust, "rope") + count(&rust, "silu_mul"), 0, "{case}");
                assert!(rust.iter().all(|l| l.plugin == "rtllm-cuda"), "{case}");
            } else {
                assert_eq!(count(&rust, "rope"), 2 * layers, "{case}");
                assert_eq!(count(&rust, "matmul"), 7 * layers + 1, "{case}");
            }
        }
    }
}

#[test]
fn without_the_fused_projections_cuda_groups_the_matmuls() {
    let spec = DummySpec::new("smollm2-135m");
    let loaded = dummy_model(&spec).expect("dummy weights");
    let layers = loaded.config.num_hidden_layers;
    let mut bc = build_config(DeviceKind::Cuda);
    bc.selection.disabled_ops = vec!["qkv_rope_matmul".into(), "swiglu_matmul".into()];
    for definition in [registered_definition(&loaded.config).expect("llama"), llama_toml()] {
        let graph = plan_graph(&definition, &loaded.config, &loaded.weights, registry(), &bc, &Parallel::single())
            .expect("plans");
        let lines = kernel_lines(&graph);
        // Q/K/V in one grouped_matmul with the ropes separate; gate/up grouped before silu_mul.
        assert_eq!(count(&lines, "grouped_matmul"), 2 * layers);
        assert_eq!(count(&lines, "rope"), 2 * layers);
        assert_eq!(count(&lines, "silu_mul"), layers);
        let qkv = lines.iter().find(|l| l.op == "grouped_matmul").expect("a grouped matmul");
        assert_eq!(qkv.outputs, "f32[T, 576], f32[T, 192], f32[T, 192]");
    }
}

#[test]
fn tensor_parallel_ranks_fuse_their_shards() {
    let spec = DummySpec::new("llama-3.2-1b");
    let layers = dummy_model(&spec).expect("dummy weights").config.num_hidden_layers;
    let group = rtllm::parallel::tensor_parallel_ranks(4).expect("ranks");
    for parallel in &group {
        let graph = plan(&spec, DeviceKind::Cuda, None, parallel);
        let lines = kernel_lines(&graph);
        assert_eq!(count(&lines, "qkv_rope_matmul"), layers);
        assert_eq!(count(&lines, "swiglu_matmul"), layers);
        assert_eq!(count(&lines, "all_reduce"), 2 * layers);
        // 32 query heads and 8 KV heads of 64 over 4 ranks; gate/up rows 8192 / 4.
        let qkv = lines.iter().find(|l| l.op == "qkv_rope_matmul").expect("qkv");
        assert!(qkv.inputs.contains("f32[512, 2048], f32[128, 2048], f32[128, 2048]"), "{}", qkv.inputs);
        let swiglu = lines.iter().find(|l| l.op == "swiglu_matmul").expect("swiglu");
        assert_eq!(swiglu.outputs, "f32[T, 2048]");
        let shards = graph.weight_uses().iter().filter(|(n, _)| n.contains("#shard")).count();
        assert_eq!(shards, 7 * layers + 1, "q, k, v, o, gate, up, down per layer and the head");
    }
}

#[test]
fn build_explain_prints_the_cuda_plan_without_a_gpu() {
    let bin = rtllm_tests::rtllm_binary();
    let def = rtllm_tests::repo_root().join("models/configs/llama.toml");
    let args = ["build", "--explain", "--device", "cuda", "--dummy-weights", "smollm2-135m", "--model-def"];
    let out = std::process::Command::new(&bin)
        .args(args)
        .arg(&def)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rtllm build --explain failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("plan of dummy:smollm2-135m:f32:seed0 (llama) on cuda: 214 nodes"), "{text}");
    assert!(text.contains("   2  layer 0    qkv_rope_matmul    rtllm-cuda"), "{text}");
    assert!(text.contains("summary: 214 nodes, 272 weights"), "{text}");
    assert!(text.contains("     30  swiglu_matmul      rtllm-cuda"), "{text}");
}
