//! The fusion pass on small graphs built through the engine's graph builder, against ops
//! declared in this process: what fuses when the pattern is exact, what stays plain when a
//! bias, a second reader, an early reader, a disabled op or a provider's dtypes forbid it, the
//! priority order, and the quantized-weight fallback.

use super::fuse;
use crate::engine::graph::ValueSource;
use crate::engine::{EngineGraphBuilder, Graph, SelectionConfig, Selector, WeightMetas};
use crate::registry::Registry;
use rtllm_models::{BuildError, GraphBuilder, Value};
use rtllm_plugin_api::{declare, Attrs, DType, Dim, Kernel, LaunchContext, Op, OpDecl, PluginError};
use rtllm_plugin_api::{InputView, OutputView, TensorMeta};
use std::collections::BTreeMap;

/// The kernel of every fake op: never created by the pass.
struct NoKernel;

impl Kernel for NoKernel {
    fn launch(
        &self,
        _: &LaunchContext<'_>,
        _: &mut [InputView<'_>],
        _: &mut [OutputView<'_>],
    ) -> Result<(), PluginError> {
        Err(PluginError::new("fake op"))
    }
}

/// `[x rows, w rows]` in x's dtype.
fn rows_by(x: &TensorMeta, w: &TensorMeta) -> TensorMeta {
    TensorMeta::new(x.dtype, [x.dims[0].clone(), w.dims[0].clone()])
}

type Infer = fn(&[TensorMeta]) -> Vec<TensorMeta>;

macro_rules! fake_op {
    ($ty:ident, $name:literal, [$($d:ident),*], $infer:expr) => {
        struct $ty;
        impl Op for $ty {
            const NAME: &'static str = $name;
            type Kernel = NoKernel;
            fn dtypes() -> Vec<DType> {
                vec![$(DType::$d),*]
            }
            fn infer(inputs: &[TensorMeta], _: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
                let f: Infer = $infer;
                Ok(f(inputs))
            }
            fn create(_: &[TensorMeta], _: &Attrs) -> Result<NoKernel, PluginError> {
                Err(PluginError::new("fake op"))
            }
        }
    };
}

fake_op!(Matmul, "matmul", [F32, Q8_0], |i| vec![rows_by(&i[0], &i[1])]);
fake_op!(Rope, "rope", [F32, I32], |i| vec![i[0].clone()]);
fake_op!(SiluMul, "silu_mul", [F32], |i| vec![i[0].clone()]);
fake_op!(Add, "add", [F32], |i| vec![i[0].clone()]);
fake_op!(RmsNorm, "rmsnorm", [F32], |i| vec![i[0].clone()]);
fake_op!(QkvRope, "qkv_rope_matmul", [F32, I32], |i| i[1..4].iter().map(|w| rows_by(&i[0], w)).collect());
fake_op!(QkvRopeF16, "qkv_rope_matmul", [F16, I32], |i| i[1..4].iter().map(|w| rows_by(&i[0], w)).collect());
fake_op!(Swiglu, "swiglu_matmul", [F32], |i| vec![rows_by(&i[0], &i[1])]);
fake_op!(Grouped, "grouped_matmul", [F32], |i| i[1..].iter().map(|w| rows_by(&i[0], w)).collect());
fake_op!(FusedAddNorm, "fused_add_rmsnorm", [F32], |i| vec![i[0].clone(), i[0].clone()]);
fake_op!(Fp8Matmul, "fp8_matmul", [F32, F8_E4M3], |i| vec![rows_by(&i[0], &i[1])]);
// (x, w_0..w_{n-1}, s_0..s_{n-1}[, i_0..]): n = the number of F8 inputs.
fake_op!(Fp8Grouped, "fp8_grouped_matmul", [F32, F8_E4M3], |i| i[1..]
    .iter()
    .take_while(|w| w.dtype == DType::F8_E4M3)
    .map(|w| rows_by(&i[0], w))
    .collect());

fn plain_ops() -> Vec<OpDecl> {
    vec![declare::<Matmul>(), declare::<Rope>(), declare::<SiluMul>(), declare::<Add>(), declare::<RmsNorm>()]
}

fn all_fused() -> Vec<OpDecl> {
    vec![declare::<QkvRope>(), declare::<Swiglu>(), declare::<Grouped>(), declare::<FusedAddNorm>()]
}

fn registry(extra: Vec<OpDecl>) -> Registry {
    let mut r = Registry::empty();
    r.add_in_process("fake", "0.0.0", plain_ops().into_iter().chain(extra).collect());
    r
}

/// Weight metas by name.
struct Weights(BTreeMap<String, TensorMeta>);

impl WeightMetas for Weights {
    fn weight_meta(&self, name: &str) -> Option<TensorMeta> {
        self.0.get(name).cloned()
    }
    fn nearest_weight_names(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn fp8_activation(&self) -> Option<rtllm_plugin_api::shapes::fp8::Fp8Activation> {
        let fp8 = self.0.values().any(|m| m.dtype == DType::F8_E4M3);
        fp8.then_some(rtllm_plugin_api::shapes::fp8::Fp8Activation::Static)
    }
}

const H: usize = 8;

fn weights(dtype: DType) -> Weights {
    let mut w = BTreeMap::new();
    for (name, rows) in [("q", 8), ("k", 4), ("v", 4), ("gate", 16), ("up", 16)] {
        w.insert(name.to_string(), TensorMeta::of(dtype, &[rows, H]));
        w.insert(format!("{name}.bias"), TensorMeta::of(DType::F32, &[rows]));
    }
    w.insert("norm".into(), TensorMeta::of(DType::F32, &[H]));
    Weights(w)
}

fn activation() -> TensorMeta {
    TensorMeta::new(DType::F32, [Dim::sym("T"), Dim::Known(H as u64)])
}

/// Plans `body` on `ops` (plus the plain ops) with `config`, then runs the fusion pass.
fn plan(
    extra: Vec<OpDecl>,
    config: &SelectionConfig,
    dtype: DType,
    body: impl Fn(&mut dyn GraphBuilder) -> Result<(), BuildError>,
) -> Graph {
    let registry = registry(extra);
    let weights = weights(dtype);
    let mut b = EngineGraphBuilder::new(&registry, &weights, config);
    body(&mut b).expect("the plain graph builds");
    let graph = b.finish().expect("has outputs");
    fuse(graph, Selector::new(&registry, config)).expect("the pass keeps the graph valid")
}

fn ops(g: &Graph) -> Vec<&str> {
    g.nodes.iter().map(|n| n.op.as_str()).collect()
}

fn matmul(b: &mut dyn GraphBuilder, x: Value, name: &str, bias: bool) -> Result<Value, BuildError> {
    let w = b.weight(name)?;
    if bias {
        let bv = b.weight(&format!("{name}.bias"))?;
        return b.op1("matmul", &[x, w, bv], Attrs::new());
    }
    b.op1("matmul", &[x, w], Attrs::new())
}

/// Q/K/V projections of `x`, q and k rotated; `raw_q_output` also exposes q before its rope.
fn attention_inputs(b: &mut dyn GraphBuilder, bias: bool, raw_q_output: bool) -> Result<(), BuildError> {
    let x = b.input("x", activation())?;
    let pos = b.input("positions", TensorMeta::new(DType::I32, [Dim::sym("T")]))?;
    let q = matmul(b, x, "q", bias)?;
    let k = matmul(b, x, "k", bias)?;
    let v = matmul(b, x, "v", bias)?;
    let attrs = Attrs::new().with("head_dim", 4usize);
    let q_rot = b.op1("rope", &[q, pos], attrs.clone())?;
    let k_rot = b.op1("rope", &[k, pos], attrs)?;
    if raw_q_output {
        b.output("q_raw", q)?;
    }
    b.output("q", q_rot)?;
    b.output("k", k_rot)?;
    b.output("v", v)
}

#[test]
fn qkv_and_rope_fuse_when_exact() {
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| attention_inputs(b, false, false));
    assert_eq!(ops(&g), ["qkv_rope_matmul"], "qkv_rope_matmul comes before grouped_matmul");
    let n = &g.nodes[0];
    let outs: Vec<Value> = ["q", "k", "v"].iter().map(|o| g.output(o).expect("output")).collect();
    assert_eq!(n.outputs, outs, "the fused node writes the graph's q, k and v");
    assert_eq!(n.inputs[0], g.input("x").expect("x"));
    assert_eq!(n.inputs[4], g.input("positions").expect("positions"));
    assert_eq!(n.attrs, Attrs::new().with("head_dim", 4usize));
    assert_eq!(g.values.len(), 2 + 3 + 3, "inputs, weights and outputs only: the unrotated q and k are gone");
}

#[test]
fn a_bias_keeps_the_plain_projections() {
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| attention_inputs(b, true, false));
    assert_eq!(ops(&g), ["matmul", "matmul", "matmul", "rope", "rope"]);
}

#[test]
fn a_second_reader_of_an_intermediate_keeps_the_rope_separate() {
    // q before its rope is a graph output: qkv_rope_matmul would hide it, grouped_matmul does not.
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| attention_inputs(b, false, true));
    assert_eq!(ops(&g), ["grouped_matmul", "rope", "rope"]);
    assert_eq!(g.nodes[0].outputs[0], g.output("q_raw").expect("q_raw"));
}

