//! Creating the norm, elementwise and matmul CUDA kernels on a machine without CUDA is a clear
//! error that says so (never a panic), and every op of these families is registered with
//! examples in f32, bf16 and f16.

use crate::{argmax, elementwise, embedding, matmul, norm, rope, runtime};
use rtllm_plugin_api::{DType, DeviceKind, Op, OpExample, PluginError};

/// Creates `O` for its first example of each dtype, returning the errors.
fn create_all<O: Op>() -> Vec<PluginError> {
    O::examples().iter().filter_map(|e: &OpExample| O::create(&e.inputs, &e.attrs).err()).collect()
}

#[test]
fn creating_without_cuda_says_cuda_is_unavailable() {
    if runtime::driver_present() {
        eprintln!("skipped: a CUDA driver is present, so the no-driver error path cannot be exercised");
        return;
    }
    let errors = [
        create_all::<norm::RmsNorm>(),
        create_all::<norm::FusedAddRmsNorm>(),
        create_all::<elementwise::Add>(),
        create_all::<elementwise::SiluMul>(),
        create_all::<embedding::Embedding>(),
        create_all::<embedding::GatherRows>(),
        create_all::<argmax::Argmax>(),
        create_all::<rope::Rope>(),
        create_all::<matmul::Matmul>(),
    ];
    for errs in errors {
        assert!(!errs.is_empty());
        for e in errs {
            assert!(e.message().contains("CUDA is not available"), "{e}");
        }
    }
}

#[test]
fn ops_are_registered_for_cuda_with_examples_in_every_float_dtype() {
    let ops = rtllm_plugin_api::author::collect_ops().unwrap();
    let mine =
        ["add", "argmax", "embedding", "fused_add_rmsnorm", "gather_rows", "matmul", "rmsnorm", "rope", "silu_mul"];
    for name in mine {
        let op = ops.iter().find(|o| o.name.as_str() == name).unwrap_or_else(|| panic!("{name} is registered"));
        assert_eq!(op.device, DeviceKind::Cuda, "{name}");
        let examples = (op.examples)();
        for d in [DType::F32, DType::BF16, DType::F16] {
            assert!(examples.iter().any(|e| e.inputs.iter().any(|m| m.dtype == d)), "{name} has a {d} example");
            assert!(op.dtypes.contains(&d), "{name} declares {d}");
        }
        for e in examples.iter() {
            (op.infer)(e.inputs.as_slice().into(), &e.attrs)
                .into_result()
                .unwrap_or_else(|err| panic!("{name}: {err}"));
        }
    }
}
