//! Helpers for testing kernels outside a host: launch environments whose pool spreads tasks
//! over scoped std threads (so a kernel's parallel paths really run concurrently), owned host
//! tensors ([`HostBuf`]) that lend input and output views, a harness that infers, creates and
//! launches an op the way the host does ([`launch`], honouring `Op::IN_PLACE`), and
//! deterministic test data. Plugin crates use these in their unit tests; the real host passes
//! its own thread pool.

use crate::{Attrs, DType, Element, HostServices, Kernel, LaunchEnv, Op, PluginError, TaskFn, TensorMeta};
use crate::{InputView, OutputView};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Worker threads of [`threaded_env`] environments.
pub const THREADS: usize = 4;

/// # Safety
/// `task` must be valid for `run` until this returns (the `HostServices` contract).
unsafe extern "C" fn threaded_for(_pool: *const c_void, n: usize, task: *const c_void, run: TaskFn) {
    let next = AtomicUsize::new(0);
    let task = task as usize;
    std::thread::scope(|s| {
        for _ in 0..THREADS.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                // SAFETY: the caller keeps `task` valid until every spawned thread is joined.
                unsafe { (run.run)(task as *const c_void, i) };
            });
        }
    });
}

/// Host services over [`THREADS`] scoped std threads.
pub fn threaded_services() -> HostServices {
    // SAFETY: `threaded_for` runs every index once and joins its threads before returning.
    unsafe { HostServices::new(std::ptr::null(), THREADS, threaded_for) }
}

/// A CPU environment over [`THREADS`] std threads with `workspace` (may be empty).
pub fn threaded_env<T: bytemuck::Pod>(workspace: &mut [T]) -> LaunchEnv<'_> {
    LaunchEnv::cpu(threaded_services(), bytemuck::cast_slice_mut(workspace))
}

/// A CPU environment on the calling thread with `workspace` (may be empty).
pub fn sequential_env<T: bytemuck::Pod>(workspace: &mut [T]) -> LaunchEnv<'_> {
    LaunchEnv::cpu(HostServices::sequential(), bytemuck::cast_slice_mut(workspace))
}

/// A read-only host view of `data` as `meta` (panics if it does not fit: test setup).
pub fn input<T: Element>(meta: TensorMeta, data: &[T]) -> InputView<'_> {
    InputView::from_slice(meta, data).unwrap_or_else(|e| panic!("test input: {e}"))
}

/// A writable host view of `data` as `meta`, as the host passes an in-place input.
pub fn input_mut<T: Element>(meta: TensorMeta, data: &mut [T]) -> InputView<'_> {
    InputView::from_slice_mut(meta, data).unwrap_or_else(|e| panic!("test input: {e}"))
}

/// A writable host view of `data` as `meta` (panics if it does not fit: test setup).
pub fn output<T: Element>(meta: TensorMeta, data: &mut [T]) -> OutputView<'_> {
    OutputView::from_slice(meta, data).unwrap_or_else(|e| panic!("test output: {e}"))
}

/// An owned host tensor with 64-byte aligned storage, zero-filled.
#[derive(Debug)]
pub struct HostBuf {
    meta: TensorMeta,
    storage: Vec<u64>,
    len: usize,
}

impl HostBuf {
    /// A zeroed tensor of `meta`, which must have known dims and a whole byte size.
    pub fn zeros(meta: &TensorMeta) -> HostBuf {
        let len = meta.byte_size().unwrap_or_else(|| panic!("test tensor {meta} has no byte size"));
        HostBuf { meta: meta.clone(), storage: vec![0; len.div_ceil(8) + 8], len }
    }

    /// A tensor of `dims` holding `data` (its dtype is `T`'s).
    pub fn from_slice<T: Element>(dims: &[usize], data: &[T]) -> HostBuf {
        let mut b = HostBuf::zeros(&TensorMeta::of(T::DTYPE, dims));
        b.bytes_mut().copy_from_slice(bytemuck::cast_slice(data));
        b
    }

    /// A tensor of `meta` holding raw `bytes` (quantized data).
    pub fn from_bytes(meta: TensorMeta, bytes: &[u8]) -> HostBuf {
        let mut b = HostBuf::zeros(&meta);
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    fn offset(&self) -> usize {
        let addr = self.storage.as_ptr() as usize;
        (64 - addr % 64) % 64
    }

    pub fn bytes(&self) -> &[u8] {
        let off = self.offset();
        &bytemuck::cast_slice(&self.storage)[off..off + self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.offset(), self.len);
        &mut bytemuck::cast_slice_mut(&mut self.storage)[off..off + len]
    }

    /// The elements as a vector (the dtype must match `T`).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        assert_eq!(self.meta.dtype, T::DTYPE, "{} read as {}", self.meta, T::DTYPE);
        let bytes = self.bytes();
        let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
        out
    }

