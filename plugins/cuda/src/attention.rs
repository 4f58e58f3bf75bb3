//! CUDA `paged_attention`: the same op as the CPU attention plugin (inputs, attributes, causal
//! sliding-window GQA semantics, caches updated in place), for f32/bf16/f16 activations and any
//! f32/bf16/f16 cache dtype. Four launches on the host's stream (kernels/cuda/attention.cu):
//! cache write, prefill tiles (sequences with >= 2 new tokens), split-K decode (sequences with
//! one new token) into the workspace, and the split combine. Grids come from the metas only.

use crate::attention_plan::{check_head_dim, shared_bytes, Geometry, THREADS};
use crate::kernel_source;
use crate::runtime::{self, Dims, Function, KernelArgs, KernelSource};
use rtllm_plugin_api::shapes::attention::{
    check_metas, AttnParams, BLOCK_TABLES, K, K_CACHE, NUM_INPUTS, OP, Q, QUERY_START, SEQ_LENS, V, V_CACHE,
};
use rtllm_plugin_api::shapes::expect_args;
use rtllm_plugin_api::{
    Attrs, DType, DeviceKind, Kernel, LaunchContext, Op, OpExample, PluginError, TensorArg, TensorMeta,
};

static SRC: KernelSource = kernel_source!("attention.cu");

pub struct PagedAttention;

/// The four kernels of one (activation, cache) dtype pair, and the attributes.
pub struct PagedAttentionKernel {
    p: AttnParams,
    act: DType,
    cache: DType,
    write: Function,
    prefill: Function,
    decode: Function,
    combine: Function,
}

fn suffix(d: DType) -> Result<&'static str, PluginError> {
    match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => Err(PluginError::new(format!("{OP} (cuda): dtype {other} is not f32, bf16 or f16"))),
    }
}

/// An example: heads, kv heads, head dim, block size, blocks, sequences, table width, tokens,
/// activation dtype, cache dtype, sliding window.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize, DType, DType, usize);

