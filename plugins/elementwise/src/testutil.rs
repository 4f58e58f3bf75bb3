//! Test support shared by the CPU kernel plugins' unit tests (the attention plugin includes
//! this file by path): owned tensors, a host whose `parallel_for` spreads tasks over scoped
//! std threads, and a runner that checks a kernel gives the same bits sequentially and in
//! parallel.

use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Element, Kernel, LaunchContext, Op, PluginError, TensorArg, TensorMeta,
};

/// An owned, 8-byte aligned host tensor.
#[derive(Clone, Debug)]
pub struct Buf {
    pub meta: TensorMeta,
    storage: Vec<u64>,
    len: usize,
}

impl Buf {
    /// A tensor of plain elements.
    pub fn of<T: Element>(dims: &[usize], data: &[T]) -> Buf {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "test tensor data does not fill its dims");
        let len = std::mem::size_of_val(data);
        let mut b = Buf::zeroed(TensorMeta::of(T::DTYPE, dims), len);
        // SAFETY: `storage` holds at least `len` bytes and `data` is plain old data.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr() as *const u8, b.storage.as_mut_ptr() as *mut u8, len) };
        b
    }

    /// A tensor of raw bytes (quantized rows).
    pub fn raw(dtype: DType, dims: &[usize], bytes: &[u8]) -> Buf {
        let mut b = Buf::zeroed(TensorMeta::of(dtype, dims), bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    /// A zero-filled tensor for `meta` (which must be concrete).
    pub fn zeros(meta: &TensorMeta) -> Buf {
        let len = meta.byte_size().expect("test tensor meta is concrete");
        Buf::zeroed(meta.clone(), len)
    }

    fn zeroed(meta: TensorMeta, len: usize) -> Buf {
        Buf { meta, storage: vec![0u64; len.div_ceil(8).max(1)], len }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `storage` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.storage.as_mut_ptr() as *mut u8, self.len) }
    }

    pub fn arg(&mut self) -> TensorArg {
        // SAFETY: the storage covers the meta's bytes and outlives the launch in every test.
        unsafe { TensorArg::new(self.meta.clone(), self.storage.as_mut_ptr() as *mut u8, DeviceKind::Cpu) }
    }

    /// The elements as a vector (the dtype must match `T`).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        assert_eq!(self.meta.dtype, T::DTYPE);
        let n = self.len / std::mem::size_of::<T>();
        // SAFETY: the storage holds `n` elements of `T`, suitably aligned.
        unsafe { std::slice::from_raw_parts(self.storage.as_ptr() as *const T, n) }.to_vec()
    }
}

/// A CPU context whose pool runs tasks on several scoped threads.
pub fn threaded_ctx() -> LaunchContext {
    rtllm_plugin_api::testing::threaded(&mut [])
}

/// Infers, creates and launches `O` once with `ctx` (plus `workspace` bytes if asked for).
pub fn launch_with<O: Op>(ctx: LaunchContext, attrs: &Attrs, inputs: &mut [Buf]) -> Result<Vec<Buf>, PluginError> {
    let metas: Vec<TensorMeta> = inputs.iter().map(|b| b.meta.clone()).collect();
    let out_metas = O::infer(&metas, attrs)?;
    let kernel = O::create(&metas, attrs)?;
    let mut workspace = vec![0u64; kernel.workspace_bytes(&metas)?.div_ceil(8)];
    let ctx =
        LaunchContext { workspace: workspace.as_mut_ptr() as *mut u8, workspace_bytes: workspace.len() * 8, ..ctx };
    let mut outs: Vec<Buf> = out_metas.iter().map(Buf::zeros).collect();
    let in_args: Vec<TensorArg> = inputs.iter_mut().map(Buf::arg).collect();
    let out_args: Vec<TensorArg> = outs.iter_mut().map(Buf::arg).collect();
    kernel.launch(&ctx, &in_args, &out_args)?;
    Ok(outs)
}

/// Runs `O` sequentially and on threads, checks both give the same bits, returns the outputs.
pub fn run<O: Op>(attrs: &Attrs, inputs: &mut [Buf]) -> Result<Vec<Buf>, PluginError> {
    let seq = launch_with::<O>(LaunchContext::cpu_sequential(), attrs, inputs)?;
    let par = launch_with::<O>(threaded_ctx(), attrs, inputs)?;
    for (a, b) in seq.iter().zip(&par) {
        assert_eq!(a.storage, b.storage, "sequential and threaded launches of {} differ", O::NAME);
    }
    Ok(seq)
}

/// Deterministic pseudo-random floats in [-1, 1).
pub fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Asserts two float slices agree within `tol` (absolute, scaled by magnitude above 1).
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "element {i}: got {g}, want {w} (error {err} > {tol})");
    }
}
