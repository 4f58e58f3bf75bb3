//! Tests of the CPU provider with threads as ranks: every op, dtype and world size 1..4 against
//! a serial computation (bit-exact: the same f32 sums in the same rank order), the pairing of
//! repeated calls across kernels of one group, and bad attributes. Timeouts and dropped ranks
//! are in tests/collective_timeout.rs (they set the timeout through the environment).

use crate::cpu::{AllGather, AllReduce, ReduceScatter};
use rtllm_plugin_api::shapes::collective::{Collective, Split};
use rtllm_plugin_api::{declare, testing, Attrs, DType, InputView, KernelBox, OpDecl, OutputView, TensorMeta};

fn decl(kind: Collective) -> OpDecl {
    match kind {
        Collective::AllReduce => declare::<AllReduce>(),
        Collective::AllGather => declare::<AllGather>(),
        Collective::ReduceScatter => declare::<ReduceScatter>(),
    }
}

fn attrs(group: &str, rank: usize, world: usize, axis: i64) -> Attrs {
    Attrs::new().with("group", group).with("rank", rank).with("world_size", world).with("axis", axis)
}

/// Rounds `v` to `dtype` and back.
fn round(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        DType::F16 => half::f16::from_f32(v).to_f32(),
        _ => v,
    }
}

fn to_bytes(dtype: DType, v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| match dtype {
            DType::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
            DType::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
            _ => x.to_le_bytes().to_vec(),
        })
        .collect()
}

