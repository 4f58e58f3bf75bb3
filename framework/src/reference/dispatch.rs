//! Runs a built-in op's reference by name on host tensors, following each op's input contract
//! (input order, optional inputs, attributes). Outputs are f32 (argmax: i32).

use super::{attention, basic, fp8, layer_norm, rope, sample, HostTensor, RefResult, ReferenceError};
use rtllm_plugin_api::{Attrs, DType};

/// The ops that have a built-in reference.
pub const BUILTIN_OPS: &[&str] = &[
    "add",
    "argmax",
    "embedding",
    "fp8_matmul",
    "fused_add_rmsnorm",
    "gather_rows",
    "layer_norm",
    "matmul",
    "paged_attention",
    "rmsnorm",
    "rope",
    "sample",
    "silu_mul",
];

/// Ops only device plugins provide (so no CPU plugin needs to): fused forms of built-in ops,
/// whose references are built from the built-in ones, and the GPU's dummy-weight generator.
pub const FUSED_OPS: &[&str] = &[
    "grouped_matmul",
    "qkv_rope_matmul",
    "swiglu_matmul",
    "dummy_fill",
    "fp8_grouped_matmul",
    "fp8_qkv_rope_matmul",
    "fp8_swiglu_matmul",
];

pub fn has_reference(op: &str) -> bool {
    BUILTIN_OPS.contains(&op) || FUSED_OPS.contains(&op)
}

fn counts(op: &str, inputs: &[HostTensor], allowed: &[usize]) -> RefResult<()> {
    if allowed.contains(&inputs.len()) {
        return Ok(());
    }
    Err(ReferenceError::Shape(format!("{op} takes {allowed:?} inputs, got {}", inputs.len())))
}

fn dims<const N: usize>(op: &str, what: &str, t: &HostTensor) -> RefResult<[usize; N]> {
    t.shape
        .as_slice()
        .try_into()
        .map_err(|_| ReferenceError::Shape(format!("{op}: {what} must have rank {N}, got {:?}", t.shape)))
}

fn ints(t: &HostTensor) -> RefResult<&[i32]> {
    Ok(t.as_slice::<i32>()?)
}

fn eps(attrs: &Attrs) -> RefResult<f64> {
    attrs.float_or("eps", 1e-6).map_err(|e| ReferenceError::Attr(e.to_string()))
}

fn f32_out(shape: &[usize], v: &[f32]) -> RefResult<HostTensor> {
    Ok(HostTensor::from_f32(DType::F32, shape, v)?)
}

