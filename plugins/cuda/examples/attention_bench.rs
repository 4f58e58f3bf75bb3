//! Times the CUDA `paged_attention` op through its Kernel API (what the engine calls): pure
//! decode batches (1/8/64/256 sequences; 128/512/2048 cached keys; Llama-3.2-1B and Llama-3-8B
//! head shapes; bf16), a few prefill batches, and the launch floor (`empty`: the batch-1 decode
//! grid whose one row has no new token, so every block only waits and exits). CUDA events around
//! N launches, eagerly and replayed from a captured CUDA graph; prints us/call and GB/s of K/V
//! bytes read.
//!
//! Run on a GPU machine: `attention_bench [iters] [shape:batch:ctx]` (default 200 iterations,
//! every case; the filter picks one decode case, e.g. `llama-1b:256:2048` for a profiler, or
//! `llama-1b:empty`).
//! Needs libcuda and NVRTC.

use cudarc::driver::{result as drv, sys};
use rtllm_cuda::attention::PagedAttention;
use rtllm_cuda::runtime;
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, HostServices, InputView, Kernel, LaunchEnv, Op, OutputView, TensorMeta,
};
use std::error::Error;

type Res<T> = Result<T, Box<dyn Error>>;

/// Tokens per KV block (the engine's default).
const BS: usize = 32;
/// Block-table width: a 2048-token max_seq_len, as an engine's decode metas would have.
const MB: usize = 2048 / BS;

struct Shape {
    name: &'static str,
    h: usize,
    kvh: usize,
    d: usize,
}

const SHAPES: [Shape; 2] =
    [Shape { name: "llama-1b", h: 32, kvh: 8, d: 64 }, Shape { name: "llama-8b", h: 32, kvh: 8, d: 128 }];

/// Device memory freed on drop.
struct Buf(sys::CUdeviceptr);

impl Buf {
    fn zeroed(bytes: usize) -> Res<Buf> {
        let bytes = bytes.max(256);
        // SAFETY: a plain allocation, zeroed before use.
        unsafe {
            let p = drv::malloc_sync(bytes)?;
            drv::memset_d8_sync(p, 0, bytes)?;
            Ok(Buf(p))
        }
    }

    fn from_i32(v: &[i32]) -> Res<Buf> {
        let b = Buf::zeroed(v.len() * 4)?;
        // SAFETY: the buffer holds at least v.len() ints.
        unsafe { drv::memcpy_htod_sync(b.0, v)? };
        Ok(b)
    }

    fn ptr(&self) -> *mut u8 {
        self.0 as usize as *mut u8
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync, freed once.
        unsafe {
            let _ = drv::free_sync(self.0);
        }
    }
}

/// One batch: `lens[s]` context (new tokens included), `q_lens[s]` new tokens (all 0: the
/// launch floor, timed with one packed token that no row owns).
struct Case<'a> {
    shape: &'a Shape,
    q_lens: Vec<usize>,
    lens: Vec<usize>,
}

struct Timing {
    eager_us: f64,
    graph_us: f64,
    kv_bytes: f64,
}