fn example((h, kvh, d, bs, nb, s, mb, t, act, cache, window): Case) -> OpExample {
    OpExample {
        inputs: vec![
            TensorMeta::of(act, &[t, h * d]),
            TensorMeta::of(act, &[t, kvh * d]),
            TensorMeta::of(act, &[t, kvh * d]),
            TensorMeta::of(cache, &[nb, bs, kvh, d]),
            TensorMeta::of(cache, &[nb, bs, kvh, d]),
            TensorMeta::of(DType::I32, &[s, mb]),
            TensorMeta::of(DType::I32, &[s]),
            TensorMeta::of(DType::I32, &[s + 1]),
        ]
        .into(),
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
        [NB, BS, KVH, D] (f32/bf16/f16, written in place with the new tokens' k/v), block_tables [S, MB] i32, \
        seq_lens [S] i32, query_start [S+1] i32 -> out [T, H*D] of q's dtype. Attrs num_heads, num_kv_heads, \
        head_dim (a multiple of 32 up to 256), scale (1/sqrt(D)), sliding_window (0 = none). Workspace: the \
        decode path's split-K partials. The int inputs need valid content (as the CPU provider's).";
    type Kernel = PagedAttentionKernel;

    fn dtypes() -> Vec<DType> {
        vec![DType::F32, DType::F16, DType::BF16, DType::I32]
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        let p = AttnParams::from_attrs(attrs)?;
        check_head_dim(p.head_dim)?;
        Ok(vec![check_metas(inputs, &p, &DType::FLOATS, &DType::FLOATS)?])
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<PagedAttentionKernel, PluginError> {
        let p = AttnParams::from_attrs(attrs)?;
        check_head_dim(p.head_dim)?;
        check_metas(inputs, &p, &DType::FLOATS, &DType::FLOATS)?;
        let (act, cache) = (inputs[Q].dtype, inputs[K_CACHE].dtype);
        let pair = format!("{}_{}", suffix(act)?, suffix(cache)?);
        let write = runtime::function(&SRC, &format!("pa_write_cache_{pair}"))?;
        let prefill = runtime::function(&SRC, &format!("pa_prefill_{pair}"))?;
        let decode = runtime::function(&SRC, &format!("pa_decode_{pair}"))?;
        let combine = runtime::function(&SRC, &format!("pa_combine_{}", suffix(act)?))?;
        let shared = shared_bytes(p.head_dim);
        runtime::set_max_dynamic_shared(prefill, shared)?;
        runtime::set_max_dynamic_shared(decode, shared)?;
        Ok(PagedAttentionKernel { p, act, cache, write, prefill, decode, combine })
    }

    fn examples() -> Vec<OpExample> {
        use DType::{BF16, F16, F32};
        let cases: [Case; 10] = [
            (8, 2, 64, 16, 24, 3, 6, 7, F32, F32, 0),
            (8, 2, 64, 16, 24, 3, 6, 7, BF16, BF16, 0),
            (8, 2, 64, 16, 24, 3, 6, 7, F16, F16, 0),
            (4, 4, 128, 32, 16, 4, 4, 40, BF16, BF16, 0),
            (8, 1, 128, 16, 24, 3, 8, 30, F32, BF16, 0),
            (8, 1, 32, 16, 12, 2, 6, 9, F16, F16, 8),
            (12, 3, 64, 16, 64, 5, 12, 70, F32, F32, 20),
            (64, 1, 64, 16, 32, 3, 8, 5, BF16, BF16, 0),
            (4, 2, 256, 16, 16, 2, 8, 5, F16, F16, 0),
            // Long decode contexts: the split-K path (capacity 64 * 16 = 1024 keys).
            (16, 4, 128, 16, 260, 4, 64, 4, BF16, BF16, 0),
        ];
        cases.into_iter().map(example).collect()
    }
}

impl PagedAttentionKernel {
    fn check(&self, inputs: &[TensorArg], outputs: &[TensorArg]) -> Result<Geometry, PluginError> {
        expect_args(OP, inputs, &[NUM_INPUTS], outputs, 1)?;
        let metas: Vec<TensorMeta> = inputs.iter().map(|a| a.meta.clone()).collect();
        let out = check_metas(&metas, &self.p, &DType::FLOATS, &DType::FLOATS)?;
        if inputs[Q].meta.dtype != self.act || inputs[K_CACHE].meta.dtype != self.cache {
            return Err(PluginError::new(format!(
                "{OP} (cuda): created for {} activations and {} caches, launched with {} and {}",
                self.act, self.cache, inputs[Q].meta, inputs[K_CACHE].meta
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
        rtllm_plugin_api::shapes::expect_shape(OP, "out", &outputs[0], &[g.t, g.h * g.d])?;
        if outputs[0].meta.dtype != out.dtype {
            return Err(PluginError::new(format!("{OP} (cuda): out must be {}, got {}", out.dtype, outputs[0].meta)));
        }
        if inputs[K_CACHE].data == inputs[V_CACHE].data && !inputs[K_CACHE].data.is_null() {
            return Err(PluginError::new(format!("{OP} (cuda): k_cache and v_cache are the same buffer")));
        }
        if let Some(a) = inputs.iter().chain(outputs).find(|a| a.device != DeviceKind::Cuda) {
            return Err(PluginError::new(format!("{OP} (cuda): tensor {} is not on the GPU", a.meta)));
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
        if inputs.len() != NUM_INPUTS {
            return Err(PluginError::new(format!("{OP} (cuda): workspace needs {NUM_INPUTS} input metas")));
        }
        Ok(Geometry::new(&self.p, inputs)?.workspace_bytes())
    }

    fn launch(&self, ctx: &LaunchContext, inputs: &[TensorArg], outputs: &[TensorArg]) -> Result<(), PluginError> {
        let g = self.check(inputs, outputs)?;
        if g.t == 0 || g.s == 0 {
            return Ok(());
        }
        let splits = g.splits();
        let ws_floats = g.workspace_floats_for(g.s);
        if ctx.workspace.is_null() || ctx.workspace_bytes < ws_floats * 4 {
            return Err(PluginError::new(format!(
                "{OP} (cuda): workspace of {} bytes is smaller than the {} bytes of split-K scratch",
                ctx.workspace_bytes,
                ws_floats * 4
            )));
        }
        let ptr = |i: usize| inputs[i].data as *const u8;
        let (bt, sl, qs, out) = (ptr(BLOCK_TABLES), ptr(SEQ_LENS), ptr(QUERY_START), outputs[0].data as *const u8);
        let (kc, vc) = (ptr(K_CACHE), ptr(V_CACHE));
        let ws_acc = ctx.workspace as *const f32;
        let partials = g.s * g.h * splits;
        // SAFETY: offsets within the workspace checked above (acc, then m, then l).
        let (ws_m, ws_l) = unsafe { (ws_acc.add(partials * g.d), ws_acc.add(partials * (g.d + 1))) };
        let shared = shared_bytes(g.d);
        let write = KernelArgs::new().ptr(ptr(K)).ptr(ptr(V)).ptr(kc).ptr(vc).ptr(bt).ptr(sl).ptr(qs);
        let prefill = KernelArgs::new().ptr(ptr(Q)).ptr(kc).ptr(vc).ptr(bt).ptr(sl).ptr(qs).ptr(out);
        let decode =
            KernelArgs::new().ptr(ptr(Q)).ptr(kc).ptr(vc).ptr(bt).ptr(sl).ptr(qs).ptr(ws_acc).ptr(ws_m).ptr(ws_l);
        let combine = KernelArgs::new().ptr(qs).ptr(ws_acc).ptr(ws_m).ptr(ws_l).ptr(out);
        let block = (THREADS, 1, 1);
        // SAFETY: argument lists match the kernels' parameters; every pointer is a device
        // pointer of the checked shape; the kernels bound every index by these dims.
        unsafe {
            runtime::launch(
                self.write,
                Dims { grid: (g.t as u32, 1, 1), block, shared_bytes: 0 },
                ctx.stream,
                &self.geom_args(write, &g),
            )?;
            runtime::launch(
                self.prefill,
                Dims { grid: g.prefill_grid(), block, shared_bytes: shared },
                ctx.stream,
                &self.geom_args(prefill, &g),
            )?;
            runtime::launch(
                self.decode,
                Dims { grid: g.decode_grid(), block, shared_bytes: shared },
                ctx.stream,
                &self.geom_args(decode, &g).i32(splits as i32),
            )?;
            runtime::launch(
                self.combine,
                Dims { grid: g.combine_grid(), block, shared_bytes: 0 },
                ctx.stream,
                &self.geom_args(combine, &g).i32(splits as i32),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_infer_with_q_dtype_outputs() {
        for ex in PagedAttention::examples() {
            let out = PagedAttention::infer(&ex.inputs, &ex.attrs).unwrap();
            assert_eq!(out[0].dtype, ex.inputs[0].dtype);
            assert_eq!(out[0].dims, ex.inputs[0].dims);
            let p = AttnParams::from_attrs(&ex.attrs).unwrap();
            let g = Geometry::new(&p, &ex.inputs).unwrap();
            assert!(g.workspace_bytes() >= g.workspace_floats_for(g.s) * 4);
        }
    }

    #[test]
    fn unsupported_head_dim_is_a_clear_error() {
        let mut ex = PagedAttention::examples().remove(0);
        ex.attrs.set("head_dim", 48usize);
        let e = PagedAttention::infer(&ex.inputs, &ex.attrs).unwrap_err();
        assert!(e.message().contains("head_dim 48 is not supported"), "{e}");
    }

    #[test]
    fn launch_checks_before_touching_the_gpu() {
        let ex = PagedAttention::examples().remove(0);
        let p = AttnParams::from_attrs(&ex.attrs).unwrap();
        let k = PagedAttentionKernel {
            p,
            act: DType::F32,
            cache: DType::F32,
            write: Function(std::ptr::null_mut()),
            prefill: Function(std::ptr::null_mut()),
            decode: Function(std::ptr::null_mut()),
            combine: Function(std::ptr::null_mut()),
        };
        let args: Vec<TensorArg> = ex
            .inputs
            .iter()
            .map(|m| unsafe { TensorArg::new(m.clone(), std::ptr::null_mut(), DeviceKind::Cpu) })
            .collect();
        let out =
            unsafe { TensorArg::new(TensorMeta::of(DType::F32, &[7, 512]), std::ptr::null_mut(), DeviceKind::Cuda) };
        let e = k.launch(&LaunchContext::cpu_sequential(), &args, &[out]).unwrap_err();
        assert!(e.message().contains("not on the GPU"), "{e}");
        assert!(k.workspace_bytes(&ex.inputs).unwrap() > 0);
    }
}
