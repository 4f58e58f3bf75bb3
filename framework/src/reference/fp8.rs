//! The reference of `fp8_matmul` (docs/quantization.md): the weight dequantized (E4M3 value ×
//! its per-tensor or per-channel scale), the activations quantized to E4M3 and back with their
//! static or dynamic per-token scale, then the plain f64-accumulated matmul. The conversions
//! are plugin-api's `fp8` (the one place they live); the arithmetic is independent of the
//! kernels'.

use super::{basic, HostTensor, RefResult, ReferenceError};
use rtllm_plugin_api::fp8::{dynamic_scale, e4m3_to_f32, quantize_scaled};
use rtllm_plugin_api::shapes::fp8::{infer_fp8_matmul, Fp8Activation};
use rtllm_plugin_api::{Attrs, DType};

/// `x` [t, k] quantized to E4M3 and back, row by row, with the activation scheme's scale (a
/// static scheme without its `input_scale` falls back to the per-row scale).
pub fn fake_quantize_activations(x: &[f32], k: usize, act: Fp8Activation, input_scale: Option<f32>) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(k.max(1)) {
        let s = match (act, input_scale) {
            (Fp8Activation::Static, Some(s)) => s,
            (Fp8Activation::Static, None) => dynamic_scale(row, None),
            (Fp8Activation::Dynamic { upper_bound }, _) => dynamic_scale(row, upper_bound),
        };
        out.extend(row.iter().map(|&v| e4m3_to_f32(quantize_scaled(v, s)) * s));
    }
    out
}

/// `w` [n, k] of E4M3 codes times its scale (one value, or one per row).
pub fn dequantize_weight(codes: &[u8], scale: &[f32], n: usize, k: usize) -> RefResult<Vec<f32>> {
    if codes.len() != n * k || !(scale.len() == 1 || scale.len() == n) {
        return Err(ReferenceError::Shape(format!(
            "fp8 weight of {} codes with {} scales is not [{n}, {k}] with 1 or {n} scales",
            codes.len(),
            scale.len()
        )));
    }
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &c)| e4m3_to_f32(c) * scale[if scale.len() == 1 { 0 } else { i / k }])
        .collect())
}

/// `fp8_matmul(x, w, w_scale[, input_scale][, bias])`.
pub fn fp8_matmul(inputs: &[HostTensor], attrs: &Attrs) -> RefResult<Vec<HostTensor>> {
    let metas: Vec<_> = inputs.iter().map(|t| t.meta()).collect();
    let (_, at) = infer_fp8_matmul(&metas, attrs, &DType::FLOATS).map_err(|e| ReferenceError::Shape(e.to_string()))?;
    let ([t, k], [n, _]) = (dims2(&inputs[0])?, dims2(&inputs[1])?);
    let input_scale = match at.input_scale {
        Some(i) => Some(inputs[i].to_f32()?[0]),
        None => None,
    };
    let x = fake_quantize_activations(&inputs[0].to_f32()?, k, at.activation, input_scale);
    let w = dequantize_weight(inputs[1].bytes(), &inputs[2].to_f32()?, n, k)?;
    let bias = at.bias.map(|i| inputs[i].to_f32()).transpose()?;
    let y = basic::matmul(&x, &w, bias.as_deref(), t, k, n)?;
    Ok(vec![HostTensor::from_f32(DType::F32, &[t, n], &y)?])
}

fn dims2(t: &HostTensor) -> RefResult<[usize; 2]> {
    t.shape
        .as_slice()
        .try_into()
        .map_err(|_| ReferenceError::Shape(format!("fp8_matmul: rank-2 input expected, got {:?}", t.shape)))
}