fn from_bytes(dtype: DType, b: &[u8]) -> Vec<f32> {
    match dtype {
        DType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

/// x of `rank` in call `call`, already rounded to `dtype`.
fn input(dtype: DType, numel: usize, rank: usize, call: usize) -> Vec<f32> {
    testing::data(numel, (call * 131 + rank) as u64 + 1).into_iter().map(|v| round(dtype, v * 4.0)).collect()
}

/// The serial result of `kind` for rank `rank` given every rank's x.
fn serial(kind: Collective, dtype: DType, xs: &[Vec<f32>], split: Split, rank: usize) -> Vec<f32> {
    let w = xs.len();
    let sum = |idx: usize| {
        let mut acc = xs[0][idx];
        for x in &xs[1..] {
            acc += x[idx];
        }
        round(dtype, acc)
    };
    match kind {
        Collective::AllReduce => (0..xs[0].len()).map(sum).collect(),
        Collective::AllGather => {
            let l = split.row();
            (0..split.outer).flat_map(|o| (0..w).flat_map(move |s| xs[s][o * l..(o + 1) * l].to_vec())).collect()
        }
        Collective::ReduceScatter => {
            let c = split.row() / w;
            (0..split.outer).flat_map(|o| (0..c).map(move |j| sum(o * w * c + rank * c + j))).collect()
        }
    }
}

/// One rank's kernel and launch: returns its output.
fn launch(kernel: &KernelBox, dtype: DType, shape: &[usize], out_shape: &[usize], x: &[f32]) -> Vec<f32> {
    let xb = to_bytes(dtype, x);
    let mut yb = vec![0u8; out_shape.iter().product::<usize>() * dtype.block_bytes()];
    let xa = InputView::from_bytes(TensorMeta::of(dtype, shape), &xb).unwrap();
    let ya = OutputView::from_bytes(TensorMeta::of(dtype, out_shape), &mut yb).unwrap();
    kernel.launch(&mut testing::threaded_env::<u8>(&mut []), &mut [xa], &mut [ya]).unwrap();
    from_bytes(dtype, &yb)
}

fn out_shape(kind: Collective, shape: &[usize], axis: usize, world: usize) -> Vec<usize> {
    let mut out = shape.to_vec();
    match kind {
        Collective::AllReduce => {}
        Collective::AllGather => out[axis] *= world,
        Collective::ReduceScatter => out[axis] /= world,
    }
    out
}

/// Runs one call of `kind` on `world` threads and checks every rank against the serial result.
fn check_case(kind: Collective, dtype: DType, world: usize, shape: &[usize], axis: i64) {
    let group = format!("test-{}-{dtype}-{world}-{shape:?}-{axis}", kind.name());
    let a = if axis < 0 { (axis + shape.len() as i64) as usize } else { axis as usize };
    let split = Split::of(shape, a).unwrap();
    let numel = split.numel().unwrap();
    let xs: Vec<Vec<f32>> = (0..world).map(|r| input(dtype, numel, r, 0)).collect();
    let want_shape = out_shape(kind, shape, a, world);
    let outs: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let (group, xs, want_shape) = (&group, &xs, &want_shape);
                s.spawn(move || {
                    let d = decl(kind);
                    let metas = [TensorMeta::of(dtype, shape)];
                    let at = attrs(group, rank, world, axis);
                    let inferred = (d.infer)(metas.as_slice().into(), &at).unwrap();
                    assert_eq!(inferred[0], TensorMeta::of(dtype, want_shape));
                    let kernel = (d.create)(metas.as_slice().into(), &at).unwrap();
                    launch(&kernel, dtype, shape, want_shape, &xs[rank])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, out) in outs.iter().enumerate() {
        let want = serial(kind, dtype, &xs, split, rank);
        let same = out.len() == want.len() && out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{} {dtype} world {world} shape {shape:?} axis {axis}: rank {rank} differs", kind.name());
    }
    if kind == Collective::AllReduce {
        assert!(outs.iter().all(|o| o == &outs[0]), "every rank gets the same sum");
    }
}

#[test]
fn every_op_dtype_and_world_size_matches_the_serial_result() {
    for kind in Collective::ALL {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for world in 1..=4 {
                check_case(kind, dtype, world, &[12, 5], 0);
                check_case(kind, dtype, world, &[3, 12, 2], 1);
                check_case(kind, dtype, world, &[2, 12], -1);
                check_case(kind, dtype, world, &[12], 0);
            }
        }
    }
}

#[test]
fn large_tensors_split_across_the_pool() {
    check_case(Collective::AllReduce, DType::BF16, 3, &[96, 1536], 0);
    check_case(Collective::ReduceScatter, DType::F32, 4, &[48, 2048], 1);
    check_case(Collective::AllGather, DType::F16, 2, &[40, 1000], -1);
}

#[test]
fn repeated_calls_pair_in_order_across_kernels_of_a_group() {
    let world = 3;
    let dtype = DType::F32;
    let (shape, gathered) = ([4usize, 6], [4usize, 18]);
    let split = Split::of(&shape, 0).unwrap();
    let calls = 24;
    std::thread::scope(|s| {
        for rank in 0..world {
            s.spawn(move || {
                let metas = [TensorMeta::of(dtype, &shape)];
                let at = attrs("test-ordering", rank, world, -1);
                // Two all_reduce kernels (two layers) and one all_gather kernel share the group.
                let layers = [
                    (decl(Collective::AllReduce).create)(metas.as_slice().into(), &at).unwrap(),
                    (decl(Collective::AllReduce).create)(metas.as_slice().into(), &at).unwrap(),
                ];
                let gather = (decl(Collective::AllGather).create)(metas.as_slice().into(), &at).unwrap();
                for call in 0..calls {
                    if (call + rank) % 4 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    let xs: Vec<Vec<f32>> = (0..world).map(|r| input(dtype, 24, r, call)).collect();
                    if call % 3 == 2 {
                        let got = launch(&gather, dtype, &shape, &gathered, &xs[rank]);
                        let split = Split::of(&shape, 1).unwrap();
                        assert_eq!(got, serial(Collective::AllGather, dtype, &xs, split, rank), "call {call}");
                    } else {
                        let got = launch(&layers[call % 2], dtype, &shape, &shape, &xs[rank]);
                        assert_eq!(got, serial(Collective::AllReduce, dtype, &xs, split, rank), "call {call}");
                    }
                }
            });
        }
    });
}

#[test]
fn bad_attributes_and_arguments_are_clear_errors() {
    let x = [TensorMeta::of(DType::BF16, &[6, 10])];
    let create = |kind: Collective, at: &Attrs| (decl(kind).create)(x.as_slice().into(), at).err().unwrap();
    let e = create(Collective::AllReduce, &attrs("test-bad", 2, 2, 0));
    assert!(e.message().contains("'rank' must be in 0..2"), "{e}");
    let e = create(Collective::ReduceScatter, &attrs("test-bad", 0, 4, 0));
    assert!(e.message().contains("dim 0 of x (6) is not divisible by world_size 4"), "{e}");
    let e = create(Collective::AllGather, &attrs("test-bad", 0, 2, -3));
    assert!(e.message().contains("'axis' must be in -2..2"), "{e}");

    // Kernels of one group must agree on its world size.
    let ok = (decl(Collective::AllReduce).create)(x.as_slice().into(), &attrs("test-bad-world", 0, 2, 0)).unwrap();
    let e = create(Collective::AllReduce, &attrs("test-bad-world", 1, 3, 0));
    assert!(e.message().contains("has world_size 2"), "{e}");
    drop(ok);

    // A launch with an output of the wrong shape is refused before any rendezvous.
    let k = (decl(Collective::AllGather).create)(x.as_slice().into(), &attrs("test-bad-launch", 0, 2, 1)).unwrap();
    let xb = vec![half::bf16::ZERO; 60];
    let mut yb = vec![half::bf16::ZERO; 60];
    let xa = testing::input(TensorMeta::of(DType::BF16, &[6, 10]), &xb);
    let ya = testing::output(TensorMeta::of(DType::BF16, &[6, 10]), &mut yb);
    let e = k.launch(&mut testing::threaded_env::<u8>(&mut []), &mut [xa], &mut [ya]).unwrap_err();
    assert!(e.message().contains("output has shape [6, 10], expected [6, 20]"), "{e}");
}