#[test]
fn a_provider_rejecting_the_dtypes_leaves_the_plain_graph() {
    let g = plan(vec![declare::<QkvRopeF16>()], &SelectionConfig::default(), DType::F32, |b| {
        attention_inputs(b, false, false)
    });
    assert_eq!(ops(&g), ["matmul", "matmul", "matmul", "rope", "rope"]);
    assert!(g.nodes.iter().all(|n| n.provider.plugin == "fake"));
}

#[test]
fn quantized_weights_fall_back_to_float_for_a_fused_op() {
    // The plain matmul reads q8_0; the fused op only f32: its weights are read as f32, and the
    // q8_0 copies no node reads any more are gone from the graph.
    let g = plan(vec![declare::<QkvRope>()], &SelectionConfig::default(), DType::Q8_0, |b| {
        attention_inputs(b, false, false)
    });
    assert_eq!(ops(&g), ["qkv_rope_matmul"]);
    let uses = g.weight_uses();
    assert_eq!(uses, ["k", "q", "v"].map(|n| (n.to_string(), DType::F32)));
    // Without a fallback dtype the fused op cannot read them: the plain q8_0 graph stays.
    let config = SelectionConfig { weight_fallback_dtype: None, ..Default::default() };
    let g = plan(vec![declare::<QkvRope>()], &config, DType::Q8_0, |b| attention_inputs(b, false, false));
    assert_eq!(ops(&g), ["matmul", "matmul", "matmul", "rope", "rope"]);
    assert!(g.weight_uses().iter().all(|(_, d)| *d == DType::Q8_0));
}

