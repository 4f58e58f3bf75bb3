//! Bandwidth micro-benchmark of the decode GEMV (plugins/cuda/src/gemv.rs) on Llama-3.2-1B
//! shapes in bf16, against cuBLASLt on the same shapes and the device-to-device copy bandwidth
//! measured in the same process (cuMemcpyDtoD of 1 GiB; bytes read + written over time).
//! Each row: ~200 launches between two CUDA events, cycling over enough weight copies (>= 256
//! MiB in all) that L2 (50 MiB on H100) cannot serve them; then one GEMV and one cuBLASLt
//! result on the same inputs are compared. Run on a GPU machine:
//!   cargo build --release -p rtllm-cuda --example gemv_bench && target/release/examples/gemv_bench

use cudarc::driver::{result as drv, sys};
use rtllm_cuda::blaslt::{self, Operands, PlanKey, WORKSPACE_BYTES};
use rtllm_cuda::gemv::{preferred, split, Epilogue, Gemv, Problem, Segment};
use rtllm_cuda::runtime::{self, Dims, KernelArgs, KernelSource};
use rtllm_plugin_api::DType;
use std::ffi::c_void;

type Res<T> = Result<T, String>;

/// Uniform bf16 fill in [lo, hi) (a hash of seed and index), only for this benchmark's inputs.
static FILL: KernelSource = KernelSource {
    name: "gemv_bench_fill.cu",
    text: r#"
extern "C" __global__ void bench_fill_bf16(bf16* out, u64 n, u64 seed, float lo, float hi) {
  pdl_enter();  // launched like every plugin kernel (programmatic dependent launch)
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
    u64 h = (seed ^ (i * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    out[i] = from_float<bf16>(lo + (hi - lo) * (float)(h >> 40) * (1.0f / 16777216.0f));
  }
}
"#,
};
const ITERS: usize = 200;
const ROTATE_BYTES: usize = 256 << 20;

fn e(what: &str) -> impl Fn(drv::DriverError) -> String + '_ {
    move |err| format!("{what}: {err:?}")
}

/// Device buffer freed on drop.
struct Buf(u64);
impl Buf {
    fn new(bytes: usize) -> Res<Buf> {
        // SAFETY: allocates device memory in the current context.
        unsafe { drv::malloc_sync(bytes) }.map(Buf).map_err(e("cuMemAlloc"))
    }
}
impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated by `Buf::new`, freed once.
        let _ = unsafe { drv::free_sync(self.0) };
    }
}

struct Timer {
    start: sys::CUevent,
    stop: sys::CUevent,
    stream: sys::CUstream,
}

impl Timer {
    /// Milliseconds of the work `f` enqueues on the stream.
    fn time(&self, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        // SAFETY: live events and stream of the current context.
        unsafe { drv::event::record(self.start, self.stream) }.map_err(e("cuEventRecord"))?;
        f()?;
        unsafe {
            drv::event::record(self.stop, self.stream).map_err(e("cuEventRecord"))?;
            drv::event::synchronize(self.stop).map_err(e("cuEventSynchronize"))?;
            drv::event::elapsed(self.start, self.stop).map(|ms| ms as f64).map_err(e("cuEventElapsedTime"))
        }
    }
}