/// `fp8_grouped_matmul(x, w_0..w_{n-1}, s_0..s_{n-1}[, i_0..i_{n-1}])`: `fp8_matmul` of every
/// part, x quantized once (static parts with i_0: the fusion pass groups only parts that read
/// the same input scale tensor).
pub fn fp8_grouped_matmul(inputs: &[HostTensor], attrs: &Attrs) -> RefResult<Vec<HostTensor>> {
    let act = Fp8Activation::from_attrs(attrs).map_err(|e| ReferenceError::Attr(e.to_string()))?;
    let per_part = 2 + act.scale_inputs();
    let parts = inputs.len().saturating_sub(1) / per_part;
    if inputs.is_empty() || (inputs.len() - 1) % per_part != 0 || !(2..=4).contains(&parts) {
        return Err(ReferenceError::Shape(format!(
            "fp8_grouped_matmul: x and 2 to 4 parts of {per_part} inputs, got {} inputs",
            inputs.len()
        )));
    }
    let mut ys = Vec::with_capacity(parts);
    for j in 0..parts {
        let mut part = vec![inputs[0].clone(), inputs[1 + j].clone(), inputs[1 + parts + j].clone()];
        if act == Fp8Activation::Static {
            part.push(inputs[1 + 2 * parts].clone());
        }
        ys.extend(fp8_matmul(&part, attrs)?);
    }
    Ok(ys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_product() {
        // x = [1, -2], static scale 0.5: codes of 2 and -4, exactly; w = [[1, 0.5], [448, 1]]
        // with per-channel scales [0.25, 2].
        let x = HostTensor::from_f32(DType::F32, &[1, 2], &[1.0, -2.0]).unwrap();
        let mut w = HostTensor::zeros(DType::F8_E4M3, &[2, 2]).unwrap();
        w.set_f32(&[1.0, 0.5, 448.0, 1.0]).unwrap();
        let ws = HostTensor::from_f32(DType::F32, &[2], &[0.25, 2.0]).unwrap();
        let is = HostTensor::from_f32(DType::F32, &[1], &[0.5]).unwrap();
        let attrs = Fp8Activation::Static.attrs();
        let y = fp8_matmul(&[x.clone(), w.clone(), ws.clone(), is], &attrs).unwrap();
        assert_eq!(y[0].to_f32().unwrap(), vec![(1.0 - 1.0) * 0.25, (448.0 - 2.0) * 2.0]);
        // Dynamic: amax 2 → scale 2/448; 1 and -2 are exact at that scale.
        let dy = Fp8Activation::Dynamic { upper_bound: None }.attrs();
        let y = fp8_matmul(&[x, w, ws], &dy).unwrap();
        let got = y[0].to_f32().unwrap();
        assert!((got[0] - 0.0).abs() < 1e-6 && (got[1] - 892.0).abs() < 1e-3, "{got:?}");
    }

    #[test]
    fn grouped_is_one_fp8_matmul_per_part_with_the_first_input_scale() {
        let x = HostTensor::from_f32(DType::F32, &[1, 2], &[1.0, -2.0]).unwrap();
        let mut w0 = HostTensor::zeros(DType::F8_E4M3, &[2, 2]).unwrap();
        w0.set_f32(&[1.0, 0.5, 448.0, 1.0]).unwrap();
        let mut w1 = HostTensor::zeros(DType::F8_E4M3, &[1, 2]).unwrap();
        w1.set_f32(&[3.0, -1.0]).unwrap();
        let s0 = HostTensor::from_f32(DType::F32, &[2], &[0.25, 2.0]).unwrap();
        let s1 = HostTensor::from_f32(DType::F32, &[1], &[0.5]).unwrap();
        let i0 = HostTensor::from_f32(DType::F32, &[1], &[0.5]).unwrap();
        let i1 = HostTensor::from_f32(DType::F32, &[1], &[100.0]).unwrap();
        let st = Fp8Activation::Static.attrs();
        let ys = fp8_grouped_matmul(&[x.clone(), w0.clone(), w1.clone(), s0.clone(), s1.clone(), i0.clone(), i1], &st)
            .unwrap();
        assert_eq!(ys[0], fp8_matmul(&[x.clone(), w0, s0, i0.clone()], &st).unwrap()[0]);
        assert_eq!(ys[1], fp8_matmul(&[x.clone(), w1.clone(), s1.clone(), i0], &st).unwrap()[0]);
        let e = fp8_grouped_matmul(&[x, w1, s1], &Fp8Activation::Dynamic { upper_bound: None }.attrs());
        assert!(e.is_err(), "one part is not a group");
    }
}
