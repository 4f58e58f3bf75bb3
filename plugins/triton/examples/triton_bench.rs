//! Bandwidth of the Triton providers vs the CUDA C providers on the same inputs (GPU only).
//!
//! Loads librtllm_triton.so and librtllm_cuda.so from `$RTLLM_PLUGIN_PATH` (or the first
//! argument), creates each op from both plugins, times `ITERS` launches of each with CUDA
//! events, reports GB/s (bytes each op must move / time) next to a device-to-device copy's
//! bandwidth measured in the same run, and the largest difference between the two providers'
//! outputs relative to the largest output magnitude.
//!
//!     RTLLM_PLUGIN_PATH=.gpu/plugins triton_bench

use abi_stable::library::lib_header_from_path;
use cudarc::driver::{result as drv, sys};
use half::{bf16, f16};
use rtllm_plugin_api::{Attrs, DType, DeviceKind, HostServices, KernelBox, LaunchEnv, OpDecl, PluginModRef};
use rtllm_plugin_api::{InputView, OutputView, TensorMeta};
use std::path::{Path, PathBuf};

type Res<T> = Result<T, String>;
const ITERS: usize = 50;

fn ops_of(dir: &Path, file: &str) -> Res<Vec<OpDecl>> {
    let path: PathBuf = dir.join(file);
    let header = lib_header_from_path(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let module = header.init_root_module::<PluginModRef>().map_err(|e| format!("{}: {e}", path.display()))?;
    module.ops()().into_result().map(|v| v.into_vec()).map_err(|e| e.to_string())
}

fn ck<T>(what: &str, r: Result<T, drv::DriverError>) -> Res<T> {
    r.map_err(|e| format!("{what}: {e:?}"))
}

/// A device buffer holding `meta` filled with small pseudo-random values.
fn upload(meta: &TensorMeta, seed: u64) -> Res<u64> {
    let n = meta.numel().ok_or("unknown numel")?;
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    };
    let bytes: Vec<u8> = match meta.dtype {
        DType::F32 => (0..n).flat_map(|_| next().to_le_bytes()).collect(),
        DType::BF16 => (0..n).flat_map(|_| bf16::from_f32(next()).to_le_bytes()).collect(),
        DType::F16 => (0..n).flat_map(|_| f16::from_f32(next()).to_le_bytes()).collect(),
        DType::I32 => (0..n as i32).flat_map(|i| (i % 4096).to_le_bytes()).collect(),
        d => return Err(format!("no fill for {d}")),
    };
    unsafe {
        let p = ck("cuMemAlloc", drv::malloc_sync(bytes.len().max(16)))?;
        ck("cuMemcpyHtoD", drv::memcpy_htod_sync(p, &bytes))?;
        Ok(p)
    }
}

fn download(meta: &TensorMeta, p: u64) -> Res<Vec<f32>> {
    let n = meta.numel().ok_or("unknown numel")?;
    let mut bytes = vec![0u8; meta.byte_size().ok_or("unknown size")?];
    unsafe { ck("cuMemcpyDtoH", drv::memcpy_dtoh_sync(&mut bytes, p))? };
    Ok(match meta.dtype {
        DType::F32 => bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::BF16 => bytes.chunks(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::F16 => bytes.chunks(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => vec![0.0; n],
    })
}

/// Device views of the buffers at `ptrs` (each at least its meta's bytes, all distinct, alive
/// while the views are used).
fn inputs(metas: &[TensorMeta], ptrs: &[u64]) -> Vec<InputView<'static>> {
    // SAFETY: see above; the bench keeps every buffer until after its launches synchronize.
    metas
        .iter()
        .zip(ptrs)
        .map(|(m, p)| unsafe { InputView::new(m.clone(), *p as *const u8, DeviceKind::Cuda) })
        .collect()
}

fn outputs(metas: &[TensorMeta], ptrs: &[u64]) -> Vec<OutputView<'static>> {
    // SAFETY: as in `inputs`.
    metas
        .iter()
        .zip(ptrs)
        .map(|(m, p)| unsafe { OutputView::new(m.clone(), *p as *mut u8, DeviceKind::Cuda) })
        .collect()
}