#[test]
fn a_disabled_fused_op_is_never_chosen() {
    let config = SelectionConfig { disabled_ops: vec!["qkv_rope_matmul".into()], ..Default::default() };
    let g = plan(all_fused(), &config, DType::F32, |b| attention_inputs(b, false, false));
    assert_eq!(ops(&g), ["grouped_matmul", "rope", "rope"]);
}

/// silu(x·gateᵀ) ⊙ (x·upᵀ); `gate_output` also exposes the gate projection.
fn gated_mlp(b: &mut dyn GraphBuilder, gate_output: bool) -> Result<(), BuildError> {
    let x = b.input("x", activation())?;
    let gate = matmul(b, x, "gate", false)?;
    let up = matmul(b, x, "up", false)?;
    let act = b.op1("silu_mul", &[gate, up], Attrs::new())?;
    if gate_output {
        b.output("gate", gate)?;
    }
    b.output("act", act)
}

#[test]
fn gated_mlp_fuses_into_swiglu_else_grouped() {
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| gated_mlp(b, false));
    assert_eq!(ops(&g), ["swiglu_matmul"]);
    assert_eq!(g.nodes[0].outputs, [g.output("act").expect("act")]);
    let g = plan(vec![declare::<Grouped>()], &SelectionConfig::default(), DType::F32, |b| gated_mlp(b, false));
    assert_eq!(ops(&g), ["grouped_matmul", "silu_mul"]);
    // A second reader of the gate projection: swiglu_matmul would hide it.
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| gated_mlp(b, true));
    assert_eq!(ops(&g), ["grouped_matmul", "silu_mul"]);
}

