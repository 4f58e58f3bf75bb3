//! Every built-in op provider against the naive reference on random inputs, over each
//! provider's examples (several shapes including odd sizes, every supported dtype).

use rtllm::host_pool::HostPool;
use rtllm::reference::{has_reference, BUILTIN_OPS};
use rtllm::registry::check::{check, CheckOptions, Outcome};
use rtllm_tests::{registry, BUILTIN_PLUGINS};

#[test]
fn every_builtin_op_has_a_reference() {
    let r = registry();
    let missing: Vec<&str> = r.op_names().into_iter().filter(|op| !has_reference(op)).collect();
    assert!(missing.is_empty(), "built-in ops without a built-in reference: {missing:?}");
    let unprovided: Vec<&&str> = BUILTIN_OPS.iter().filter(|op| r.providers(op).is_empty()).collect();
    assert!(unprovided.is_empty(), "reference ops no built-in plugin provides: {unprovided:?}");
}

#[test]
fn every_builtin_provider_matches_the_reference() {
    let r = registry();
    let opts = CheckOptions {
        op: None,
        plugins: BUILTIN_PLUGINS.iter().map(|s| s.to_string()).collect(),
        seed: Some(0x5eed),
        device: None,
    };
    let report = check(r, &opts, HostPool::global());
    let text = rtllm::cli::plugins::render_check(&report);
    assert!(!report.kernels.is_empty(), "nothing was checked:\n{text}");
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{} checks failed:\n{text}", failures.len());
    for k in &report.kernels {
        assert!(
            matches!(k.outcome, Outcome::Compared { passed: true, .. }),
            "{} from {} was not compared with a reference: {:?}\n{text}",
            k.op,
            k.plugin,
            k.outcome
        );
    }
    // Every CPU provider of every op ran at least one example.
    for (op, providers) in r.ops() {
        for p in providers {
            let ran =
                report.kernels.iter().filter(|k| k.op == op && k.plugin == p.plugin && k.example.is_some()).count();
            assert!(ran > 0, "{op} from {} has no examples", p.plugin);
        }
    }
}

#[test]
fn a_wrong_kernel_fails_the_comparison() {
    use rtllm::reference::{run_reference, HostTensor};
    use rtllm::registry::check::compare::{diff, tolerance};
    use rtllm::registry::{run_on_host, OpRequest, Registry};
    use rtllm_plugin_api::{Attrs, DType, DeviceKind};

    let r = Registry::load_paths([rtllm_tests::fixture_dylib(rtllm_tests::FIXTURE_FAULTY)]);
    let wrong = r.resolve(&OpRequest::new("add", DeviceKind::Cpu, [DType::F32])).unwrap();
    let a = HostTensor::from_f32(DType::F32, &[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
    let b = HostTensor::from_f32(DType::F32, &[2, 3], &[0.5; 6]).unwrap();
    let mut inputs = vec![a, b];
    let got = run_on_host(wrong, &mut inputs.clone(), &Attrs::new(), HostPool::global()).unwrap();
    let want = run_reference("add", &mut inputs, &Attrs::new()).unwrap();
    let d = diff(&got[0].to_f64().unwrap(), &want[0].to_f64().unwrap());
    assert_eq!(d.max_abs, 1000.0);
    let metas: Vec<_> = inputs.iter().map(HostTensor::meta).collect();
    assert!(d.max_rel > tolerance("add", &metas, &[want[0].meta()]));
}