/// Milliseconds of one replay of a CUDA graph holding the work `f` enqueues (captured once,
/// replayed once to warm up, then timed).
fn time_graph(t: &Timer, f: impl FnMut() -> Res<()>) -> Res<f64> {
    let mut f = f;
    let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    // SAFETY: a live stream; capture ends below whatever `f` returns.
    unsafe { drv::stream::begin_capture(t.stream, mode) }.map_err(e("cuStreamBeginCapture"))?;
    let captured = f();
    let graph = unsafe { drv::stream::end_capture(t.stream) }.map_err(e("cuStreamEndCapture"))?;
    captured?;
    // SAFETY: the graph just captured; destroyed once after use.
    let exec = unsafe { drv::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
    let exec = match exec {
        Ok(x) => x,
        Err(err) => {
            let _ = unsafe { drv::graph::destroy(graph) };
            return Err(format!("cuGraphInstantiate: {err:?}"));
        }
    };
    let run = || unsafe { drv::graph::launch(exec, t.stream) }.map_err(e("cuGraphLaunch"));
    let ms = t.time(run).and_then(|_| t.time(run));
    unsafe {
        let _ = drv::graph::exec_destroy(exec);
        let _ = drv::graph::destroy(graph);
    }
    ms
}

fn fill(stream: sys::CUstream, ptr: u64, n: usize, seed: u64, lo: f32, hi: f32) -> Res<()> {
    let f = runtime::function(&FILL, "bench_fill_bf16").map_err(|e| e.to_string())?;
    let args = KernelArgs::new().u64(ptr).u64(n as u64).u64(seed).f32(lo).f32(hi);
    // SAFETY: `ptr` holds n bf16 values.
    unsafe { runtime::launch(f, Dims::linear(132 * 8, 256), stream as *mut c_void, &args) }.map_err(|e| e.to_string())
}

fn to_host_bf16(ptr: u64, n: usize) -> Res<Vec<f32>> {
    let mut bits = vec![0u16; n];
    // SAFETY: `ptr` holds n bf16 values; the context is synchronized before the copy.
    unsafe { drv::memcpy_dtoh_sync(&mut bits, ptr) }.map_err(e("cuMemcpyDtoH"))?;
    Ok(bits.into_iter().map(|b| f32::from_bits((b as u32) << 16)).collect())
}

/// Device-to-device copy bandwidth in GB/s (read + write bytes over time).
fn copy_bandwidth(t: &Timer) -> Res<f64> {
    const BYTES: usize = 1 << 30;
    let (a, b) = (Buf::new(BYTES)?, Buf::new(BYTES)?);
    let copy = || unsafe { drv::memcpy_dtod_async(b.0, a.0, BYTES, t.stream) }.map_err(e("cuMemcpyDtoDAsync"));
    t.time(|| (0..2).try_for_each(|_| copy()))?;
    let reps = 10;
    let ms = t.time(|| (0..reps).try_for_each(|_| copy()))?;
    Ok(2.0 * BYTES as f64 * reps as f64 / (ms * 1e-3) / 1e9)
}

struct Shape {
    name: &'static str,
    k: usize,
    segs: &'static [usize],
}

const SHAPES: &[Shape] = &[
    Shape { name: "q/o proj", k: 2048, segs: &[2048] },
    Shape { name: "k/v proj", k: 2048, segs: &[512] },
    Shape { name: "qkv (grouped)", k: 2048, segs: &[2048, 512, 512] },
    Shape { name: "gate+up (grouped)", k: 2048, segs: &[8192, 8192] },
    Shape { name: "lm head", k: 2048, segs: &[128256] },
    Shape { name: "down proj", k: 8192, segs: &[2048] },
];

fn main() {
    if let Err(msg) = run() {
        eprintln!("gemv_bench: {msg}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    runtime::current_context().map_err(|e| e.to_string())?;
    let dev = runtime::current_device().map_err(|e| e.to_string())?;
    let name = drv::device::get_name(dev).map_err(e("cuDeviceGetName"))?;
    let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(e("cuStreamCreate"))?;
    let ev = || drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).map_err(e("cuEventCreate"));
    let t = Timer { start: ev()?, stop: ev()?, stream };
    let copy_gbs = copy_bandwidth(&t)?;
    println!("device: {name}");
    println!("device-to-device copy bandwidth: {copy_gbs:.0} GB/s (cuMemcpyDtoD 1 GiB, read + write)");
    let gemv = Gemv::new("gemv_bench", DType::BF16).map_err(|e| e.to_string())?;
    let handle = blaslt::handle().map_err(|e| e.to_string())?;
    let ws = Buf::new(WORKSPACE_BYTES)?;
    let context = runtime::current_context().map_err(|e| e.to_string())? as usize;
    let sms = runtime::device_attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| e.to_string())? as usize;
    println!(
        "{:<18} {:>5} {:>6} {:>2} {:>7} {:>9} {:>8} {:>6} {:>6} {:>8} {:>7} {:>8} {:>8}  {}",
        "shape",
        "K",
        "N",
        "M",
        "MB",
        "stream us",
        "graph us",
        "GB/s",
        "%copy",
        "cuBLASLt",
        "speedup",
        "matmul",
        "max rel",
        "K split, graph us per launch"
    );
    println!("(graph us: GEMV per launch in a CUDA graph of {ITERS}; GB/s and %copy from it; cuBLASLt likewise)");
    for s in SHAPES {
        let total_n: usize = s.segs.iter().sum();
        let w_bytes = total_n * s.k * 2;
        let copies = ROTATE_BYTES.div_ceil(w_bytes).clamp(1, 64);
        let ws_bufs: Vec<Buf> = (0..copies).map(|_| Buf::new(w_bytes)).collect::<Res<_>>()?;
        for (i, b) in ws_bufs.iter().enumerate() {
            fill(stream, b.0, total_n * s.k, 17 + i as u64, -0.05, 0.05)?;
        }
        let x = Buf::new(8 * s.k * 2)?;
        fill(stream, x.0, 8 * s.k, 3, -1.0, 1.0)?;
        let (y, y_ref) = (Buf::new(8 * total_n * 2)?, Buf::new(8 * total_n * 2)?);
        let segs_of = |w: u64, y: u64, m: usize| {
            let (mut wo, mut yo) = (0u64, 0u64);
            s.segs
                .iter()
                .map(|&n| {
                    let seg = Segment { w: w + wo, y: y + yo, n };
                    wo += (n * s.k * 2) as u64;
                    yo += (m * n * 2) as u64;
                    seg
                })
                .collect::<Vec<_>>()
        };
        for m in [1usize, 2, 4, 8] {
            let ks = std::cell::Cell::new(None);
            let launch_gemv = |i: usize, yb: u64| -> Res<()> {
                let segs = segs_of(ws_bufs[i % copies].0, yb, m);
                let p = Problem { x: x.0, m, k: s.k, segs: &segs, bias: None, epilogue: Epilogue::Plain, fp8: None };
                // SAFETY: x [m, k], each W [n, k] and y [m, n] are live device bf16 buffers.
                unsafe { gemv.launch_with("gemv_bench", stream as *mut c_void, &p, ks.get()) }
                    .map_err(|e| e.to_string())
            };
            let align = [256u32; 4];
            let key = PlanKey { context, t: m, k: s.k, n: total_n, dtype: DType::BF16, fused_bias: None, align };
            let plan = blaslt::plan(key).map_err(|e| e.to_string())?;
            let launch_lt = |i: usize, yb: u64| -> Res<()> {
                let ops = Operands {
                    w: ws_bufs[i % copies].0,
                    x: x.0,
                    y: yb,
                    bias: None,
                    workspace: ws.0 as *mut u8,
                    workspace_bytes: WORKSPACE_BYTES,
                    stream: stream as *mut c_void,
                };
                let p = plan.lock().map_err(|_| "plan poisoned".to_string())?;
                // SAFETY: W [total_n, k], x [m, k], y [m, total_n] bf16 and a 32 MiB workspace.
                unsafe { p.run(handle, &ops) }.map_err(|e| e.to_string())
            };
            let per = |ms: f64| ms * 1e3 / ITERS as f64;
            // Back-to-back stream launches (host launch rate included), then CUDA-graph replays
            // of the same launches (GPU time, as the engine's captured decode steps run them).
            t.time(|| (0..10).try_for_each(|i| launch_gemv(i, y.0)))?;
            let stream_us = per(t.time(|| (0..ITERS).try_for_each(|i| launch_gemv(i, y.0)))?);
            let gemv_us = per(time_graph(&t, || (0..ITERS).try_for_each(|i| launch_gemv(i, y.0)))?);
            // The same launch with every K split, to check the heuristic's choice.
            let mut sweep = Vec::new();
            for forced in [1usize, 2, 4, 8] {
                ks.set(Some(forced));
                let us = per(time_graph(&t, || (0..ITERS).try_for_each(|i| launch_gemv(i, y.0)))?);
                sweep.push(format!("ks{forced}={us:.2}"));
            }
            ks.set(None);
            let chosen = split(m, total_n, s.k, DType::BF16, true, sms).k_slices;
            t.time(|| (0..10).try_for_each(|i| launch_lt(i, y_ref.0)))?;
            let lt_us = per(time_graph(&t, || (0..ITERS).try_for_each(|i| launch_lt(i, y_ref.0)))?);
            let path = if preferred(m, total_n, s.k) { "gemv" } else { "cublasLt" };
            // Same inputs through both: copy 0.
            t.time(|| launch_gemv(0, y.0).and_then(|_| launch_lt(0, y_ref.0)))?;
            let got = to_host_bf16(y.0, m * total_n)?;
            let want = to_host_bf16(y_ref.0, m * total_n)?;
            // The GEMV writes y_s [m, n_s] per segment; cuBLASLt one y [m, total_n].
            let mut max_diff = 0f32;
            let mut off = 0;
            let mut col = 0;
            for &n in s.segs {
                for r in 0..m {
                    for j in 0..n {
                        let g = got[off + r * n + j];
                        let w = want[r * total_n + col + j];
                        max_diff = max_diff.max(if g.is_finite() { (g - w).abs() } else { f32::INFINITY });
                    }
                }
                off += m * n;
                col += n;
            }
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
            let bytes = (w_bytes + m * s.k * 2 + m * total_n * 2) as f64;
            let gbs = bytes / (gemv_us * 1e-6) / 1e9;
            println!(
                "{:<18} {:>5} {:>6} {:>2} {:>7.1} {:>9.2} {:>8.2} {:>6.0} {:>5.1}% {:>8.2} {:>6.2}x {:>8} {:>8.1e}  ks{chosen} [{}]",
                s.name,
                s.k,
                total_n,
                m,
                w_bytes as f64 / 1e6,
                stream_us,
                gemv_us,
                gbs,
                100.0 * gbs / copy_gbs,
                lt_us,
                lt_us / gemv_us,
                path,
                max_diff / scale,
                sweep.join(" ")
            );
        }
    }
    Ok(())
}