/// Two residual adds, each normalized; `early_reader` reads the first sum before its norm.
fn residual_stream(b: &mut dyn GraphBuilder, early_reader: bool) -> Result<(), BuildError> {
    let x = b.input("x", activation())?;
    let residual = b.input("residual", activation())?;
    let w = b.weight("norm")?;
    let eps = Attrs::new().with("eps", 1e-5);
    let sum = b.op1("add", &[x, residual], Attrs::new())?;
    if early_reader {
        let twice = b.op1("add", &[sum, sum], Attrs::new())?;
        b.output("twice", twice)?;
    }
    let normed = b.op1("rmsnorm", &[sum, w], eps.clone())?;
    let sum2 = b.op1("add", &[normed, sum], Attrs::new())?;
    let normed2 = b.op1("rmsnorm", &[sum2, w], eps)?;
    b.output("out", normed2)
}

#[test]
fn add_and_rmsnorm_fuse_and_the_sum_stays_readable() {
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| residual_stream(b, false));
    assert_eq!(ops(&g), ["fused_add_rmsnorm", "fused_add_rmsnorm"]);
    let (first, second) = (&g.nodes[0], &g.nodes[1]);
    assert_eq!(first.attrs, Attrs::new().with("eps", 1e-5));
    // The second add read (normed, sum): the fused node reads the first's outputs 0 and 1.
    assert_eq!(second.inputs[..2], [first.outputs[0], first.outputs[1]]);
    assert_eq!(second.outputs[0], g.output("out").expect("out"));

    let config = SelectionConfig { disabled_ops: vec!["fused_add_rmsnorm".into()], ..Default::default() };
    let g = plan(all_fused(), &config, DType::F32, |b| residual_stream(b, false));
    assert_eq!(ops(&g), ["add", "rmsnorm", "add", "rmsnorm"]);
}

#[test]
fn a_sum_read_before_its_norm_is_not_fused() {
    let g = plan(all_fused(), &SelectionConfig::default(), DType::F32, |b| residual_stream(b, true));
    assert_eq!(ops(&g), ["add", "add", "rmsnorm", "fused_add_rmsnorm"]);
}

// (x, wq, wk, wv, sq, sk, sv[, iq, ik, iv], positions) and (x, w_gate, w_up, s_gate, s_up[, ..]).
fake_op!(Fp8QkvRope, "fp8_qkv_rope_matmul", [F32, F8_E4M3, I32], |i| i[1..4]
    .iter()
    .map(|w| rows_by(&i[0], w))
    .collect());
fake_op!(Fp8Swiglu, "fp8_swiglu_matmul", [F32, F8_E4M3], |i| vec![rows_by(&i[0], &i[1])]);

/// FP8 weights with per-channel scales and one shared input scale, for `fp8_matmul` graphs.
fn fp8_weights() -> Weights {
    let mut w = BTreeMap::new();
    for (name, rows) in [("q", 8), ("k", 4), ("v", 4), ("gate", 8), ("up", 8)] {
        w.insert(name.to_string(), TensorMeta::of(DType::F8_E4M3, &[rows, H]));
        w.insert(format!("{name}.weight_scale"), TensorMeta::of(DType::F32, &[rows]));
        w.insert(format!("{name}.input_scale"), TensorMeta::of(DType::F32, &[1]));
    }
    // A checkpoint-named FP8 linear with a bf16 bias (as Qwen2's q/k/v in an FP8 checkpoint).
    w.insert("p.weight".into(), TensorMeta::of(DType::F8_E4M3, &[8, H]));
    w.insert("p.weight_scale".into(), TensorMeta::of(DType::F32, &[8]));
    w.insert("p.input_scale".into(), TensorMeta::of(DType::F32, &[1]));
    w.insert("p.bias".into(), TensorMeta::of(DType::BF16, &[8]));
    Weights(w)
}