fn time_case(case: &Case, caches: (&Buf, &Buf), stream: sys::CUstream, iters: usize) -> Res<Timing> {
    let (h, kvh, d) = (case.shape.h, case.shape.kvh, case.shape.d);
    let s = case.lens.len();
    let t: usize = case.q_lens.iter().sum::<usize>().max(1);
    let nb = s * MB;
    let act = DType::BF16;
    let metas = vec![
        TensorMeta::of(act, &[t, h * d]),
        TensorMeta::of(act, &[t, kvh * d]),
        TensorMeta::of(act, &[t, kvh * d]),
        TensorMeta::of(act, &[nb, BS, kvh, d]),
        TensorMeta::of(act, &[nb, BS, kvh, d]),
        TensorMeta::of(DType::I32, &[s, MB]),
        TensorMeta::of(DType::I32, &[s]),
        TensorMeta::of(DType::I32, &[s + 1]),
    ];
    let attrs = Attrs::new().with("num_heads", h).with("num_kv_heads", kvh).with("head_dim", d);
    let kernel = PagedAttention::create(&metas, &attrs)?;
    let ws = Buf::zeroed(kernel.workspace_bytes(&metas)?)?;
    let tables: Vec<i32> = (0..(s * MB) as i32).collect();
    let lens: Vec<i32> = case.lens.iter().map(|&l| l as i32).collect();
    let mut starts = vec![0i32];
    for q in &case.q_lens {
        starts.push(starts.last().copied().unwrap_or(0) + *q as i32);
    }
    let (q, k, v, out) = (
        Buf::zeroed(t * h * d * 2)?,
        Buf::zeroed(t * kvh * d * 2)?,
        Buf::zeroed(t * kvh * d * 2)?,
        Buf::zeroed(t * h * d * 2)?,
    );
    let (bt, sl, qs) = (Buf::from_i32(&tables)?, Buf::from_i32(&lens)?, Buf::from_i32(&starts)?);
    let ptrs = [q.ptr(), k.ptr(), v.ptr(), caches.0.ptr(), caches.1.ptr(), bt.ptr(), sl.ptr(), qs.ptr()];
    // SAFETY: every pointer is a device buffer of at least its meta's bytes, distinct from
    // the others; the caches (inputs 3 and 4) are the ones the op writes in place.
    let mut inputs: Vec<InputView<'_>> = metas
        .iter()
        .zip(ptrs)
        .enumerate()
        .map(|(i, (m, p))| unsafe {
            if PagedAttention::IN_PLACE.contains(&i) {
                InputView::new_in_place(m.clone(), p, DeviceKind::Cuda)
            } else {
                InputView::new(m.clone(), p, DeviceKind::Cuda)
            }
        })
        .collect();
    // SAFETY: as above.
    let mut outputs = [unsafe { OutputView::new(TensorMeta::of(act, &[t, h * d]), out.ptr(), DeviceKind::Cuda) }];
    // SAFETY: the workspace is a device buffer of the kernel's size, used by one launch at a time.
    let mut env = unsafe {
        LaunchEnv::new(
            DeviceKind::Cuda,
            0,
            stream as *mut std::ffi::c_void,
            ws.ptr(),
            kernel.workspace_bytes(&metas)?,
            HostServices::sequential(),
        )
    };
    let mut run = |n: usize| -> Res<()> {
        for _ in 0..n {
            kernel.launch(&env.context(), &mut inputs, &mut outputs)?;
        }
        Ok(())
    };
    // SAFETY: driver calls on our stream and events; all buffers outlive the synchronizes.
    unsafe {
        let (e0, e1) = (
            drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)?,
            drv::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)?,
        );
        run(10)?;
        drv::stream::synchronize(stream)?;
        drv::event::record(e0, stream)?;
        run(iters)?;
        drv::event::record(e1, stream)?;
        drv::event::synchronize(e1)?;
        let eager_ms = drv::event::elapsed(e0, e1)? as f64;

        drv::stream::begin_capture(stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let captured = run(iters);
        let graph = drv::stream::end_capture(stream)?;
        captured?;
        let exec = drv::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0))?;
        drv::graph::launch(exec, stream)?; // warm-up replay
        drv::stream::synchronize(stream)?;
        drv::event::record(e0, stream)?;
        drv::graph::launch(exec, stream)?;
        drv::event::record(e1, stream)?;
        drv::event::synchronize(e1)?;
        let graph_ms = drv::event::elapsed(e0, e1)? as f64;
        let _ = drv::graph::exec_destroy(exec);
        let _ = drv::graph::destroy(graph);
        let _ = drv::event::destroy(e0);
        let _ = drv::event::destroy(e1);
        // Rows with no new token read nothing.
        let keys: usize = case.lens.iter().zip(&case.q_lens).filter(|&(_, &q)| q > 0).map(|(l, _)| l).sum();
        Ok(Timing {
            eager_us: eager_ms * 1e3 / iters as f64,
            graph_us: graph_ms * 1e3 / iters as f64,
            kv_bytes: (keys * kvh * d * 2 * 2) as f64,
        })
    }
}

fn main() -> Res<()> {
    let iters: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200);
    let only = std::env::args().nth(2);
    runtime::current_context()?;
    let dev = drv::device::get(0)?;
    println!("device: {}", drv::device::get_name(dev)?);
    println!(
        "paged_attention (bf16 activations and cache), block size {BS}, table width {MB}, {iters} calls per timing"
    );
    let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)?;
    let max_s = 256;
    let cache_bytes = |sh: &Shape| max_s * MB * BS * sh.kvh * sh.d * 2;
    let biggest = SHAPES.iter().map(cache_bytes).max().unwrap_or(0);
    let caches = (Buf::zeroed(biggest)?, Buf::zeroed(biggest)?);
    println!(
        "{:<9} {:>5} {:>6} {:>7} {:>10} {:>10} {:>10}",
        "shape", "batch", "ctx", "tokens", "eager_us", "graph_us", "graph_GB/s"
    );
    for shape in &SHAPES {
        let mut cases: Vec<Case> = Vec::new();
        for batch in [1usize, 8, 64, 256] {
            for ctx in [128usize, 512, 2048] {
                cases.push(Case { shape, q_lens: vec![1; batch], lens: vec![ctx; batch] });
            }
        }
        // Prefill: one 512-token prompt; 8 prompts of 128; a mixed step (4 prefills of 128 +
        // 60 decodes at 512).
        cases.push(Case { shape, q_lens: vec![512], lens: vec![512] });
        cases.push(Case { shape, q_lens: vec![128; 8], lens: vec![128; 8] });
        let mut q_lens = vec![128; 4];
        q_lens.extend(vec![1; 60]);
        let mut lens = vec![128; 4];
        lens.extend(vec![512; 60]);
        cases.push(Case { shape, q_lens, lens });
        cases.push(Case { shape, q_lens: vec![0], lens: vec![128] });
        for case in &cases {
            let empty = case.q_lens.iter().all(|&q| q == 0);
            let key = if empty {
                format!("{}:empty", shape.name)
            } else {
                format!("{}:{}:{}", shape.name, case.lens.len(), case.lens.iter().max().unwrap_or(&0))
            };
            if only.as_ref().is_some_and(|o| *o != key || !(empty || case.q_lens.iter().all(|&q| q == 1))) {
                continue;
            }
            let tm = time_case(case, (&caches.0, &caches.1), stream, iters)?;
            let t: usize = case.q_lens.iter().sum();
            let ctx = case.lens.iter().max().copied().unwrap_or(0);
            println!(
                "{:<9} {:>5} {:>6} {:>7} {:>10.2} {:>10.2} {:>10.1}",
                shape.name,
                case.lens.len(),
                if empty { "empty".to_string() } else { ctx.to_string() },
                t,
                tm.eager_us,
                tm.graph_us,
                tm.kv_bytes / (tm.graph_us * 1e3)
            );
        }
    }
    Ok(())
}