/// Runs the reference of `op`. Inputs the op updates in place (the KV caches of
/// `paged_attention`, as its providers declare in `OpDecl::in_place`) are updated here too.
pub fn run_reference(op: &str, inputs: &mut [HostTensor], attrs: &Attrs) -> RefResult<Vec<HostTensor>> {
    match op {
        "matmul" => {
            counts(op, inputs, &[2, 3])?;
            let [t, k] = dims(op, "x", &inputs[0])?;
            let [n, k2] = dims(op, "w", &inputs[1])?;
            if k != k2 {
                return Err(ReferenceError::Shape(format!("matmul: x [{t},{k}] vs w [{n},{k2}]")));
            }
            let bias = inputs.get(2).map(|b| b.to_f32()).transpose()?;
            let y = basic::matmul(&inputs[0].to_f32()?, &inputs[1].to_f32()?, bias.as_deref(), t, k, n)?;
            Ok(vec![f32_out(&[t, n], &y)?])
        }
        "fp8_matmul" => fp8::fp8_matmul(inputs, attrs),
        "fp8_grouped_matmul" => fp8::fp8_grouped_matmul(inputs, attrs),
        "fp8_qkv_rope_matmul" => {
            let (positions, linear) = inputs.split_last().ok_or_else(|| {
                ReferenceError::Shape("fp8_qkv_rope_matmul takes x, 3 parts and positions, got no inputs".into())
            })?;
            let mut ys = fp8::fp8_grouped_matmul(linear, attrs)?;
            if ys.len() != 3 {
                return Err(ReferenceError::Shape(format!("fp8_qkv_rope_matmul takes 3 parts, got {}", ys.len())));
            }
            let (positions, params) = (ints(positions)?, rope::RopeParams::from_attrs(attrs)?);
            for y in ys.iter_mut().take(2) {
                *y = f32_out(&y.shape.clone(), &rope::rope(&y.to_f32()?, positions, &params)?)?;
            }
            Ok(ys)
        }
        "fp8_swiglu_matmul" => {
            let ys = fp8::fp8_grouped_matmul(inputs, attrs)?;
            match ys.as_slice() {
                [gate, up] if gate.shape == up.shape => {
                    Ok(vec![f32_out(&gate.shape, &basic::silu_mul(&gate.to_f32()?, &up.to_f32()?)?)?])
                }
                _ => Err(ReferenceError::Shape("fp8_swiglu_matmul takes gate and up of one shape".into())),
            }
        }
        "grouped_matmul" => {
            counts(op, inputs, &[3, 4, 5])?;
            let x = inputs[0].to_f32()?;
            let [t, k] = dims(op, "x", &inputs[0])?;
            let mut ys = Vec::with_capacity(inputs.len() - 1);
            for (i, w) in inputs[1..].iter().enumerate() {
                let [n, k2] = dims(op, "w", w)?;
                if k != k2 {
                    return Err(ReferenceError::Shape(format!("grouped_matmul: x [{t},{k}] vs w_{i} [{n},{k2}]")));
                }
                ys.push(f32_out(&[t, n], &basic::matmul(&x, &w.to_f32()?, None, t, k, n)?)?);
            }
            Ok(ys)
        }
        "qkv_rope_matmul" => {
            counts(op, inputs, &[5])?;
            let positions = ints(&inputs[4])?.to_vec();
            let mut ys = run_reference("grouped_matmul", &mut inputs[..4], attrs)?;
            let params = rope::RopeParams::from_attrs(attrs)?;
            for y in ys.iter_mut().take(2) {
                *y = f32_out(&y.shape.clone(), &rope::rope(&y.to_f32()?, &positions, &params)?)?;
            }
            Ok(ys)
        }
        "swiglu_matmul" => {
            counts(op, inputs, &[3])?;
            let x = inputs[0].to_f32()?;
            let [t, k] = dims(op, "x", &inputs[0])?;
            let [n, kg] = dims(op, "w_gate", &inputs[1])?;
            let [nu, ku] = dims(op, "w_up", &inputs[2])?;
            if (kg, ku, nu) != (k, k, n) {
                return Err(ReferenceError::Shape(format!(
                    "swiglu_matmul: x [{t},{k}] vs w_gate [{n},{kg}] and w_up [{nu},{ku}]"
                )));
            }
            let gate = basic::matmul(&x, &inputs[1].to_f32()?, None, t, k, n)?;
            let up = basic::matmul(&x, &inputs[2].to_f32()?, None, t, k, n)?;
            Ok(vec![f32_out(&[t, n], &basic::silu_mul(&gate, &up)?)?])
        }
        "rmsnorm" => {
            counts(op, inputs, &[2])?;
            let h = inputs[0].row_len();
            let y = basic::rmsnorm(&inputs[0].to_f32()?, &inputs[1].to_f32()?, h, eps(attrs)?)?;
            Ok(vec![f32_out(&inputs[0].shape, &y)?])
        }
        "fused_add_rmsnorm" => {
            counts(op, inputs, &[3])?;
            let h = inputs[0].row_len();
            let (x, r, w) = (inputs[0].to_f32()?, inputs[1].to_f32()?, inputs[2].to_f32()?);
            let (y, sum) = basic::fused_add_rmsnorm(&x, &r, &w, h, eps(attrs)?)?;
            Ok(vec![f32_out(&inputs[0].shape, &y)?, f32_out(&inputs[0].shape, &sum)?])
        }
        "embedding" => {
            counts(op, inputs, &[2])?;
            let [v, h] = dims(op, "table", &inputs[1])?;
            let ids = ints(&inputs[0])?;
            let y = basic::embedding(ids, inputs[1].bytes(), inputs[1].dtype, v, h)?;
            Ok(vec![f32_out(&[ids.len(), h], &y)?])
        }
        "rope" => {
            counts(op, inputs, &[2])?;
            let params = rope::RopeParams::from_attrs(attrs)?;
            let y = rope::rope(&inputs[0].to_f32()?, ints(&inputs[1])?, &params)?;
            Ok(vec![f32_out(&inputs[0].shape, &y)?])
        }
        "silu_mul" => {
            counts(op, inputs, &[1, 2])?;
            let [t, cols] = dims(op, "gate", &inputs[0])?;
            let (y, i) = if inputs.len() == 2 {
                (basic::silu_mul(&inputs[0].to_f32()?, &inputs[1].to_f32()?)?, cols)
            } else {
                (basic::silu_mul_packed(&inputs[0].to_f32()?, cols / 2)?, cols / 2)
            };
            Ok(vec![f32_out(&[t, i], &y)?])
        }
        "add" => {
            counts(op, inputs, &[2])?;
            let y = basic::add(&inputs[0].to_f32()?, &inputs[1].to_f32()?)?;
            Ok(vec![f32_out(&inputs[0].shape, &y)?])
        }
        "argmax" => {
            counts(op, inputs, &[1])?;
            let [s, v] = dims(op, "logits", &inputs[0])?;
            let y = basic::argmax(&inputs[0].to_f32()?, v)?;
            Ok(vec![HostTensor::from_i32(&[s], &y)?])
        }
        "gather_rows" => {
            counts(op, inputs, &[2])?;
            let [_, h] = dims(op, "x", &inputs[0])?;
            let index = ints(&inputs[1])?;
            let y = basic::gather_rows(&inputs[0].to_f32()?, index, h)?;
            Ok(vec![f32_out(&[index.len(), h], &y)?])
        }
        "layer_norm" => {
            counts(op, inputs, &[2, 3])?;
            let h = inputs[0].row_len();
            let eps =
                attrs.float_or("eps", layer_norm::DEFAULT_EPS).map_err(|e| ReferenceError::Attr(e.to_string()))?;
            let bias = inputs.get(2).map(|b| b.to_f32()).transpose()?;
            let y = layer_norm::layer_norm(&inputs[0].to_f32()?, &inputs[1].to_f32()?, bias.as_deref(), h, eps)?;
            Ok(vec![f32_out(&inputs[0].shape, &y)?])
        }
        "paged_attention" => run_paged_attention(inputs, attrs),
        "dummy_fill" => {
            counts(op, inputs, &[0])?;
            let rule = crate::weights::FillRule::from_op_attrs(attrs).map_err(ReferenceError::Attr)?;
            let attr = |e: rtllm_plugin_api::PluginError| ReferenceError::Attr(e.to_string());
            let name = attrs.str("dtype").map_err(attr)?;
            let dtype = DType::parse(name).ok_or_else(|| ReferenceError::Attr(format!("unknown dtype '{name}'")))?;
            let shape = attrs.ints("shape").map_err(attr)?.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>();
            let mut out = HostTensor::zeros(dtype, &shape)?;
            let bytes = rule.generate(dtype, out.numel()).map_err(ReferenceError::Input)?;
            out.bytes_mut().copy_from_slice(&bytes);
            Ok(vec![out])
        }
        "sample" => {
            counts(op, inputs, &[5])?;
            let [l, v] = dims(op, "logits", &inputs[0])?;
            let (t, p) = (inputs[1].to_f32()?, inputs[3].to_f32()?);
            let y = sample::sample(&inputs[0].to_f32()?, v, &t, ints(&inputs[2])?, &p, inputs[4].as_slice::<i64>()?)?;
            Ok(vec![HostTensor::from_i32(&[l], &y)?])
        }
        other => Err(ReferenceError::UnknownOp(other.to_string())),
    }
}