/// `name` as an `fp8_matmul` of x; `shared` makes it read q's input scale (static).
fn fp8_linear(
    b: &mut dyn GraphBuilder,
    x: Value,
    name: &str,
    act: rtllm_plugin_api::shapes::fp8::Fp8Activation,
    shared: bool,
) -> Result<Value, BuildError> {
    let mut inputs = vec![x, b.weight(name)?, b.weight(&format!("{name}.weight_scale"))?];
    if act.scale_inputs() == 1 {
        let scale = if shared { "q" } else { name };
        inputs.push(b.weight(&format!("{scale}.input_scale"))?);
    }
    b.op1("fp8_matmul", &inputs, act.attrs())
}

/// q, k, v as `fp8_matmul`s of one x; `shared` makes them read one input scale (static).
fn fp8_qkv(
    b: &mut dyn GraphBuilder,
    act: rtllm_plugin_api::shapes::fp8::Fp8Activation,
    shared: bool,
) -> Result<(), BuildError> {
    let x = b.input("x", activation())?;
    for name in ["q", "k", "v"] {
        let y = fp8_linear(b, x, name, act, shared)?;
        b.output(name, y)?;
    }
    Ok(())
}

/// An FP8 attention input block (q and k rotated) and an FP8 gated MLP on one x.
fn fp8_block(b: &mut dyn GraphBuilder, act: rtllm_plugin_api::shapes::fp8::Fp8Activation) -> Result<(), BuildError> {
    let x = b.input("x", activation())?;
    let pos = b.input("positions", TensorMeta::new(DType::I32, [Dim::sym("T")]))?;
    let attrs = Attrs::new().with("head_dim", 4usize);
    let q = fp8_linear(b, x, "q", act, true)?;
    let k = fp8_linear(b, x, "k", act, true)?;
    let v = fp8_linear(b, x, "v", act, true)?;
    for (name, y) in [("q", q), ("k", k)] {
        let rotated = b.op1("rope", &[y, pos], attrs.clone())?;
        b.output(name, rotated)?;
    }
    b.output("v", v)?;
    let h = b.input("h", activation())?;
    let gate = fp8_linear(b, h, "gate", act, true)?;
    let up = fp8_linear(b, h, "up", act, true)?;
    let y = b.op1("silu_mul", &[gate, up], Attrs::new())?;
    b.output("act", y)
}

fn fp8_plan(extra: Vec<OpDecl>, body: impl Fn(&mut dyn GraphBuilder) -> Result<(), BuildError>) -> Graph {
    let registry = registry(extra);
    let weights = fp8_weights();
    let config = SelectionConfig::default();
    let mut b = EngineGraphBuilder::new(&registry, &weights, &config);
    body(&mut b).expect("the plain graph builds");
    let graph = b.finish().expect("has outputs");
    fuse(graph, Selector::new(&registry, &config)).expect("the pass keeps the graph valid")
}

