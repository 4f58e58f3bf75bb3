//! nccl_bench: the CUDA collectives of rtllm-nccl on every visible GPU, one thread (rank) per
//! GPU. First checks correctness against known values (all_reduce of bf16, all_gather and
//! reduce_scatter along axis 0 and along axis 1, which goes through the staging copies), then
//! measures all_reduce of bf16 from 1 KiB to 256 MiB and prints time, algorithm bandwidth and
//! bus bandwidth (algbw * 2(n-1)/n, as nccl-tests reports it).
//!
//! Usage: nccl_bench [--max-mib N] (default 256). Exit status 1 on a wrong result or error.

use cudarc::driver::{result as drv, sys};
use rtllm_nccl::cuda::{CudaAllGather, CudaAllReduce, CudaReduceScatter};
use rtllm_plugin_api::{
    declare, Attrs, DType, DeviceKind, HostServices, InputView, KernelBox, LaunchEnv, OpDecl, OutputView, TensorMeta,
};
use std::ffi::c_void;
use std::sync::{Arc, Barrier};

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err:?}")
}

/// A device buffer of the current context, freed on drop.
struct DevBuf(u64);

impl DevBuf {
    fn new(bytes: usize) -> Res<DevBuf> {
        // SAFETY: a context is current on this thread.
        unsafe { drv::malloc_sync(bytes.max(1)) }.map(DevBuf).map_err(e("cuMemAlloc"))
    }

    fn upload<T>(&self, v: &[T]) -> Res<()> {
        // SAFETY: the buffer was allocated at least this large by the caller.
        unsafe { drv::memcpy_htod_sync(self.0, v) }.map_err(e("cuMemcpyHtoD"))
    }