    /// A read-only view.
    pub fn input(&self) -> InputView<'_> {
        let meta = self.meta.clone();
        InputView::from_bytes(meta, self.bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A writable view, as the host passes an input the op updates in place.
    pub fn input_in_place(&mut self) -> InputView<'_> {
        let meta = self.meta.clone();
        InputView::from_bytes_mut(meta, self.bytes_mut()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A writable view.
    pub fn output(&mut self) -> OutputView<'_> {
        let meta = self.meta.clone();
        OutputView::from_bytes(meta, self.bytes_mut()).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl crate::TensorView for HostBuf {
    fn meta(&self) -> &TensorMeta {
        &self.meta
    }
    fn device(&self) -> crate::DeviceKind {
        crate::DeviceKind::Cpu
    }
}

impl Clone for HostBuf {
    /// A copy of the elements in fresh storage (aligned anew).
    fn clone(&self) -> HostBuf {
        HostBuf::from_bytes(self.meta.clone(), self.bytes())
    }
}

impl PartialEq for HostBuf {
    fn eq(&self, other: &HostBuf) -> bool {
        self.meta == other.meta && self.bytes() == other.bytes()
    }
}

/// Infers, creates and launches `O` once in `env`'s pool, as the host does: outputs start
/// zeroed, the workspace is what the kernel asks for, and the inputs `O::IN_PLACE` names are
/// passed writable (and updated in `inputs`). Returns the outputs.
pub fn launch<O: Op>(threaded: bool, attrs: &Attrs, inputs: &mut [HostBuf]) -> Result<Vec<HostBuf>, PluginError> {
    let metas: Vec<TensorMeta> = inputs.iter().map(|b| b.meta.clone()).collect();
    let out_metas = O::infer(&metas, attrs)?;
    let kernel = O::create(&metas, attrs)?;
    let mut workspace = vec![0u8; kernel.workspace_bytes(&metas)? + 64];
    let off = workspace.as_ptr().align_offset(64).min(64);
    let ws = &mut workspace[off..];
    let mut env = if threaded { threaded_env(ws) } else { LaunchEnv::cpu(HostServices::sequential(), ws) };
    let mut outs: Vec<HostBuf> = out_metas.iter().map(HostBuf::zeros).collect();
    let mut in_views: Vec<InputView<'_>> = inputs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| if O::IN_PLACE.contains(&i) { b.input_in_place() } else { b.input() })
        .collect();
    let mut out_views: Vec<OutputView<'_>> = outs.iter_mut().map(HostBuf::output).collect();
    kernel.launch(&env.context(), &mut in_views, &mut out_views)?;
    drop((in_views, out_views));
    Ok(outs)
}

/// Runs `O` sequentially and on threads, checks both give the same bits (outputs and in-place
/// inputs), and returns the outputs (`inputs` end as the threaded launch left them).
pub fn launch_both<O: Op>(attrs: &Attrs, inputs: &mut [HostBuf]) -> Result<Vec<HostBuf>, PluginError> {
    let mut seq_inputs = inputs.to_vec();
    let seq = launch::<O>(false, attrs, &mut seq_inputs)?;
    let par = launch::<O>(true, attrs, inputs)?;
    for (a, b) in seq.iter().zip(&par) {
        assert_eq!(a.bytes(), b.bytes(), "sequential and threaded launches of {} differ", O::NAME);
    }
    for (a, b) in seq_inputs.iter().zip(inputs.iter()) {
        assert_eq!(a.bytes(), b.bytes(), "sequential and threaded launches of {} update inputs differently", O::NAME);
    }
    Ok(par)
}

/// `len` deterministic pseudo-random values in [-1, 1).
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor of f32 test data of `dims` converted to `dtype` (f32, f16 or bf16).
pub fn float_buf(dtype: DType, dims: &[usize], seed: u64) -> HostBuf {
    let n = dims.iter().product();
    let v = data(n, seed);
    match dtype {
        DType::F16 => HostBuf::from_slice(dims, &v.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>()),
        DType::BF16 => HostBuf::from_slice(dims, &v.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>()),
        _ => HostBuf::from_slice(dims, &v),
    }
}

/// Launches a kernel instance directly on host views (for tests of a `Kernel` outside `Op`).
pub fn launch_kernel<K: Kernel>(
    kernel: &K,
    env: &mut LaunchEnv<'_>,
    inputs: &mut [InputView<'_>],
    outputs: &mut [OutputView<'_>],
) -> Result<(), PluginError> {
    kernel.launch(&env.context(), inputs, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_env_runs_every_task_once() {
        let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        threaded_env::<u8>(&mut [])
            .context()
            .parallel_for(100, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        assert_eq!(data(3, 7), data(3, 7));
        assert!(data(1000, 1).iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn host_bufs_are_aligned_and_round_trip() {
        let b = HostBuf::from_slice(&[3], &[1.5f32, -2.0, 3.0]);
        assert_eq!(b.bytes().as_ptr() as usize % 64, 0);
        assert_eq!(b.to_vec::<f32>(), vec![1.5, -2.0, 3.0]);
        assert_eq!(b.input().slice::<f32>().unwrap(), &[1.5, -2.0, 3.0]);
        let c = b.clone();
        assert_eq!(c.bytes().as_ptr() as usize % 64, 0, "a clone realigns");
    }
}