fn run_paged_attention(inputs: &mut [HostTensor], attrs: &Attrs) -> RefResult<Vec<HostTensor>> {
    counts("paged_attention", inputs, &[8, 10])?;
    let scales = match inputs.get(8..10) {
        Some([ks, vs]) => {
            let one = |t: &HostTensor| -> RefResult<f32> {
                match t.to_f32()?.as_slice() {
                    [s] => Ok(*s),
                    other => Err(ReferenceError::Shape(format!("paged_attention: a kv scale holds {other:?}"))),
                }
            };
            Some((one(ks)?, one(vs)?))
        }
        _ => None,
    };
    let p = attention::AttentionParams::from_attrs(attrs)?;
    let [_, max_blocks] = dims("paged_attention", "block_tables", &inputs[5])?;
    let (q, k, v) = (inputs[0].to_f32()?, inputs[1].to_f32()?, inputs[2].to_f32()?);
    let (tables, lens, starts) = (inputs[5].clone(), inputs[6].clone(), inputs[7].clone());
    let batch = attention::PagedBatch {
        block_tables: ints(&tables)?,
        max_blocks,
        seq_lens: ints(&lens)?,
        query_start: ints(&starts)?,
    };
    let (head, rest) = inputs.split_at_mut(4);
    let out = attention::paged_attention(&p, &q, &k, &v, &mut head[3], &mut rest[0], &batch, scales)?;
    Ok(vec![f32_out(&inputs[0].shape, &out)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_matmul_is_one_matmul_per_weight() {
        let t = |shape: &[usize], v: &[f32]| HostTensor::from_f32(DType::F32, shape, v).unwrap();
        let x = t(&[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.5, 2.0]);
        let w0 = t(&[1, 3], &[1.0, 0.0, -1.0]);
        let w1 = t(&[2, 3], &[0.5, 0.5, 0.5, 2.0, 1.0, 0.0]);
        assert!(has_reference("grouped_matmul"));
        let ys = run_reference("grouped_matmul", &mut [x, w0, w1], &Attrs::new()).unwrap();
        assert_eq!(ys.len(), 2);
        assert_eq!((ys[0].shape.as_slice(), ys[1].shape.as_slice()), (&[2, 1][..], &[2, 2][..]));
        assert_eq!(ys[0].to_f32().unwrap(), vec![-2.0, -3.0]);
        assert_eq!(ys[1].to_f32().unwrap(), vec![3.0, 4.0, 0.75, -1.5]);
        let bad = run_reference(
            "grouped_matmul",
            &mut [t(&[1, 2], &[1.0, 2.0]), t(&[1, 3], &[0.0; 3]), t(&[1, 2], &[0.0; 2])],
            &Attrs::new(),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn fp8_epilogue_ops_are_fp8_matmuls_followed_by_rope_or_silu_mul() {
        use rtllm_plugin_api::shapes::fp8::Fp8Activation;
        let t = |shape: &[usize], v: &[f32]| HostTensor::from_f32(DType::F32, shape, v).unwrap();
        let fp8 = |shape: &[usize], v: &[f32]| {
            let mut w = HostTensor::zeros(DType::F8_E4M3, shape).unwrap();
            w.set_f32(v).unwrap();
            w
        };
        let x = t(&[2, 4], &[1.0, -2.0, 0.5, 3.0, -1.5, 0.25, 2.0, -0.75]);
        let w = |seed: f32| fp8(&[4, 4], &(0..16).map(|i| ((i as f32) * seed).sin() * 2.0).collect::<Vec<_>>());
        let s = |v: f32| t(&[1], &[v]);
        let pos = HostTensor::from_i32(&[2], &[3, 17]).unwrap();
        let dy = Fp8Activation::Dynamic { upper_bound: None }.attrs();
        let rope_attrs = dy.clone().with("head_dim", 4usize);
        let mut qkv = [x.clone(), w(0.3), w(0.7), w(1.1), s(0.5), s(0.25), s(2.0), pos.clone()];
        let ys = run_reference("fp8_qkv_rope_matmul", &mut qkv, &rope_attrs).unwrap();
        for (j, y) in ys.iter().enumerate() {
            let plain = run_reference("fp8_matmul", &mut [x.clone(), qkv[1 + j].clone(), qkv[4 + j].clone()], &dy)
                .unwrap()
                .remove(0);
            let want = if j < 2 {
                run_reference("rope", &mut [plain, pos.clone()], &rope_attrs).unwrap().remove(0)
            } else {
                plain
            };
            assert_eq!(y.to_f32().unwrap(), want.to_f32().unwrap(), "part {j}");
        }
        let mut mlp = [x.clone(), w(0.3), w(0.9), s(0.5), s(0.125)];
        let y = run_reference("fp8_swiglu_matmul", &mut mlp, &dy).unwrap().remove(0);
        let gate =
            run_reference("fp8_matmul", &mut [x.clone(), mlp[1].clone(), mlp[3].clone()], &dy).unwrap().remove(0);
        let up = run_reference("fp8_matmul", &mut [x, mlp[2].clone(), mlp[4].clone()], &dy).unwrap().remove(0);
        let want = run_reference("silu_mul", &mut [gate, up], &Attrs::new()).unwrap().remove(0);
        assert_eq!(y.to_f32().unwrap(), want.to_f32().unwrap());
        assert!(run_reference("fp8_swiglu_matmul", &mut qkv[..7].to_vec(), &dy).is_err(), "three parts");
    }
}
