//! CUDA `paged_attention`: the same op as the CPU attention plugin (inputs, attributes, causal
//! sliding-window GQA semantics, caches updated in place), for f32/bf16/f16 activations and any
//! f32/bf16/f16 cache dtype, or an FP8 (E4M3) cache with its `k_scale` / `v_scale` inputs, which
//! the kernels read on the device (stored `e4m3(x / scale)`, read `code · scale`). At most two launches on the host's stream (kernels/cuda/attention_prefill.cu, attention_decode.cu):
//! prefill tiles (sequences with >= 2 new tokens; only when T >= 2), then GQA decode (sequences
//! with one new token), split-K through thread-block clusters when the batch is too small to
//! fill the GPU. Each kernel writes its own tokens' K/V into the cache. No workspace; grids come
//! from the metas only.

use crate::attention_plan::{
    check_head_dim, decode_shared_bytes, head_tile, shared_bytes, Geometry, MAX_CLUSTER, THREADS,
};
use crate::devargs::{device_ptr, device_ptr_mut, in_place_ptr};
use crate::kernel_source;
use crate::runtime::{self, Dims, Function, KernelArgs, KernelSource};
use cudarc::driver::sys::CUdevice_attribute as Attr;
use rtllm_plugin_api::shapes::attention::{
    check_metas, example_inputs, AttnParams, K, K_CACHE, K_SCALE, NUM_INPUTS, NUM_INPUTS_FP8, OP, Q, QUERY_START,
    SEQ_LENS, V, V_CACHE, V_SCALE,
};
use rtllm_plugin_api::shapes::expect_args;
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, InputView, Kernel, LaunchContext, Op, OpExample, OutputView, PluginError, TensorMeta,
    TensorView,
};

static PREFILL: KernelSource = kernel_source!("attention_prefill.cu");
static DECODE: KernelSource = kernel_source!("attention_decode.cu");

/// The cache dtypes the kernels read.
const CACHES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F8_E4M3];

pub struct PagedAttention;

/// The two kernels of one (activation, cache) dtype pair, the attributes and the device limits
/// the decode plan uses.
pub struct PagedAttentionKernel {
    p: AttnParams,
    act: DType,
    cache: DType,
    prefill: Function,
    /// `pa_decode<GT>` for this head group's tile size.
    decode: Function,
    /// Multiprocessors of the device.
    sms: usize,
    /// Largest split-K cluster the device runs (1 before sm_90).
    max_cluster: usize,
}

fn suffix(d: DType) -> Result<&'static str, PluginError> {
    match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        DType::F8_E4M3 => Ok("f8"),
        other => Err(PluginError::new(format!("{OP} (cuda): dtype {other} is not f32, bf16, f16 or f8_e4m3"))),
    }
}

/// An example: heads, kv heads, head dim, block size, blocks, sequences, table width, tokens,
/// activation dtype, cache dtype, sliding window.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize, DType, DType, usize);

fn example((h, kvh, d, bs, nb, s, mb, t, act, cache, window): Case) -> OpExample {
    OpExample {
        inputs: example_inputs(act, cache, (h, kvh, d), (nb, bs), (s, mb), t).into(),
        attrs: Attrs::new()
            .with("num_heads", h)
            .with("num_kv_heads", kvh)
            .with("head_dim", d)
            .with("sliding_window", window),
    }
}