/// Milliseconds per launch of `k` over `ITERS` launches, and its outputs.
fn time(
    k: &KernelBox,
    env: &mut LaunchEnv<'_>,
    stream: sys::CUstream,
    mut ins: Vec<InputView<'_>>,
    mut outs: Vec<OutputView<'_>>,
) -> Res<f64> {
    let mut launch = || k.launch(env, &mut ins, &mut outs).map_err(|e| e.to_string());
    launch()?;
    unsafe {
        let (a, b) = (
            ck("event", drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT))?,
            ck("event", drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT))?,
        );
        ck("record", drv::event::record(a, stream))?;
        for _ in 0..ITERS {
            launch()?;
        }
        ck("record", drv::event::record(b, stream))?;
        ck("sync", drv::event::synchronize(b))?;
        Ok(ck("elapsed", drv::event::elapsed(a, b))? as f64 / ITERS as f64)
    }
}

struct Case {
    op: &'static str,
    label: &'static str,
    inputs: Vec<TensorMeta>,
    attrs: Attrs,
}

fn cases() -> Vec<Case> {
    let m = TensorMeta::of;
    let (b, f) = (DType::BF16, DType::F32);
    let rope = Attrs::new().with("head_dim", 128usize).with("theta", 500000.0);
    vec![
        Case {
            op: "rmsnorm",
            label: "bf16 [8192, 4096]",
            inputs: vec![m(b, &[8192, 4096]), m(b, &[4096])],
            attrs: Attrs::new(),
        },
        Case {
            op: "rmsnorm",
            label: "f32 [8192, 4096]",
            inputs: vec![m(f, &[8192, 4096]), m(f, &[4096])],
            attrs: Attrs::new(),
        },
        Case {
            op: "rmsnorm",
            label: "bf16 [1, 4096] (decode)",
            inputs: vec![m(b, &[1, 4096]), m(b, &[4096])],
            attrs: Attrs::new(),
        },
        Case {
            op: "fused_add_rmsnorm",
            label: "bf16 [8192, 4096]",
            inputs: vec![m(b, &[8192, 4096]), m(b, &[8192, 4096]), m(b, &[4096])],
            attrs: Attrs::new(),
        },
        Case {
            op: "silu_mul",
            label: "bf16 2x[4096, 14336]",
            inputs: vec![m(b, &[4096, 14336]), m(b, &[4096, 14336])],
            attrs: Attrs::new(),
        },
        Case {
            op: "silu_mul",
            label: "bf16 fused [4096, 28672]",
            inputs: vec![m(b, &[4096, 28672])],
            attrs: Attrs::new(),
        },
        Case {
            op: "rope",
            label: "bf16 [8192, 32x128]",
            inputs: vec![m(b, &[8192, 4096]), m(DType::I32, &[8192])],
            attrs: rope,
        },
        Case {
            op: "add",
            label: "bf16 [8192, 4096]",
            inputs: vec![m(b, &[8192, 4096]), m(b, &[8192, 4096])],
            attrs: Attrs::new(),
        },
        Case {
            op: "add",
            label: "f32 [8192, 4096]",
            inputs: vec![m(f, &[8192, 4096]), m(f, &[8192, 4096])],
            attrs: Attrs::new(),
        },
    ]
}

fn copy_bandwidth(stream: sys::CUstream) -> Res<f64> {
    let bytes = 1usize << 30;
    unsafe {
        let (src, dst) = (ck("alloc", drv::malloc_sync(bytes))?, ck("alloc", drv::malloc_sync(bytes))?);
        ck("memset", drv::memset_d8_sync(src, 1, bytes))?;
        let (a, b) = (
            ck("event", drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT))?,
            ck("event", drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT))?,
        );
        ck("copy", drv::memcpy_dtod_async(dst, src, bytes, stream))?;
        ck("record", drv::event::record(a, stream))?;
        for _ in 0..10 {
            ck("copy", drv::memcpy_dtod_async(dst, src, bytes, stream))?;
        }
        ck("record", drv::event::record(b, stream))?;
        ck("sync", drv::event::synchronize(b))?;
        let ms = ck("elapsed", drv::event::elapsed(a, b))? as f64 / 10.0;
        let _ = (drv::free_sync(src), drv::free_sync(dst));
        Ok(2.0 * bytes as f64 / (ms * 1e-3) / 1e9)
    }
}

