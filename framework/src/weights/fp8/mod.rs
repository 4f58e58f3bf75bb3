//! HF FP8 checkpoints: reads the checkpoint's FP8 scheme ([`config`]) and puts its tensors into
//! the one form the graph reads (docs/quantization.md): `<module>.weight` E4M3 `[N, K]`,
//! `<module>.weight_scale` f32 `[1]` or `[N]`, `<module>.input_scale` f32 `[1]` for static
//! activations; the activation scheme is kept on the store. Every scale is checked: missing,
//! of the wrong shape or dtype, NaN, infinite, zero or negative is an error naming the tensor;
//! so is an FP8 tensor in a module the config leaves unquantized, and a scale with no FP8
//! weight beside it.

pub mod config;

use super::store::{Tensor, WeightStore};
use super::WeightError;
use config::{Fp8Format, Producer, WeightScale};
use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use rtllm_plugin_api::DType;
use std::path::Path;

pub use config::parse;

/// The suffixes of the scale tensors FP8 checkpoints carry per linear module.
const SCALE_SUFFIXES: [&str; 3] = [".weight_scale", ".input_scale", ".input_scale_ub"];

/// Checks and normalizes the FP8 tensors of `store` (loaded from `path`) for `format`.
pub fn apply(format: &Fp8Format, store: &mut WeightStore, path: &Path) -> Result<(), WeightError> {
    format.check_patterns().map_err(|m| WeightError::NotAModel { path: path.into(), message: m })?;
    let fp8: Vec<String> =
        store.iter().filter(|(_, t)| t.dtype == DType::F8_E4M3).map(|(n, _)| n.to_string()).collect();
    if fp8.is_empty() {
        return Err(WeightError::NotAModel {
            path: path.into(),
            message: format!("quantization_config declares {:?} FP8 but no tensor is F8_E4M3", format.producer),
        });
    }
    for name in &fp8 {
        linear(format, store, path, name)?;
    }
    // Every scale left must belong to an FP8 weight.
    let orphan = store.names().find(|n| {
        SCALE_SUFFIXES.iter().any(|s| n.strip_suffix(s).is_some_and(|m| !fp8.contains(&format!("{m}.weight"))))
    });
    if let Some(n) = orphan {
        return Err(WeightError::tensor(path, n, "a scale whose module has no F8_E4M3 weight"));
    }
    super::kv_scales::normalize(format, store, path)?;
    store.set_fp8_activation(Some(format.activation));
    Ok(())
}

/// Checks one FP8 linear weight and rewrites its scales as f32 `[1]` / `[N]`.
fn linear(format: &Fp8Format, store: &mut WeightStore, path: &Path, name: &str) -> Result<(), WeightError> {
    let bad = |tensor: &str, message: String| WeightError::tensor(path, tensor, message);
    let (w_shape, module) = match (store.get(name).map(|t| t.shape.clone()), name.strip_suffix(".weight")) {
        (Some(s), Some(m)) if s.len() == 2 => (s, m.to_string()),
        (s, _) => {
            return Err(bad(
                name,
                format!("an F8_E4M3 tensor must be a linear weight `<module>.weight` [N, K], got shape {s:?}"),
            ))
        }
    };
    if format.ignores(&module) {
        let field = match format.producer {
            Producer::CompressedTensors => "ignore",
            Producer::ModelOpt => "exclude_modules",
            Producer::Fbgemm => "modules_to_not_convert",
        };
        return Err(bad(
            name,
            format!("stored as F8_E4M3, but quantization_config.{field} leaves `{module}` unquantized"),
        ));
    }
    let n = w_shape[0];
    let ws_name = format!("{module}.weight_scale");
    let per_channel = format.weight_scale == WeightScale::PerChannel;
    let want = if per_channel { n } else { 1 };
    let ws = scale_values(
        store,
        path,
        &ws_name,
        want,
        &format!("{} weight scale", if per_channel { "a per-channel" } else { "a per-tensor" }),
    )?;
    store.insert(ws_name.clone(), Tensor::from_f32(&ws_name, vec![want], &ws)?);

    let is_name = format!("{module}.input_scale");
    match format.activation {
        Fp8Activation::Static => {
            let s = scale_values(store, path, &is_name, 1, "a static per-tensor input scale")?;
            store.insert(is_name.clone(), Tensor::from_f32(&is_name, vec![1], &s)?);
        }
        Fp8Activation::Dynamic { upper_bound } => {
            if store.contains(&is_name) {
                return Err(bad(
                    &is_name,
                    "a static input scale, but quantization_config declares dynamic activations".into(),
                ));
            }
            let ub_name = format!("{module}.input_scale_ub");
            if store.contains(&ub_name) {
                let got = scale_values(store, path, &ub_name, 1, "fbgemm's activation upper bound")?[0];
                if format.producer != Producer::Fbgemm || upper_bound != Some(got) {
                    return Err(bad(
                        &ub_name,
                        format!("{got} disagrees with quantization_config.activation_scale_ub ({upper_bound:?})"),
                    ));
                }
                store.remove(&ub_name);
            }
        }
    }
    Ok(())
}

/// The values of scale tensor `name`: a float tensor of `want` values (any of the shapes the
/// producers write: `[]`, `[1]`, `[N]`, `[N, 1]`), each finite and positive.
pub(crate) fn scale_values(
    store: &WeightStore,
    path: &Path,
    name: &str,
    want: usize,
    what: &str,
) -> Result<Vec<f32>, WeightError> {
    let bad = |message: String| WeightError::tensor(path, name, message);
    let t = store.get(name).ok_or_else(|| {
        bad(format!("missing: {what} is required beside {}", name.rsplit_once('.').map_or(name, |p| p.0)))
    })?;
    if !t.dtype.is_float() {
        return Err(bad(format!("{what} must be F32, BF16 or F16, got {}", t.dtype)));
    }
    let shape_ok = match t.shape.as_slice() {
        [] => want == 1,
        [a] => *a == want,
        [a, 1] => *a == want,
        _ => false,
    };
    if !shape_ok {
        return Err(bad(format!(
            "{what} must hold {want} value(s) ([{want}] or [{want}, 1]), got shape {:?}",
            t.shape
        )));
    }
    let values = t.to_f32(name)?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        return Err(bad(format!("{what} must be finite and positive, value {i} is {v}")));
    }
    Ok(values)
}
