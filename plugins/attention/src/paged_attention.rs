//! `paged_attention`: causal (optionally sliding-window) GQA attention for one packed batch
//! that mixes prefill and decode sequences over a paged KV cache. The op first writes the new
//! tokens' K/V into the cache (updated in place), then runs the flash-style loop of
//! [`crate::flash`] over (token tile, KV head) items pulled dynamically by the pool's workers.
//! An FP8 (E4M3) cache stores `e4m3(x / scale)` and reads `code · scale`, with the layer's
//! `k_scale` / `v_scale` inputs.

use crate::batch::{Args, Batch};
use crate::cache::{write_new_tokens, CacheElem, KvScales};
use crate::flash::{max_tile, scratch_len, AttnJob, Scratch};
use crate::params::{check_metas, example_inputs, AttnParams, K_CACHE, NUM_INPUTS, NUM_INPUTS_FP8, OP, V_CACHE};
use half::{bf16, f16};
use rtllm_plugin_api::fp8::F8E4M3;
use rtllm_plugin_api::{
    register_op, Attrs, DType, DisjointMut, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError,
    TensorMeta, TensorView,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Workers the workspace is sized for; a launch uses at most this many pool tasks.
pub const MAX_WORKERS: usize = 128;
/// Items per worker the tiling aims for, so uneven items still balance.
const ITEMS_PER_WORKER: usize = 4;

pub struct PagedAttention;

pub struct PagedAttentionKernel {
    p: AttnParams,
}

/// An example's geometry: heads, kv heads, head dim, block size, blocks, sequences, table width,
/// tokens, cache dtype, sliding window.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize, DType, usize);

impl Op for PagedAttention {
    const NAME: &'static str = OP;
    const SUMMARY: &'static str = "causal GQA attention over a paged KV cache for a packed prefill+decode batch. \
        Inputs q [T, H*D] f32, k [T, KVH*D] f32, v [T, KVH*D] f32, k_cache [NB, BS, KVH, D] and v_cache \
        (f32/f16/bf16/f8_e4m3, written in place with the new tokens' k/v), block_tables [S, MB] i32, seq_lens [S] i32, \
        query_start [S+1] i32, and for an f8_e4m3 cache k_scale [1] f32, v_scale [1] f32 (stored e4m3(x / scale), \
        read code * scale) -> out [T, H*D] f32. Attrs num_heads, num_kv_heads, head_dim, scale (1/sqrt(D)), sliding_window (0 = none). \
        The int inputs need valid content: query_start runs non-decreasing from 0 to T; q_len <= seq_len <= MB*BS per \
        sequence; block_tables[s][0..ceil(seq_len/BS)] are distinct cache block ids below NB.";
    const IN_PLACE: &'static [usize] = &[K_CACHE, V_CACHE];
    type Kernel = PagedAttentionKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        Ok(vec![check_metas(inputs, &AttnParams::from_attrs(attrs)?)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<PagedAttentionKernel, PluginError> {
        let p = AttnParams::from_attrs(attrs)?;
        check_metas(inputs, &p)?;
        Ok(PagedAttentionKernel { p })
    }

    fn examples() -> Vec<OpExample> {
        let cases: [Case; 10] = [
            (9, 3, 64, 32, 16, 3, 4, 7, DType::F32, 0),
            (9, 3, 64, 16, 24, 3, 6, 7, DType::F16, 0),
            (9, 3, 64, 32, 8, 4, 2, 4, DType::F16, 0),
            (4, 4, 16, 16, 4, 1, 4, 13, DType::BF16, 0),
            (6, 2, 20, 7, 12, 2, 6, 9, DType::F32, 0),
            (8, 1, 32, 16, 8, 2, 4, 5, DType::F16, 8),
            (9, 3, 64, 16, 64, 5, 12, 70, DType::F32, 0),
            (9, 3, 64, 16, 24, 3, 6, 7, DType::F8_E4M3, 0),
            (4, 2, 16, 16, 64, 5, 12, 70, DType::F8_E4M3, 0),
            (8, 1, 32, 16, 8, 2, 4, 5, DType::F8_E4M3, 8),
        ];
        cases
            .iter()
            .map(|&(h, kvh, d, bs, nb, s, mb, t, cache, window)| OpExample {
                inputs: example_inputs(DType::F32, cache, (h, kvh, d), (nb, bs), (s, mb), t).into(),
                attrs: Attrs::new()
                    .with("num_heads", h)
                    .with("num_kv_heads", kvh)
                    .with("head_dim", d)
                    .with("sliding_window", window),
            })
            .collect()
    }
}

impl PagedAttentionKernel {
    fn scratch_for(&self, cache: DType, bs: usize) -> usize {
        scratch_len(&self.p, bs, cache != DType::F32)
    }

    fn run<E: CacheElem>(&self, ctx: &LaunchContext<'_>, args: Args<'_, '_, '_>) -> Result<(), PluginError> {
        let Args { q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start, scales, out } = args;
        let batch =
            Batch::new(&self.p, [&*q, &*k, &*v, &*k_cache, &*v_cache], [block_tables, seq_lens, query_start], out)?;
        let scales = match scales {
            Some([ks, vs]) => KvScales { k: scale_value(ks, "k_scale")?, v: scale_value(vs, "v_scale")? },
            None => KvScales::ONE,
        };
        let (q, k, v) = (q.slice::<f32>()?, k.slice::<f32>()?, v.slice::<f32>()?);
        let row = self.p.num_kv_heads * self.p.head_dim;
        write_new_tokens(ctx, &batch, row, k, v, k_cache.slice_mut::<E>()?, v_cache.slice_mut::<E>()?, scales)?;
        if batch.t == 0 {
            return Ok(());
        }
        let out = out.slice_mut::<f32>()?;
        let kvh = self.p.num_kv_heads;
        let target = ctx.num_threads() * ITEMS_PER_WORKER;
        let tile = (batch.t * kvh).div_ceil(target).clamp(1, max_tile(&self.p));
        let job = AttnJob {
            p: self.p,
            batch: &batch,
            q,
            k_cache: k_cache.slice::<E>()?,
            v_cache: v_cache.slice::<E>()?,
            scales,
            out: DisjointMut::new(out),
            tile,
        };
        let items = job.items();
        let per = scratch_len(&self.p, batch.bs, E::CONVERTS);
        let fit = ctx.workspace_bytes() / (per * std::mem::size_of::<f32>());
        let workers = items.min(ctx.num_threads()).min(MAX_WORKERS).min(fit);
        if workers == 0 {
            return Err(PluginError::new(format!(
                "{OP}: workspace of {} bytes holds no worker's {} bytes of scratch",
                ctx.workspace_bytes(),
                per * std::mem::size_of::<f32>()
            )));
        }
        let scratch = DisjointMut::new(ctx.workspace::<f32>(workers * per)?);
        let next = AtomicUsize::new(0);
        ctx.parallel_for(workers, |w| {
            // SAFETY: worker `w < workers` owns scratch `w * per..(w + 1) * per` alone.
            let buf = unsafe { scratch.slice_mut(w * per..(w + 1) * per) };
            let mut sc = Scratch::new(buf, &self.p, batch.bs, E::CONVERTS);
            loop {
                let item = next.fetch_add(1, Ordering::Relaxed);
                if item >= items {
                    break;
                }
                job.run_item(item, &mut sc);
            }
        })
    }
}

/// An FP8 cache's scale: one finite, positive f32.
fn scale_value(view: &InputView<'_>, name: &str) -> Result<f32, PluginError> {
    match view.slice::<f32>()? {
        [s] if s.is_finite() && *s > 0.0 => Ok(*s),
        other => Err(PluginError::new(format!("{OP}: {name} must be one finite positive f32, got {other:?}"))),
    }
}

impl Kernel for PagedAttentionKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        let cache = inputs.get(K_CACHE).ok_or_else(|| PluginError::new(format!("{OP}: no k_cache meta")))?;
        let bs = cache.dims.get(1).and_then(|d| d.known()).ok_or_else(|| {
            PluginError::new(format!("{OP}: workspace needs a known cache block size, got k_cache {cache}"))
        })?;
        Ok(MAX_WORKERS * self.scratch_for(cache.dtype, bs) * std::mem::size_of::<f32>())
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        if !matches!(inputs.len(), NUM_INPUTS | NUM_INPUTS_FP8) || outputs.len() != 1 {
            return Err(PluginError::new(format!(
                "{OP}: launch takes {NUM_INPUTS} (or {NUM_INPUTS_FP8}) inputs and 1 output, got {} and {}",
                inputs.len(),
                outputs.len()
            )));
        }
        let dtype = inputs[K_CACHE].meta().dtype;
        let args = Args::split(inputs, outputs)?;
        match dtype {
            DType::F32 => self.run::<f32>(ctx, args),
            DType::F16 => self.run::<f16>(ctx, args),
            DType::BF16 => self.run::<bf16>(ctx, args),
            DType::F8_E4M3 => self.run::<F8E4M3>(ctx, args),
            other => Err(PluginError::new(format!("{OP}: cache dtype {other} is not f32, f16, bf16 or f8_e4m3"))),
        }
    }
}

register_op!(PagedAttention);