    fn download<T: Clone + Default>(&self, n: usize) -> Res<Vec<T>> {
        let mut v = vec![T::default(); n];
        // SAFETY: as in `upload`.
        unsafe { drv::memcpy_dtoh_sync(&mut v, self.0) }.map_err(e("cuMemcpyDtoH"))?;
        Ok(v)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`, freed once.
        let _ = unsafe { drv::free_sync(self.0) };
    }
}

/// Device views of an input and an output buffer.
///
/// # Safety
/// Both buffers must hold their metas' bytes, be distinct, and outlive the views' launches.
unsafe fn views(x: TensorMeta, xb: &DevBuf, y: TensorMeta, yb: &DevBuf) -> (InputView<'static>, OutputView<'static>) {
    // SAFETY: the caller's contract.
    unsafe {
        (InputView::new(x, xb.0 as *const u8, DeviceKind::Cuda), OutputView::new(y, yb.0 as *mut u8, DeviceKind::Cuda))
    }
}

struct Rank {
    rank: usize,
    world: usize,
    group: String,
    stream: sys::CUstream,
}

impl Rank {
    fn env(&self, ws: &DevBuf, ws_bytes: usize) -> LaunchEnv<'static> {
        // SAFETY: `ws` is a device buffer of at least `ws_bytes` that outlives the launches,
        // which run one at a time on this rank's stream.
        unsafe {
            LaunchEnv::new(
                DeviceKind::Cuda,
                self.rank as i32,
                self.stream as *mut c_void,
                ws.0 as *mut u8,
                ws_bytes,
                HostServices::sequential(),
            )
        }
    }

    fn create(&self, decl: &OpDecl, x: &TensorMeta, axis: i64) -> Res<KernelBox> {
        let attrs = Attrs::new()
            .with("group", self.group.as_str())
            .with("rank", self.rank)
            .with("world_size", self.world)
            .with("axis", axis);
        (decl.create)(std::slice::from_ref(x).into(), &attrs).into_result().map_err(|err| err.to_string())
    }

    /// Runs `decl` once on f32 `x` of `shape` and returns the output.
    fn run_f32(&self, decl: &OpDecl, shape: &[usize], axis: i64, x: &[f32]) -> Res<Vec<f32>> {
        let meta = TensorMeta::of(DType::F32, shape);
        let out_meta = (decl.infer)(std::slice::from_ref(&meta).into(), &self.attrs(axis))
            .into_result()
            .map_err(|err| err.to_string())?
            .remove(0);
        let n_out = out_meta.numel().unwrap_or(0);
        let kernel = self.create(decl, &meta, axis)?;
        let ws_bytes = kernel.workspace_bytes(std::slice::from_ref(&meta)).map_err(|err| err.to_string())?;
        let (xb, yb, ws) = (DevBuf::new(x.len() * 4)?, DevBuf::new(n_out * 4)?, DevBuf::new(ws_bytes)?);
        xb.upload(x)?;
        // SAFETY: device buffers of the metas' sizes, alive until after the synchronize below.
        let (xa, ya) = unsafe { views(meta, &xb, out_meta, &yb) };
        kernel.launch(&mut self.env(&ws, ws_bytes), &mut [xa], &mut [ya]).map_err(|err| err.to_string())?;
        // SAFETY: our stream.
        unsafe { drv::stream::synchronize(self.stream) }.map_err(e("cuStreamSynchronize"))?;
        yb.download(n_out)
    }

    fn attrs(&self, axis: i64) -> Attrs {
        Attrs::new()
            .with("group", self.group.as_str())
            .with("rank", self.rank)
            .with("world_size", self.world)
            .with("axis", axis)
    }

    /// Correctness on known values; every value is an exact small integer in f32 and bf16.
    fn check(&self) -> Res<()> {
        let (r, w) = (self.rank, self.world);
        let tri = (w * (w + 1) / 2) as f32;
        // all_reduce, bf16, 1 MiB: x_r[i] = (r+1) * (i%7 + 1) → (i%7 + 1) * w(w+1)/2.
        let n = 512 * 1024;
        let meta = TensorMeta::of(DType::BF16, &[n]);
        let kernel = self.create(&declare::<CudaAllReduce>(), &meta, 0)?;
        let x: Vec<half::bf16> = (0..n).map(|i| half::bf16::from_f32(((r + 1) * (i % 7 + 1)) as f32)).collect();
        let (xb, yb, ws) = (DevBuf::new(n * 2)?, DevBuf::new(n * 2)?, DevBuf::new(0)?);
        xb.upload(&x)?;
        // SAFETY: as in `run_f32`.
        let (xa, ya) = unsafe { views(meta.clone(), &xb, meta, &yb) };
        kernel.launch(&mut self.env(&ws, 0), &mut [xa], &mut [ya]).map_err(|err| err.to_string())?;
        // SAFETY: our stream.
        unsafe { drv::stream::synchronize(self.stream) }.map_err(e("cuStreamSynchronize"))?;
        let y: Vec<half::bf16> = yb.download(n)?;
        if let Some(i) = (0..n).find(|&i| y[i].to_f32() != (i % 7 + 1) as f32 * tri) {
            return Err(format!("all_reduce bf16: element {i} is {}, expected {}", y[i], (i % 7 + 1) as f32 * tri));
        }
        // all_gather along axis 0 ([3, 5] → [3w, 5]) and axis 1 ([4, 6] → [4, 6w]).
        let x: Vec<f32> = (0..15).map(|i| (r * 100 + i) as f32).collect();
        let y = self.run_f32(&declare::<CudaAllGather>(), &[3, 5], 0, &x)?;
        let want: Vec<f32> = (0..w).flat_map(|s| (0..15).map(move |i| (s * 100 + i) as f32)).collect();
        expect("all_gather axis 0", &y, &want)?;
        let x: Vec<f32> = (0..24).map(|i| (r * 100 + i) as f32).collect();
        let y = self.run_f32(&declare::<CudaAllGather>(), &[4, 6], 1, &x)?;
        let want: Vec<f32> =
            (0..4).flat_map(|o| (0..w).flat_map(move |s| (0..6).map(move |j| (s * 100 + o * 6 + j) as f32))).collect();
        expect("all_gather axis 1", &y, &want)?;
        // reduce_scatter along axis 0 ([2w, 3] → [2, 3]) and axis 1 ([4, 6w] → [4, 6]):
        // x_r = (r+1) * flat index, so slice r of the sum is index * w(w+1)/2.
        let x: Vec<f32> = (0..2 * w * 3).map(|i| ((r + 1) * i) as f32).collect();
        let y = self.run_f32(&declare::<CudaReduceScatter>(), &[2 * w, 3], 0, &x)?;
        let want: Vec<f32> = (0..6).map(|i| (r * 6 + i) as f32 * tri).collect();
        expect("reduce_scatter axis 0", &y, &want)?;
        let x: Vec<f32> = (0..4 * 6 * w).map(|i| ((r + 1) * i) as f32).collect();
        let y = self.run_f32(&declare::<CudaReduceScatter>(), &[4, 6 * w], 1, &x)?;
        let want: Vec<f32> = (0..4).flat_map(|o| (0..6).map(move |j| (o * 6 * w + r * 6 + j) as f32 * tri)).collect();
        expect("reduce_scatter axis 1", &y, &want)
    }

    /// Microseconds per all_reduce of `bytes` bytes of bf16, for each size.
    fn bench(&self, sizes: &[usize], barrier: &Barrier) -> Res<Vec<f64>> {
        let max = sizes.iter().copied().max().unwrap_or(0);
        let (xb, yb, ws) = (DevBuf::new(max)?, DevBuf::new(max)?, DevBuf::new(0)?);
        // SAFETY: the buffer holds `max` bytes.
        unsafe { drv::memset_d8_async(xb.0, 0, max, self.stream) }.map_err(e("cuMemsetD8Async"))?;
        let kernel = self.create(&declare::<CudaAllReduce>(), &TensorMeta::of(DType::BF16, &[max / 2]), 0)?;
        let mut env = self.env(&ws, 0);
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let (start, end) = (
            drv::event::create(flags).map_err(e("cuEventCreate"))?,
            drv::event::create(flags).map_err(e("cuEventCreate"))?,
        );
        let mut out = Vec::new();
        for &bytes in sizes {
            let meta = TensorMeta::of(DType::BF16, &[bytes / 2]);
            // SAFETY: both buffers hold at least `bytes` bytes.
            let (xa, ya) = unsafe { views(meta.clone(), &xb, meta, &yb) };
            let (mut xs, mut ys) = ([xa], [ya]);
            let iters = ((4usize << 30) / bytes).clamp(10, 500);
            let mut launch = || kernel.launch(&mut env, &mut xs, &mut ys).map_err(|err| err.to_string());
            for _ in 0..5 {
                launch()?;
            }
            // SAFETY: our stream and events.
            unsafe { drv::stream::synchronize(self.stream) }.map_err(e("cuStreamSynchronize"))?;
            barrier.wait();
            unsafe { drv::event::record(start, self.stream) }.map_err(e("cuEventRecord"))?;
            for _ in 0..iters {
                launch()?;
            }
            unsafe { drv::event::record(end, self.stream) }.map_err(e("cuEventRecord"))?;
            unsafe { drv::event::synchronize(end) }.map_err(e("cuEventSynchronize"))?;
            let ms = unsafe { drv::event::elapsed(start, end) }.map_err(e("cuEventElapsedTime"))?;
            out.push(ms as f64 * 1000.0 / iters as f64);
        }
        // SAFETY: created above, no work pending.
        unsafe {
            let _ = drv::event::destroy(start);
            let _ = drv::event::destroy(end);
        }
        Ok(out)
    }
}

fn expect(what: &str, got: &[f32], want: &[f32]) -> Res<()> {
    if got == want {
        return Ok(());
    }
    Err(format!("{what}: got {got:?}, expected {want:?}"))
}

fn run_rank(rank: usize, world: usize, sizes: &[usize], barrier: &Barrier) -> Res<Vec<f64>> {
    let dev = drv::device::get(rank as i32).map_err(e("cuDeviceGet"))?;
    // SAFETY: a device from cuDeviceGet; the primary context stays retained for the process.
    unsafe {
        let ctx = drv::primary_ctx::retain(dev).map_err(e("cuDevicePrimaryCtxRetain"))?;
        drv::ctx::set_current(ctx).map_err(e("cuCtxSetCurrent"))?;
    }
    let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(e("cuStreamCreate"))?;
    let me = Rank { rank, world, group: format!("nccl-bench-{}", std::process::id()), stream };
    me.check().map_err(|err| format!("correctness check failed: {err}"))?;
    barrier.wait();
    if rank == 0 {
        println!(
            "correctness: all_reduce (bf16), all_gather and reduce_scatter (axis 0 and 1, f32) on {world} GPU(s): ok"
        );
    }
    me.bench(sizes, barrier)
}

fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

fn main() -> std::process::ExitCode {
    // NVLink multicast stays off on shared machines.
    std::env::set_var("NCCL_NVLS_ENABLE", "0");
    let mut max_mib = 256usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, v] = args.as_slice() {
        match (flag.as_str(), v.parse::<usize>()) {
            ("--max-mib", Ok(m)) if m >= 1 => max_mib = m,
            _ => {
                eprintln!("usage: nccl_bench [--max-mib N]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if !rtllm_nccl::driver::driver_present() {
        eprintln!("nccl_bench: no CUDA driver on this machine");
        return std::process::ExitCode::from(2);
    }
    let world = match drv::device::get_count() {
        Ok(n) if n >= 1 => n as usize,
        other => {
            eprintln!("nccl_bench: no visible GPU ({other:?})");
            return std::process::ExitCode::from(2);
        }
    };
    match rtllm_nccl::nccl_lib::nccl() {
        Ok(lib) => println!("NCCL {} from {}", lib.version().map_or("?".into(), |v| v.to_string()), lib.path),
        Err(err) if world > 1 => {
            eprintln!("nccl_bench: {err}");
            return std::process::ExitCode::from(1);
        }
        Err(_) => println!("NCCL not loaded (one GPU: all_reduce is a copy)"),
    }
    let sizes: Vec<usize> = (10..=28).map(|p| 1usize << p).filter(|&b| b <= max_mib << 20).collect();
    let barrier = Arc::new(Barrier::new(world));
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let (sizes, barrier) = (sizes.clone(), barrier.clone());
            std::thread::spawn(move || {
                run_rank(rank, world, &sizes, &barrier).unwrap_or_else(|err| {
                    // The other ranks would wait for this one forever: end the process.
                    eprintln!("nccl_bench: rank {rank}: {err}");
                    std::process::exit(1)
                })
            })
        })
        .collect();
    let mut per_rank = Vec::new();
    for h in handles {
        match h.join() {
            Ok(t) => per_rank.push(t),
            Err(_) => return std::process::ExitCode::from(1),
        }
    }
    println!("\nall_reduce, bf16, {world} GPU(s), one thread each (time: slowest rank)");
    println!("{:>10} {:>12} {:>12} {:>14} {:>14}", "size", "elements", "time (us)", "algbw (GB/s)", "busbw (GB/s)");
    for (i, &bytes) in sizes.iter().enumerate() {
        let us = per_rank.iter().map(|t| t[i]).fold(0.0, f64::max);
        let algbw = bytes as f64 / (us * 1e3);
        let busbw = algbw * 2.0 * (world as f64 - 1.0) / world as f64;
        println!("{:>10} {:>12} {:>12.2} {:>14.2} {:>14.2}", human(bytes), bytes / 2, us, algbw, busbw);
    }
    std::process::ExitCode::SUCCESS
}
