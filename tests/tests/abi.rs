//! Plugin ABI tests: a plugin built against another ABI version (a future one, ABI 1 or 2) is
//! refused with a clear error while the others load; a panicking kernel is an error, not a
//! crash; a kernel cannot write an input it did not declare in place, nor take its workspace
//! twice; priority and pinning pick the right provider; a missing op names what is registered.

use rtllm::host_pool::HostPool;
use rtllm::reference::HostTensor;
use rtllm::registry::{run_on_host, LoadErrorKind, OpRequest, Registry, ResolveError};
use rtllm_plugin_api::{Attrs, DType, DeviceKind};
use rtllm_tests::{
    dylib_file_name, fixture_dylib, plugin_dir, registry, BUILTIN_PLUGINS, FIXTURE_ABI_MISMATCH, FIXTURE_ABI_V1,
    FIXTURE_ABI_V2, FIXTURE_FAULTY,
};

/// The built-ins plus the faulty fixture.
fn with_faulty() -> Registry {
    let mut paths = rtllm_tests::builtin_plugin_files();
    paths.push(fixture_dylib(FIXTURE_FAULTY));
    let r = Registry::load_paths(paths);
    assert!(r.load_errors().is_empty(), "{:?}", r.load_errors());
    r
}

fn vec_tensor(values: &[f32]) -> HostTensor {
    HostTensor::from_f32(DType::F32, &[values.len()], values).unwrap()
}

#[test]
fn abi_mismatch_is_reported_and_the_real_plugins_still_load() {
    let dir = plugin_dir();
    let bad = fixture_dylib(FIXTURE_ABI_MISMATCH);
    let r = Registry::load_paths([dir.clone(), bad.clone()]);

    let errors: Vec<_> = r.load_errors().iter().filter(|e| e.path.file_name() == bad.file_name()).collect();
    assert_eq!(errors.len(), 1, "expected one load error for {}, got {:#?}", bad.display(), r.load_errors());
    let msg = errors[0].to_string();
    assert!(msg.contains(&dylib_file_name(FIXTURE_ABI_MISMATCH)), "{msg}");
    assert!(msg.contains("9.0.0"), "the found version is missing: {msg}");
    assert!(msg.contains(rtllm_plugin_api::PLUGIN_ABI_VERSION), "the expected version is missing: {msg}");
    assert!(
        matches!(&errors[0].kind, LoadErrorKind::AbiVersion { expected, found }
            if expected == rtllm_plugin_api::PLUGIN_ABI_VERSION && found == "9.0.0"),
        "{:?}",
        errors[0].kind
    );

    // Every op of every built-in plugin is there, served from the files in that directory.
    let alone = registry();
    for (op, providers) in alone.ops() {
        for p in providers {
            let found = r.providers(op).iter().any(|q| q.plugin == p.plugin && q.path == p.path);
            assert!(found, "op {op} from {} missing next to the ABI-mismatch fixture", p.plugin);
        }
    }
    for name in BUILTIN_PLUGINS {
        assert!(r.plugins().iter().any(|p| p.name == *name), "plugin {name} not loaded");
    }
    assert!(!r.op_names().is_empty());
}

/// A plugin built for an older ABI (`fixture`, claiming `found`) is refused with an error naming
/// both versions and asking for a rebuild; the built-ins still load beside it.
fn old_abi_is_refused(fixture: &str, found: &str) {
    assert_eq!(rtllm_plugin_api::PLUGIN_ABI_VERSION, "0.3.0", "this test describes ABI 3");
    let old = fixture_dylib(fixture);
    let r = Registry::load_paths([plugin_dir(), old.clone()]);
    let errors: Vec<_> = r.load_errors().iter().filter(|e| e.path == old).collect();
    assert_eq!(errors.len(), 1, "{:#?}", r.load_errors());
    let msg = errors[0].to_string();
    assert!(msg.contains(found) && msg.contains("0.3.0") && msg.contains("rebuild"), "{msg}");
    assert!(
        matches!(&errors[0].kind, LoadErrorKind::AbiVersion { expected, found: f } if expected == "0.3.0" && f == found),
        "{:?}",
        errors[0].kind
    );
    for name in BUILTIN_PLUGINS {
        assert!(r.plugins().iter().any(|p| p.name == *name), "plugin {name} not loaded next to an ABI {found} plugin");
    }
}

#[test]
fn a_plugin_built_for_abi_1_is_refused_naming_both_versions() {
    old_abi_is_refused(FIXTURE_ABI_V1, "0.1.0");
}

#[test]
fn a_plugin_built_for_abi_2_is_refused_naming_both_versions() {
    old_abi_is_refused(FIXTURE_ABI_V2, "0.2.0");
}

#[test]
fn inputs_are_read_only_unless_the_op_declares_them_in_place() {
    let r = with_faulty();
    let pool = HostPool::global();
    let undeclared = r.resolve(&OpRequest::new("fixture_write_input", DeviceKind::Cpu, [DType::F32])).unwrap();
    assert!(undeclared.in_place().is_empty());
    let mut inputs = [vec_tensor(&[1.0, 2.0])];
    let err = run_on_host(undeclared, &mut inputs, &Attrs::new(), pool).unwrap_err();
    assert!(err.to_string().contains("read-only") && err.to_string().contains("fixture_write_input"), "{err}");
    assert_eq!(inputs[0].to_f32().unwrap(), vec![1.0, 2.0], "the input is untouched");

    let declared = r.resolve(&OpRequest::new("fixture_scale_in_place", DeviceKind::Cpu, [DType::F32])).unwrap();
    assert_eq!(declared.in_place(), vec![0]);
    run_on_host(declared, &mut inputs, &Attrs::new(), pool).unwrap();
    assert_eq!(inputs[0].to_f32().unwrap(), vec![2.0, 4.0], "a declared in-place input is written");

    // The built-in paged attention declares its KV caches (inputs 3 and 4), nothing else.
    let attn = registry().resolve(&OpRequest::new("paged_attention", DeviceKind::Cpu, [DType::F32])).unwrap();
    assert_eq!(attn.in_place(), vec![3, 4]);
}

