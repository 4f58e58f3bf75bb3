//! Test support shared by the CPU kernel plugins' unit tests (the attention plugin includes
//! this file by path): plugin-api's owned host tensors and launch harness (sequential and
//! threaded launches must give the same bits), test data, and a float comparison.

pub use rtllm_plugin_api::testing::{data as rand_f32, launch_both as run, HostBuf as Buf};

/// Asserts two float slices agree within `tol` (absolute, scaled by magnitude above 1).
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "element {i}: got {g}, want {w} (error {err} > {tol})");
    }
}
