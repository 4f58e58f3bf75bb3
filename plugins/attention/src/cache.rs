//! The paged KV cache's element types (f32, f16, bf16, and FP8 E4M3 codes with a per-layer
//! scale) and the step's first phase: writing each new token's K and V into its block slot,
//! spread over the host's pool.

use crate::batch::Batch;
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rtllm_plugin_api::fp8::{f32_to_e4m3, F8E4M3};
use rtllm_plugin_api::{DisjointMut, Element, LaunchContext, PluginError};

/// Tokens per pool task when writing the cache.
const WRITE_CHUNK: usize = 16;

/// An element type the cache may be stored as.
pub trait CacheElem: Element {
    /// Whether reading rows as f32 needs a conversion buffer.
    const CONVERTS: bool;

    /// Stores f32 values into cache elements; `scale` is the FP8 cache's scale (the float
    /// caches get 1 and ignore it).
    fn store(src: &[f32], dst: &mut [Self], scale: f32);

    /// Reads cache elements as f32 values (FP8 codes times `scale`).
    fn load(src: &[Self], dst: &mut [f32], scale: f32);

    /// `n` rows of `d` values starting at `cache[first]`, `stride` apart, as f32 rows: either
    /// borrowed from the cache itself (f32) or converted into `scratch` (at least `n * d`).
    /// Returns the rows and their stride.
    fn rows<'a>(
        cache: &'a [Self],
        first: usize,
        n: usize,
        stride: usize,
        d: usize,
        scale: f32,
        scratch: &'a mut [f32],
    ) -> (&'a [f32], usize) {
        for (j, row) in scratch[..n * d].chunks_exact_mut(d).enumerate() {
            let at = first + j * stride;
            Self::load(&cache[at..at + d], row, scale);
        }
        (&scratch[..n * d], d)
    }
}

impl CacheElem for f32 {
    const CONVERTS: bool = false;

    fn store(src: &[f32], dst: &mut [f32], _: f32) {
        dst.copy_from_slice(src);
    }

    fn load(src: &[f32], dst: &mut [f32], _: f32) {
        dst.copy_from_slice(src);
    }

    fn rows<'a>(
        cache: &'a [f32],
        first: usize,
        n: usize,
        stride: usize,
        d: usize,
        _: f32,
        _: &'a mut [f32],
    ) -> (&'a [f32], usize) {
        (&cache[first..first + (n - 1) * stride + d], stride)
    }
}

macro_rules! half_cache_elem {
    ($t:ty) => {
        impl CacheElem for $t {
            const CONVERTS: bool = true;

            fn store(src: &[f32], dst: &mut [$t], _: f32) {
                dst.convert_from_f32_slice(src);
            }

            fn load(src: &[$t], dst: &mut [f32], _: f32) {
                src.convert_to_f32_slice(dst);
            }
        }
    };
}

half_cache_elem!(f16);
half_cache_elem!(bf16);

impl CacheElem for F8E4M3 {
    const CONVERTS: bool = true;

    fn store(src: &[f32], dst: &mut [F8E4M3], scale: f32) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = F8E4M3(f32_to_e4m3(x / scale));
        }
    }

    fn load(src: &[F8E4M3], dst: &mut [f32], scale: f32) {
        for (o, c) in dst.iter_mut().zip(src) {
            *o = c.to_f32() * scale;
        }
    }
}

/// The FP8 cache's scales (`k_scale`, `v_scale`); 1 for the float caches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvScales {
    pub k: f32,
    pub v: f32,
}

impl KvScales {
    pub const ONE: KvScales = KvScales { k: 1.0, v: 1.0 };
}

/// Writes each new token's k and v rows (`[T, KVH * D]`) into its block slot of the caches.
/// Distinct new tokens must map to distinct slots (the block manager's contract).
#[allow(clippy::too_many_arguments)]
pub fn write_new_tokens<E: CacheElem>(
    ctx: &LaunchContext,
    batch: &Batch<'_>,
    row: usize,
    k: &[f32],
    v: &[f32],
    k_cache: &mut [E],
    v_cache: &mut [E],
    scales: KvScales,
) -> Result<(), PluginError> {
    let slots = batch.nb * batch.bs;
    if k_cache.len() != slots * row || v_cache.len() != slots * row || k.len() != batch.t * row || v.len() != k.len() {
        return Err(PluginError::new("paged_attention: cache or k/v sizes disagree with the batch geometry"));
    }
    let (kc, vc) = (DisjointMut::new(k_cache), DisjointMut::new(v_cache));
    ctx.parallel_chunks(batch.t, WRITE_CHUNK, |tokens| {
        let mut s = batch.seq_of(tokens.start);
        for t in tokens {
            while batch.q_range(s).end <= t {
                s += 1;
            }
            let pos = batch.start_pos(s) + (t - batch.q_range(s).start);
            let at = (batch.block(s, pos) * batch.bs + pos % batch.bs) * row;
            // SAFETY: `Batch::new` checked the block id is below NB, so `at + row` lies in the
            // caches, and distinct tokens write distinct slots.
            unsafe {
                E::store(&k[t * row..(t + 1) * row], kc.slice_mut(at..at + row), scales.k);
                E::store(&v[t * row..(t + 1) * row], vc.slice_mut(at..at + row), scales.v);
            }
        }
    })
}