#[test]
fn the_workspace_is_handed_out_once_per_launch() {
    let r = with_faulty();
    let p = r.resolve(&OpRequest::new("fixture_workspace_twice", DeviceKind::Cpu, [DType::F32])).unwrap();
    let err = run_on_host(p, &mut [vec_tensor(&[1.0])], &Attrs::new(), HostPool::global()).unwrap_err();
    assert!(err.to_string().contains("already taken"), "{err}");
}

#[test]
fn explicit_non_plugin_file_is_an_error_and_missing_paths_are_reported() {
    let dir = tempfile_dir();
    let junk = dir.join(dylib_file_name("not-a-plugin"));
    std::fs::write(&junk, b"definitely not an ELF file").unwrap();
    // Scanned from a directory: skipped quietly.
    let scanned = Registry::load_paths([&dir]);
    assert!(scanned.load_errors().is_empty(), "{:?}", scanned.load_errors());
    // Named explicitly: an error naming it.
    let named = Registry::load_paths([&junk, &dir.join("missing.so")]);
    let msgs: Vec<String> = named.load_errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("not an rtllm plugin") && m.contains("not_a_plugin")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("missing.so") && m.contains("no such file")), "{msgs:?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rtllm-abi-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_panicking_kernel_is_an_error_and_the_process_lives_on() {
    let r = with_faulty();
    let pool = HostPool::global();
    let p = r.resolve(&OpRequest::new("fixture_panic", DeviceKind::Cpu, [DType::F32])).unwrap();
    let err = run_on_host(p, &mut [vec_tensor(&[1.0, 2.0])], &Attrs::new(), pool).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("fixture_panic") && msg.contains("panicked"), "{msg}");
    assert!(msg.contains("fixture-faulty"), "the plugin is not named: {msg}");

    // Another op runs fine afterwards.
    let add = r.resolve(&OpRequest::new("add", DeviceKind::Cpu, [DType::F32])).unwrap();
    let out = run_on_host(add, &mut [vec_tensor(&[1.0, 2.0]), vec_tensor(&[10.0, 20.0])], &Attrs::new(), pool).unwrap();
    assert_eq!(out[0].to_f32().unwrap(), vec![11.0, 22.0]);
}

#[test]
fn priority_wins_and_pinning_overrides_it() {
    let r = with_faulty();
    let pool = HostPool::global();
    let req = OpRequest::new("add", DeviceKind::Cpu, [DType::F32]);
    let best = r.resolve(&req).unwrap();
    assert_eq!(best.plugin, "rtllm-elementwise");
    assert_eq!(r.providers("add").last().map(|p| p.plugin.as_str()), Some("fixture-faulty"));

    let pinned = r.resolve(&req.clone().pinned("fixture-faulty")).unwrap();
    assert_eq!(pinned.plugin, "fixture-faulty");
    assert_eq!(pinned.priority(), -100);
    let out =
        run_on_host(pinned, &mut [vec_tensor(&[1.0, -2.0]), vec_tensor(&[0.5, 4.0])], &Attrs::new(), pool).unwrap();
    assert_eq!(out[0].to_f32().unwrap(), vec![1001.5, 1002.0]);

    // The same pin from config.
    let mut pins = std::collections::HashMap::new();
    pins.insert("add".to_string(), "fixture-faulty".to_string());
    let r = r.with_pins(pins);
    assert_eq!(r.resolve(&req).unwrap().plugin, "fixture-faulty");

    // A pin to a plugin that does not provide the op is an error listing the providers.
    let err = r.resolve(&req.clone().pinned("rtllm-gemm")).unwrap_err();
    assert!(matches!(err, ResolveError::PinnedPluginMissing { .. }), "{err}");
    assert!(err.to_string().contains("rtllm-elementwise"), "{err}");
}

#[test]
fn missing_ops_and_unsupported_requests_say_what_is_registered() {
    let r = registry();
    let err = r.resolve(&OpRequest::new("embeding", DeviceKind::Cpu, [DType::F32])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no plugin provides op 'embeding'"), "{msg}");
    let ResolveError::UnknownOp { suggestions, .. } = &err else { panic!("{err}") };
    assert_eq!(suggestions.first().map(String::as_str), Some("embedding"), "{msg}");

    let err = r.resolve(&OpRequest::new("zzzzzzzzzzzzzz", DeviceKind::Cpu, [DType::F32])).unwrap_err();
    let ResolveError::UnknownOp { suggestions, .. } = &err else { panic!("{err}") };
    assert!(!suggestions.is_empty() && suggestions.iter().all(|s| r.op_names().contains(&s.as_str())), "{err}");

    // Registered name, unsupported device: the error lists the providers with devices/dtypes.
    let err = r.resolve(&OpRequest::new("matmul", DeviceKind::Cuda, [DType::F32])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ResolveError::NoMatch { .. }), "{msg}");
    assert!(msg.contains("rtllm-gemm") && msg.contains("cpu") && msg.contains("f32"), "{msg}");
    assert!(!r.has_op("matmul", DeviceKind::Cuda) && r.has_op("matmul", DeviceKind::Cpu));
}