impl Op for PagedAttention {
    const NAME: &'static str = OP;
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    const SUMMARY: &'static str = "causal GQA attention over a paged KV cache for a packed prefill+decode batch \
        (CUDA). Inputs q [T, H*D], k [T, KVH*D], v [T, KVH*D] (f32/bf16/f16, one dtype), k_cache and v_cache \
        [NB, BS, KVH, D] (f32/bf16/f16/f8_e4m3, written in place with the new tokens' k/v), block_tables [S, MB] \
        i32, seq_lens [S] i32, query_start [S+1] i32, and for an f8_e4m3 cache k_scale [1] f32, v_scale [1] f32 \
        (stored e4m3(x / scale), read code * scale) -> out [T, H*D] of q's dtype. Attrs num_heads, num_kv_heads, \
        head_dim (a multiple of 8 up to 256), scale (1/sqrt(D)), sliding_window (0 = none). No workspace. \
        The caches must be 16-byte aligned. The int inputs need valid content (as the CPU provider's).";
    const IN_PLACE: &'static [usize] = &[K_CACHE, V_CACHE];
    type Kernel = PagedAttentionKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        let p = AttnParams::from_attrs(attrs)?;
        check_head_dim(p.head_dim)?;
        Ok(vec![check_metas(inputs, &p, &DType::FLOATS, &CACHES)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<PagedAttentionKernel, PluginError> {
        let p = AttnParams::from_attrs(attrs)?;
        check_head_dim(p.head_dim)?;
        check_metas(inputs, &p, &DType::FLOATS, &CACHES)?;
        let (act, cache) = (inputs[Q].dtype, inputs[K_CACHE].dtype);
        let pair = format!("{}_{}", suffix(act)?, suffix(cache)?);
        let prefill = runtime::function(&PREFILL, &format!("pa_prefill_{pair}"))?;
        let decode = runtime::function(&DECODE, &format!("pa_decode{}_{pair}", head_tile(p.group())))?;
        runtime::set_max_dynamic_shared(prefill, shared_bytes(p.head_dim))?;
        let sms = runtime::device_attribute(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        // Thread-block clusters (the decode kernel's split-K) need sm_90.
        let major = runtime::device_attribute(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        // RTLLM_ATTN_MAX_CLUSTER caps the decode split-K cluster (1 = no split), for tuning.
        let cap = std::env::var("RTLLM_ATTN_MAX_CLUSTER").ok().and_then(|v| v.trim().parse::<usize>().ok());
        let max_cluster = if major >= 9 { cap.unwrap_or(MAX_CLUSTER).clamp(1, MAX_CLUSTER) } else { 1 };
        // Rank 0 of a split-K cluster holds the other splits' states: past 48 KiB for large
        // head tiles and dims, which needs the opt-in limit.
        runtime::set_max_dynamic_shared(decode, decode_shared_bytes(head_tile(p.group()), p.head_dim, max_cluster))?;
        Ok(PagedAttentionKernel { p, act, cache, prefill, decode, sms, max_cluster })
    }

    fn examples() -> Vec<OpExample> {
        use DType::{BF16, F16, F32, F8_E4M3 as F8};
        let cases: Vec<Case> = vec![
            // Mixed prefill + decode batches (odd sequences decode, even ones prefill).
            (8, 2, 64, 16, 24, 3, 6, 7, F32, F32, 0),
            (8, 2, 64, 16, 24, 3, 6, 7, BF16, BF16, 0),
            (8, 2, 64, 16, 24, 3, 6, 7, F16, F16, 0),
            (4, 4, 128, 32, 16, 4, 4, 40, BF16, BF16, 0),
            (8, 1, 128, 16, 24, 3, 8, 30, F32, BF16, 0),
            (8, 1, 32, 16, 12, 2, 6, 9, F16, F16, 8),
            (12, 3, 64, 16, 64, 5, 12, 70, F32, F32, 20),
            (64, 1, 64, 16, 32, 3, 8, 5, BF16, BF16, 0),
            (4, 2, 256, 16, 16, 2, 8, 5, F16, F16, 0),
            (4, 2, 256, 16, 16, 2, 8, 5, F32, F32, 0),
            (6, 2, 96, 16, 24, 3, 8, 5, BF16, F32, 0),
            (16, 4, 128, 16, 260, 4, 64, 4, BF16, BF16, 0),
            // Prefills next to split-K decodes (8 sequences x 8 KV heads -> clusters of 4).
            (32, 8, 64, 16, 400, 8, 38, 40, BF16, BF16, 0),
            // Pure decode, batch 1 (contexts up to 608; split-K clusters of 8).
            (32, 8, 64, 32, 20, 1, 19, 1, BF16, BF16, 0),
            (32, 8, 128, 16, 40, 1, 38, 1, F16, F16, 0),
            (8, 1, 64, 16, 40, 1, 38, 1, F32, F32, 0),
            (32, 8, 64, 32, 20, 1, 19, 1, F32, BF16, 0),
            // Pure decode, batch 64 (contexts 1..608).
            (32, 8, 64, 32, 640, 64, 19, 64, BF16, BF16, 0),
            (32, 8, 128, 16, 1000, 64, 38, 64, BF16, BF16, 0),
            (8, 1, 128, 16, 1000, 64, 38, 64, F16, F16, 0),
            (8, 1, 64, 32, 640, 64, 19, 64, F32, F32, 0),
            (32, 8, 64, 16, 1000, 64, 38, 64, F16, BF16, 100),
            (32, 8, 128, 32, 640, 64, 19, 64, F32, F16, 0),
            // Head dims that are not a multiple of 32 (idle padded lanes): tiny-llama's 4 x 2 x 16
            // mixed, decode batch 1 (clusters of 8) and 8, G = 8 with a window; D = 48 mixed
            // (G = 3: a partial head tile), a long prefill, decode batch 1 and 8; D = 8, 24, 80.
            (4, 2, 16, 16, 24, 3, 6, 9, F32, F32, 0),
            (4, 2, 16, 16, 24, 3, 6, 9, BF16, BF16, 0),
            (4, 2, 16, 16, 24, 3, 6, 9, F16, F16, 0),
            (4, 2, 16, 16, 40, 1, 38, 1, BF16, BF16, 0),
            (4, 2, 16, 16, 320, 8, 38, 8, F16, F16, 0),
            (4, 2, 16, 32, 160, 8, 19, 8, F32, BF16, 0),
            (8, 1, 16, 16, 12, 2, 6, 9, F32, BF16, 8),
            (6, 2, 48, 16, 24, 3, 8, 20, BF16, BF16, 0),
            (6, 2, 48, 16, 24, 3, 8, 20, F32, F32, 0),
            (6, 2, 48, 16, 24, 3, 8, 20, F16, F16, 5),
            (8, 2, 48, 16, 64, 2, 16, 100, F32, F16, 0),
            (32, 8, 48, 16, 40, 1, 38, 1, F32, F32, 0),
            (12, 4, 48, 32, 160, 8, 19, 8, BF16, F16, 0),
            (12, 4, 48, 32, 160, 8, 19, 8, F16, F16, 0),
            (4, 1, 8, 16, 24, 3, 6, 9, F32, F32, 0),
            (6, 3, 24, 16, 40, 2, 38, 41, BF16, BF16, 0),
            (8, 2, 80, 16, 24, 3, 6, 9, BF16, F32, 0),
            // FP8 caches (scales read on the device): mixed batches of every activation dtype,
            // a long prefill over cached blocks, split-K decodes at batch 1 and 8, batch 64,
            // D = 16 / 48 / 128 / 256, G = 8 with a window.
            (8, 2, 64, 16, 24, 3, 6, 7, F32, F8, 0),
            (8, 2, 64, 16, 24, 3, 6, 7, BF16, F8, 0),
            (8, 2, 64, 16, 24, 3, 6, 7, F16, F8, 0),
            (12, 3, 64, 16, 64, 5, 12, 70, BF16, F8, 20),
            (32, 8, 128, 16, 40, 1, 38, 1, BF16, F8, 0),
            (32, 8, 64, 32, 20, 1, 19, 1, F16, F8, 0),
            (32, 8, 128, 16, 1000, 64, 38, 64, BF16, F8, 0),
            (4, 2, 16, 16, 24, 3, 6, 9, BF16, F8, 0),
            (4, 2, 16, 16, 320, 8, 38, 8, F32, F8, 0),
            (6, 2, 48, 16, 24, 3, 8, 20, BF16, F8, 0),
            (12, 4, 48, 32, 160, 8, 19, 8, F16, F8, 0),
            (8, 1, 32, 16, 12, 2, 6, 9, BF16, F8, 8),
            (4, 2, 256, 16, 16, 2, 8, 5, BF16, F8, 0),
        ];
        cases.into_iter().map(example).collect()
    }
}

impl PagedAttentionKernel {
    fn check(&self, inputs: &[InputView<'_>], outputs: &[OutputView<'_>]) -> Result<Geometry, PluginError> {
        expect_args(OP, inputs, &[NUM_INPUTS, NUM_INPUTS_FP8], outputs, 1)?;
        let metas: Vec<TensorMeta> = inputs.iter().map(|a| a.meta().clone()).collect();
        let out = check_metas(&metas, &self.p, &DType::FLOATS, &CACHES)?;
        if inputs[Q].meta().dtype != self.act || inputs[K_CACHE].meta().dtype != self.cache {
            return Err(PluginError::new(format!(
                "{OP} (cuda): created for {} activations and {} caches, launched with {} and {}",
                self.act,
                self.cache,
                inputs[Q].meta(),
                inputs[K_CACHE].meta()
            )));
        }
        let g = Geometry::new(&self.p, &metas)?;
        let want: [(&str, usize, Vec<usize>); 6] = [
            ("q", Q, vec![g.t, g.h * g.d]),
            ("k", K, vec![g.t, g.kvh * g.d]),
            ("v", V, vec![g.t, g.kvh * g.d]),
            ("k_cache", K_CACHE, vec![g.nb, g.bs, g.kvh, g.d]),
            ("v_cache", V_CACHE, vec![g.nb, g.bs, g.kvh, g.d]),
            ("seq_lens", SEQ_LENS, vec![g.s]),
        ];
        for (name, i, shape) in want {
            rtllm_plugin_api::shapes::expect_shape(OP, name, &inputs[i], &shape)?;
        }
        rtllm_plugin_api::shapes::expect_shape(OP, "query_start", &inputs[QUERY_START], &[g.s + 1])?;
        if inputs.len() == NUM_INPUTS_FP8 {
            rtllm_plugin_api::shapes::expect_shape(OP, "k_scale", &inputs[K_SCALE], &[1])?;
            rtllm_plugin_api::shapes::expect_shape(OP, "v_scale", &inputs[V_SCALE], &[1])?;
        }
        rtllm_plugin_api::shapes::expect_shape(OP, "out", &outputs[0], &[g.t, g.h * g.d])?;
        if outputs[0].meta().dtype != out.dtype {
            return Err(PluginError::new(format!("{OP} (cuda): out must be {}, got {}", out.dtype, outputs[0].meta())));
        }
        let metas = inputs.iter().map(|a| (a.meta(), a.device())).chain(outputs.iter().map(|a| (a.meta(), a.device())));
        if let Some((meta, _)) = metas.into_iter().find(|(_, device)| *device != DeviceKind::Cuda) {
            return Err(PluginError::new(format!("{OP} (cuda): tensor {meta} is not on the GPU")));
        }
        Ok(g)
    }

    /// The geometry arguments every kernel takes after its pointers.
    fn geom_args(&self, a: KernelArgs, g: &Geometry) -> KernelArgs {
        a.i32(g.t as i32)
            .i32(g.s as i32)
            .i32(g.mb as i32)
            .i32(g.nb as i32)
            .i32(g.bs as i32)
            .i32(g.h as i32)
            .i32(g.kvh as i32)
            .i32(g.d as i32)
            .i32(self.p.sliding_window.min(i32::MAX as usize) as i32)
            .f32(self.p.scale)
    }
}

impl Kernel for PagedAttentionKernel {
    fn workspace_bytes(&self, inputs: &[TensorMeta]) -> Result<usize, PluginError> {
        if !matches!(inputs.len(), NUM_INPUTS | NUM_INPUTS_FP8) {
            return Err(PluginError::new(format!(
                "{OP} (cuda): workspace needs {NUM_INPUTS} (or {NUM_INPUTS_FP8}) input metas"
            )));
        }
        Geometry::new(&self.p, inputs)?;
        Ok(0)
    }

    fn launch(
        &self,
        ctx: &LaunchContext<'_>,
        inputs: &mut [InputView<'_>],
        outputs: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        let g = self.check(inputs, outputs)?;
        if g.t == 0 || g.s == 0 {
            return Ok(());
        }
        let out_dtype = outputs[0].meta().dtype;
        let (inputs, scales) = inputs.split_at_mut(NUM_INPUTS);
        // The FP8 cache's scales stay on the device (null for float caches: never read).
        let scale_ptrs = match scales {
            [ks, vs] => [device_ptr(OP, "k_scale", ks, DType::F32)?, device_ptr(OP, "v_scale", vs, DType::F32)?],
            _ => [0, 0],
        };
        let ([q, k, v, k_cache, v_cache, block_tables, seq_lens, query_start], [out]) = (inputs, outputs) else {
            return Err(PluginError::new(format!("{OP} (cuda): launch takes {NUM_INPUTS} inputs and 1 output")));
        };
        let act = self.act;
        let caches =
            [in_place_ptr(OP, "k_cache", k_cache, self.cache)?, in_place_ptr(OP, "v_cache", v_cache, self.cache)?];
        // The decode kernel reads cache rows with 16-byte loads.
        if let Some(name) = ["k_cache", "v_cache"].iter().zip(caches).find_map(|(n, a)| (a % 16 != 0).then_some(n)) {
            return Err(PluginError::new(format!("{OP} (cuda): {name} is not 16-byte aligned")));
        }
        let addrs = [
            device_ptr(OP, "q", q, act)?,
            device_ptr(OP, "k", k, act)?,
            device_ptr(OP, "v", v, act)?,
            caches[0],
            caches[1],
            device_ptr(OP, "block_tables", block_tables, DType::I32)?,
            device_ptr(OP, "seq_lens", seq_lens, DType::I32)?,
            device_ptr(OP, "query_start", query_start, DType::I32)?,
            device_ptr_mut(OP, "out", out, out_dtype)?,
            scale_ptrs[0],
            scale_ptrs[1],
        ];
        let args = || addrs.iter().fold(KernelArgs::new(), |a, &p| a.u64(p));
        let block = (THREADS, 1, 1);
        let plan = g.decode_plan(self.sms, self.max_cluster);
        let decode = Dims {
            grid: g.decode_grid(&plan),
            block,
            shared_bytes: decode_shared_bytes(plan.head_tile, g.d, plan.cluster),
        };
        let decode_args = self.geom_args(args(), &g).i32(plan.cluster as i32);
        // SAFETY: argument lists match the kernels' parameters (the pointers, k_scale and v_scale
        // last, then the geometry); every pointer is a device pointer of the checked shape; the kernels bound every index by these dims. Prefill
        // runs first on the stream; the two kernels write disjoint cache slots.
        unsafe {
            if g.may_prefill() {
                runtime::launch(
                    self.prefill,
                    Dims { grid: g.prefill_grid(), block, shared_bytes: shared_bytes(g.d) },
                    ctx.stream(),
                    &self.geom_args(args(), &g),
                )?;
            }
            if plan.cluster > 1 {
                runtime::launch_clustered(self.decode, decode, plan.cluster as u32, ctx.stream(), &decode_args)
            } else {
                runtime::launch(self.decode, decode, ctx.stream(), &decode_args)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtllm_plugin_api::shapes::attention::BLOCK_TABLES;

    #[test]
    fn examples_infer_with_q_dtype_outputs() {
        for ex in PagedAttention::examples() {
            let out = PagedAttention::infer(&ex.inputs, &ex.attrs).unwrap();
            assert_eq!(out[0].dtype, ex.inputs[0].dtype);
            assert_eq!(out[0].dims, ex.inputs[0].dims);
            let p = AttnParams::from_attrs(&ex.attrs).unwrap();
            Geometry::new(&p, &ex.inputs).unwrap();
        }
    }

    #[test]
    fn unsupported_head_dim_is_a_clear_error() {
        for d in [36usize, 264] {
            let mut ex = PagedAttention::examples().remove(0);
            ex.attrs.set("head_dim", d);
            let e = PagedAttention::infer(&ex.inputs, &ex.attrs).unwrap_err();
            assert!(e.message().contains(&format!("head_dim {d} is not supported")), "{e}");
            assert!(e.message().contains("multiple of 8 up to 256"), "{e}");
        }
    }

    #[test]
    fn examples_cover_small_head_dims() {
        let examples = PagedAttention::examples();
        for d in [16usize, 48] {
            // (sequences, tokens) of the examples with this head dim.
            let shapes: Vec<(usize, usize)> = examples
                .iter()
                .filter(|ex| ex.attrs.usize("head_dim").ok() == Some(d))
                .map(|ex| {
                    (ex.inputs[BLOCK_TABLES].dim(0).known().unwrap_or(0), ex.inputs[Q].dim(0).known().unwrap_or(0))
                })
                .collect();
            assert!(shapes.contains(&(1, 1)), "head_dim {d}: decode batch 1");
            assert!(shapes.contains(&(8, 8)), "head_dim {d}: decode batch 8");
            assert!(shapes.iter().any(|&(s, t)| t > s), "head_dim {d}: a prefill");
            let gqa = examples.iter().any(|ex| {
                ex.attrs.usize("head_dim").ok() == Some(d)
                    && ex.attrs.usize("num_heads").ok() > ex.attrs.usize("num_kv_heads").ok()
            });
            assert!(gqa, "head_dim {d}: grouped queries");
        }
    }

    #[test]
    fn launch_checks_before_touching_the_gpu() {
        let ex = PagedAttention::examples().remove(0);
        let p = AttnParams::from_attrs(&ex.attrs).unwrap();
        let k = PagedAttentionKernel {
            p,
            act: DType::F32,
            cache: DType::F32,
            prefill: Function(std::ptr::null_mut()),
            decode: Function(std::ptr::null_mut()),
            sms: 132,
            max_cluster: MAX_CLUSTER,
        };
        // SAFETY: the views are never dereferenced: the launch refuses them first.
        let mut args: Vec<InputView<'_>> =
            ex.inputs.iter().map(|m| unsafe { InputView::new(m.clone(), std::ptr::null(), DeviceKind::Cpu) }).collect();
        // SAFETY: as above.
        let out =
            unsafe { OutputView::new(TensorMeta::of(DType::F32, &[7, 512]), std::ptr::null_mut(), DeviceKind::Cuda) };
        let e = k.launch(&rtllm_plugin_api::LaunchEnv::cpu_sequential().context(), &mut args, &mut [out]).unwrap_err();
        assert!(e.message().contains("not on the GPU"), "{e}");
        assert_eq!(k.workspace_bytes(&ex.inputs).unwrap(), 0);
    }
}
