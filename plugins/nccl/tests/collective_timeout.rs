//! A rank that never arrives and a rank that drops out: the others get clear errors (never a
//! hang), and the group stays poisoned until released. Runs in its own process so the short
//! barrier timeout set through RTLLM_COLLECTIVE_TIMEOUT_MS touches no other test.

use rtllm_nccl::cpu::AllReduce;
use rtllm_nccl::rendezvous::TIMEOUT_ENV;
use rtllm_plugin_api::{testing, Attrs, DType, Kernel, Op, TensorMeta};
use std::time::{Duration, Instant};

const TIMEOUT_MS: u64 = 1500;

fn kernel(group: &str, rank: usize, world: usize) -> <AllReduce as Op>::Kernel {
    std::env::set_var(TIMEOUT_ENV, TIMEOUT_MS.to_string());
    let attrs = Attrs::new().with("group", group).with("rank", rank).with("world_size", world);
    AllReduce::create(&[TensorMeta::of(DType::F32, &[8])], &attrs).unwrap()
}

fn launch(k: &<AllReduce as Op>::Kernel) -> Result<Vec<f32>, String> {
    let x = vec![1.0f32; 8];
    let mut y = vec![0.0f32; 8];
    let xa = testing::input(TensorMeta::of(DType::F32, &[8]), &x);
    let ya = testing::output(TensorMeta::of(DType::F32, &[8]), &mut y);
    k.launch(&testing::threaded_env::<u8>(&mut []).context(), &mut [xa], &mut [ya]).map_err(|e| e.to_string())?;
    Ok(y)
}

#[test]
fn a_rank_that_never_arrives_times_out_and_poisons_the_group() {
    let (r0, r1, r2) = (kernel("timeout", 0, 3), kernel("timeout", 1, 3), kernel("timeout", 2, 3));
    let start = Instant::now();
    let errs: Vec<String> = std::thread::scope(|s| {
        let a = s.spawn(|| launch(&r0).unwrap_err());
        let b = s.spawn(|| launch(&r2).unwrap_err());
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(TIMEOUT_MS - 100), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(30), "took {waited:?}");
    // One rank times out naming the missing rank; the other either does too or sees the poison.
    assert!(errs.iter().any(|e| e.contains("timed out") && e.contains("ranks [1] of 3 never arrived")), "{errs:?}");
    assert!(errs.iter().all(|e| e.contains("group 'timeout'")), "{errs:?}");
    // The late rank fails at once instead of waiting.
    let late = Instant::now();
    let e = launch(&r1).unwrap_err();
    assert!(e.contains("is poisoned") && e.contains("waiting for ranks [1]"), "{e}");
    assert!(late.elapsed() < Duration::from_millis(TIMEOUT_MS / 2), "the poisoned group made rank 1 wait");
    // Once every kernel is dropped the group is released and its id can be used afresh.
    drop((r0, r1, r2));
    let (a, b) = (kernel("timeout", 0, 2), kernel("timeout", 1, 2));
    let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
        let ha = s.spawn(|| launch(&a).unwrap());
        let hb = s.spawn(|| launch(&b).unwrap());
        vec![ha.join().unwrap(), hb.join().unwrap()]
    });
    assert_eq!(sums, vec![vec![2.0; 8], vec![2.0; 8]]);
}

#[test]
fn a_rank_that_drops_its_kernels_fails_the_waiting_ranks_at_once() {
    let (r0, r1) = (kernel("dropout", 0, 2), kernel("dropout", 1, 2));
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            let start = Instant::now();
            (launch(&r0).unwrap_err(), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(r1);
        let (e, waited) = waiting.join().unwrap();
        assert!(e.contains("rank 1 dropped its last kernel of the group while ranks [0] wait"), "{e}");
        assert!(waited < Duration::from_millis(TIMEOUT_MS), "failed by timeout, not by the drop: {waited:?}");
    });
}
