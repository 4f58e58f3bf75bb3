//! The FP8 KV cache's per-layer scales in the weight store (docs/quantization.md, "The KV
//! cache"): their one name, `model.layers.N.self_attn.{k,v}_scale` f32 `[1]`; the checkpoint
//! forms they are read from (compressed-tensors writes that name, ModelOpt
//! `...self_attn.k_proj.k_scale` / `...self_attn.v_proj.v_scale`), each checked (missing,
//! wrong shape, NaN, infinite, zero or negative: an error naming the tensor); and the default
//! of 1.0 (vLLM's and TensorRT-LLM's) for sources without scales, with one warning.

use super::fp8::config::{Fp8Format, Producer};
use super::fp8::scale_values;
use super::store::{Tensor, WeightStore};
use super::WeightError;
use std::path::Path;

/// K or V.
const KINDS: [char; 2] = ['k', 'v'];

/// The store's name of layer `layer`'s `k_scale` (`which = 'k'`) or `v_scale` (`'v'`).
pub fn name(layer: usize, which: char) -> String {
    format!("model.layers.{layer}.self_attn.{which}_scale")
}

/// Where `producer` stores the scale of attention module `attn` (`<prefix>.self_attn`).
fn stored_name(producer: Producer, attn: &str, which: char) -> String {
    match producer {
        Producer::ModelOpt => format!("{attn}.{which}_proj.{which}_scale"),
        _ => format!("{attn}.{which}_scale"),
    }
}

fn is_kv_scale(name: &str) -> bool {
    name.ends_with(".k_scale") || name.ends_with(".v_scale")
}

/// Reads the checkpoint's KV-cache scales (`format.kv_cache`): one k and one v scale beside
/// every attention module (`<prefix>.self_attn` with a `k_proj.weight`), rewritten as f32 `[1]`
/// under the store's names. A KV scale the scheme does not account for is refused.
pub fn normalize(format: &Fp8Format, store: &mut WeightStore, path: &Path) -> Result<(), WeightError> {
    let attns: Vec<String> = store
        .names()
        .filter_map(|n| n.strip_suffix(".k_proj.weight"))
        .filter(|m| m.ends_with(".self_attn"))
        .map(String::from)
        .collect();
    let mut kept = Vec::new();
    if format.kv_cache {
        if attns.is_empty() {
            return Err(WeightError::NotAModel {
                path: path.into(),
                message: "the FP8 KV-cache scheme needs attention modules (`<prefix>.self_attn.k_proj.weight`)".into(),
            });
        }
        for attn in &attns {
            for which in KINDS {
                let stored = stored_name(format.producer, attn, which);
                let what = format!("the FP8 KV cache's per-tensor {which}_scale");
                let value = scale_values(store, path, &stored, 1, &what)?;
                store.remove(&stored);
                let to = format!("{attn}.{which}_scale");
                store.insert(to.clone(), Tensor::from_f32(&to, vec![1], &value)?);
                kept.push(to);
            }
        }
    }
    if let Some(stray) = store.names().find(|n| is_kv_scale(n) && !kept.iter().any(|k| k == n)) {
        let why = if format.kv_cache {
            "a KV-cache scale that belongs to no attention module of the scheme"
        } else {
            "a KV-cache scale, but quantization_config declares no KV-cache scheme"
        };
        return Err(WeightError::tensor(path, stray, why));
    }
    if format.kv_cache {
        store.set_kv_cache_fp8(true);
    }
    Ok(())
}