fn run() -> Res<()> {
    let dir =
        std::env::args().nth(1).or_else(|| std::env::var("RTLLM_PLUGIN_PATH").ok()).ok_or("set RTLLM_PLUGIN_PATH")?;
    let dir = Path::new(&dir);
    let triton = ops_of(dir, "librtllm_triton.so")?;
    let cuda = ops_of(dir, "librtllm_cuda.so")?;
    unsafe {
        ck("cuInit", drv::init())?;
        let dev = ck("device", drv::device::get(0))?;
        let ctx = ck("ctx", drv::primary_ctx::retain(dev))?;
        ck("ctx", drv::ctx::set_current(ctx))?;
        let mut name = [0i8; 128];
        sys::cuDeviceGetName(name.as_mut_ptr(), 128, dev);
        println!("device: {}", std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy());
    }
    let stream = ck("stream", drv::stream::create(drv::stream::StreamKind::NonBlocking))?;
    // SAFETY: a CUDA stream of device 0 and no workspace.
    let mut env = unsafe {
        LaunchEnv::new(DeviceKind::Cuda, 0, stream as *mut _, std::ptr::null_mut(), 0, HostServices::sequential())
    };
    let copy = copy_bandwidth(stream)?;
    println!("device-to-device copy: {copy:.0} GB/s (read + write)\n");
    println!("| op | shape | bytes moved | Triton µs | Triton GB/s | % of copy | CUDA C µs | CUDA C GB/s | max diff |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in cases() {
        let find = |ops: &[OpDecl]| ops.iter().position(|d| d.name.as_str() == c.op);
        let (Some(ti), Some(ci)) = (find(&triton), find(&cuda)) else {
            println!("| {} | {} | op missing from a plugin |", c.op, c.label);
            continue;
        };
        let (t, cu) = (&triton[ti], &cuda[ci]);
        let outs = (t.infer)(c.inputs.as_slice().into(), &c.attrs).into_result().map_err(|e| e.to_string())?.into_vec();
        let in_ptrs: Vec<u64> =
            c.inputs.iter().enumerate().map(|(i, m)| upload(m, i as u64 + 1)).collect::<Res<_>>()?;
        let mut results = Vec::new();
        for decl in [t, cu] {
            let k = (decl.create)(c.inputs.as_slice().into(), &c.attrs).into_result().map_err(|e| e.to_string())?;
            let out_ptrs: Vec<u64> = outs.iter().map(|m| upload(m, 99)).collect::<Res<_>>()?;
            let ms = time(&k, &mut env, stream, inputs(&c.inputs, &in_ptrs), outputs(&outs, &out_ptrs))?;
            let data: Vec<Vec<f32>> = outs.iter().zip(&out_ptrs).map(|(m, p)| download(m, *p)).collect::<Res<_>>()?;
            for p in out_ptrs {
                let _ = unsafe { drv::free_sync(p) };
            }
            results.push((ms, data));
        }
        for p in in_ptrs {
            let _ = unsafe { drv::free_sync(p) };
        }
        let bytes: usize = c.inputs.iter().chain(&outs).filter_map(|m| m.byte_size()).sum();
        let gbs = |ms: f64| bytes as f64 / (ms * 1e-3) / 1e9;
        let (mut diff, mut scale) = (0f32, 0f32);
        for (a, b) in results[0].1.iter().flatten().zip(results[1].1.iter().flatten()) {
            diff = diff.max((a - b).abs());
            scale = scale.max(b.abs());
        }
        let (tm, cm) = (results[0].0, results[1].0);
        println!(
            "| {} | {} | {:.1} MB | {:.1} | {:.0} | {:.0}% | {:.1} | {:.0} | {:.1e} |",
            c.op,
            c.label,
            bytes as f64 / 1e6,
            tm * 1e3,
            gbs(tm),
            100.0 * gbs(tm) / copy,
            cm * 1e3,
            gbs(cm),
            diff / scale.max(1e-30)
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("triton_bench: {e}");
        std::process::exit(1);
    }
}