#[test]
fn fp8_matmuls_of_one_x_group_when_a_provider_declares_it() {
    use rtllm_plugin_api::shapes::fp8::Fp8Activation;
    let fp8 = || vec![declare::<Fp8Matmul>(), declare::<Fp8Grouped>()];
    let dynamic = Fp8Activation::Dynamic { upper_bound: None };
    let g = fp8_plan(fp8(), |b| fp8_qkv(b, dynamic, false));
    assert_eq!(ops(&g), ["fp8_grouped_matmul"]);
    let n = &g.nodes[0];
    assert_eq!(n.inputs.len(), 7, "x, three weights, three scales");
    assert_eq!(n.attrs, dynamic.attrs());
    let outs: Vec<Value> = ["q", "k", "v"].iter().map(|o| g.output(o).expect("output")).collect();
    assert_eq!(n.outputs, outs);

    // Static parts fuse when they read one input scale tensor, not when each has its own.
    let g = fp8_plan(fp8(), |b| fp8_qkv(b, Fp8Activation::Static, true));
    assert_eq!(ops(&g), ["fp8_grouped_matmul"]);
    assert_eq!(g.nodes[0].inputs.len(), 10);
    let g = fp8_plan(fp8(), |b| fp8_qkv(b, Fp8Activation::Static, false));
    assert_eq!(ops(&g), ["fp8_matmul"; 3]);

    // Without a provider of the fused op the plain graph stays.
    let g = fp8_plan(vec![declare::<Fp8Matmul>()], |b| fp8_qkv(b, dynamic, false));
    assert_eq!(ops(&g), ["fp8_matmul"; 3]);
}

#[test]
fn fp8_attention_inputs_and_gated_mlp_take_the_epilogue_ops() {
    use rtllm_plugin_api::shapes::fp8::Fp8Activation;
    let all = || vec![declare::<Fp8Matmul>(), declare::<Fp8Grouped>(), declare::<Fp8QkvRope>(), declare::<Fp8Swiglu>()];
    for act in [Fp8Activation::Static, Fp8Activation::Dynamic { upper_bound: Some(3.0) }] {
        let g = fp8_plan(all(), |b| fp8_block(b, act));
        assert_eq!(ops(&g), ["fp8_qkv_rope_matmul", "fp8_swiglu_matmul"], "{act:?}");
        let (qkv, mlp) = (&g.nodes[0], &g.nodes[1]);
        let outs: Vec<Value> = ["q", "k", "v"].iter().map(|o| g.output(o).expect("output")).collect();
        assert_eq!(qkv.outputs, outs);
        let static_scales = if act == Fp8Activation::Static { 3 } else { 0 };
        assert_eq!(qkv.inputs.len(), 1 + 3 + 3 + static_scales + 1, "x, weights, scales, [input scales], positions");
        assert_eq!(qkv.inputs.last().copied(), g.input("positions"));
        let mut want = act.attrs();
        want.set("head_dim", 4usize);
        assert_eq!(qkv.attrs, want, "the fp8 attributes beside the rope ones");
        assert_eq!(mlp.outputs, [g.output("act").expect("act")]);
        assert_eq!(mlp.inputs.len(), 1 + 2 + 2 + 2 * static_scales / 3);
        assert_eq!(mlp.attrs, act.attrs());
    }
    // Without the epilogue ops: grouped FP8 linears, rope and silu_mul stay.
    let g = fp8_plan(vec![declare::<Fp8Matmul>(), declare::<Fp8Grouped>()], |b| fp8_block(b, Fp8Activation::Static));
    assert_eq!(ops(&g), ["fp8_grouped_matmul", "rope", "rope", "fp8_grouped_matmul", "silu_mul"]);
}

#[test]
fn a_half_precision_bias_of_an_fp8_linear_is_read_as_f32_by_an_f32_engine() {
    use rtllm_plugin_api::shapes::fp8::Fp8Activation;
    let g = fp8_plan(vec![declare::<Fp8Matmul>()], |b| {
        let x = b.input("x", activation())?;
        let (w, bias) = (b.weight("p.weight")?, b.weight("p.bias")?);
        let y = b.op1("matmul", &[x, w, bias], Attrs::new())?;
        b.output("p", y)
    });
    assert_eq!(ops(&g), ["fp8_matmul"]);
    let n = &g.nodes[0];
    assert_eq!(n.attrs, Fp8Activation::Static.attrs(), "the weights' scheme");
    let bias = *n.inputs.last().expect("a bias input");
    assert_eq!(g.meta(bias), &TensorMeta::of(DType::F32, &[8]));
    assert!(matches!(&g.values[bias.0].source, ValueSource::Weight { name, dtype: DType::F32 } if name == "p.bias"));
}