/// Adds scale 1.0 for every layer (`0..layers`) whose k or v scale is missing, warning once;
/// returns how many scales were added.
pub fn default_missing(store: &mut WeightStore, layers: usize) -> usize {
    let mut added = 0;
    for layer in 0..layers {
        for which in KINDS {
            let n = name(layer, which);
            if !store.contains(&n) {
                if let Ok(t) = Tensor::from_f32(&n, vec![1], &[1.0]) {
                    store.insert(n, t);
                    added += 1;
                }
            }
        }
    }
    if added > 0 {
        tracing::warn!(
            "FP8 KV cache: the weights carry no k_scale/v_scale for {added} of {} scales; using 1.0 \
             (quantize with `rtllm quantize --kv-cache-dtype fp8` to calibrate them)",
            2 * layers
        );
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::fp8::config::WeightScale;
    use rtllm_plugin_api::shapes::fp8::Fp8Activation;

    fn format(producer: Producer, kv_cache: bool) -> Fp8Format {
        Fp8Format {
            producer,
            weight_scale: WeightScale::PerTensor,
            activation: Fp8Activation::Static,
            ignore: Vec::new(),
            kv_cache,
        }
    }

    fn store(extra: &[(&str, Vec<usize>, f32)]) -> WeightStore {
        let mut s = WeightStore::new();
        for l in 0..2 {
            let n = format!("model.layers.{l}.self_attn.k_proj.weight");
            s.insert(n.clone(), Tensor::from_f32(&n, vec![2, 2], &[0.0; 4]).unwrap());
        }
        for (n, shape, v) in extra {
            let count = shape.iter().product::<usize>();
            s.insert(*n, Tensor::from_f32(n, shape.clone(), &vec![*v; count]).unwrap());
        }
        s
    }

    #[test]
    fn both_producers_normalize_to_one_name() {
        let ct = [
            ("model.layers.0.self_attn.k_scale", vec![], 0.5),
            ("model.layers.0.self_attn.v_scale", vec![1], 0.25),
            ("model.layers.1.self_attn.k_scale", vec![1], 2.0),
            ("model.layers.1.self_attn.v_scale", vec![], 3.0),
        ];
        let mo: Vec<_> = ct
            .iter()
            .map(|(n, s, v)| {
                (
                    n.replace("self_attn.k_", "self_attn.k_proj.k_").replace("self_attn.v_", "self_attn.v_proj.v_"),
                    s.clone(),
                    *v,
                )
            })
            .collect();
        let mo: Vec<(&str, Vec<usize>, f32)> = mo.iter().map(|(n, s, v)| (n.as_str(), s.clone(), *v)).collect();
        for (producer, extra) in [(Producer::CompressedTensors, &ct[..]), (Producer::ModelOpt, &mo[..])] {
            let mut s = store(extra);
            normalize(&format(producer, true), &mut s, Path::new("x")).unwrap();
            assert!(s.kv_cache_fp8());
            assert_eq!(s.to_f32(&name(1, 'v')).unwrap(), vec![3.0]);
            assert_eq!(s.get(&name(0, 'k')).unwrap().shape, vec![1]);
            assert!(!s.names().any(|n| n.contains("_proj.k_scale") || n.contains("_proj.v_scale")));
        }
    }

    #[test]
    fn bad_scales_are_refused_with_the_tensor_name() {
        let good = |n: &'static str| (n, vec![1], 0.5f32);
        // (extra scale tensors, the tensor the error names, what it says)
        type Case = (Vec<(&'static str, Vec<usize>, f32)>, &'static str, &'static str);
        let cases: [Case; 6] = [
            (
                vec![
                    good("model.layers.0.self_attn.k_scale"),
                    good("model.layers.0.self_attn.v_scale"),
                    good("model.layers.1.self_attn.k_scale"),
                ],
                "model.layers.1.self_attn.v_scale",
                "missing",
            ),
            (vec![("model.layers.0.self_attn.k_scale", vec![2], 0.5)], "model.layers.0.self_attn.k_scale", "[1]"),
            (
                vec![("model.layers.0.self_attn.k_scale", vec![1], f32::NAN)],
                "model.layers.0.self_attn.k_scale",
                "finite and positive",
            ),
            (
                vec![("model.layers.0.self_attn.k_scale", vec![1], f32::INFINITY)],
                "model.layers.0.self_attn.k_scale",
                "finite and positive",
            ),
            (
                vec![("model.layers.0.self_attn.k_scale", vec![1], 0.0)],
                "model.layers.0.self_attn.k_scale",
                "finite and positive",
            ),
            (
                vec![("model.layers.0.self_attn.k_scale", vec![1], -1.0)],
                "model.layers.0.self_attn.k_scale",
                "finite and positive",
            ),
        ];
        for (extra, tensor, want) in cases {
            let e =
                normalize(&format(Producer::CompressedTensors, true), &mut store(&extra), Path::new("x")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(tensor) && msg.contains(want), "{msg}");
        }
        // Scales without a scheme, and a ModelOpt name in a compressed-tensors checkpoint.
        let e = normalize(
            &format(Producer::CompressedTensors, false),
            &mut store(&[good("model.layers.0.self_attn.k_scale")]),
            Path::new("x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("declares no KV-cache scheme"), "{e}");
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let mut s = store(&[("model.layers.0.self_attn.k_scale", vec![1], 0.5)]);
        assert_eq!(default_missing(&mut s, 2), 3);
        assert_eq!(s.to_f32(&name(0, 'k')).unwrap(), vec![0.5]);
        assert_eq!(s.to_f32(&name(1, 'v')).unwrap(), vec![1.0]);
        assert_eq!(default_missing(&mut s, 2), 0);
    }
}
