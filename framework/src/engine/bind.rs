//! Weight preparation: each weight use of the finished graph (name, dtype the chosen kernel
//! reads) bound to bytes: the stored tensor as is (borrowed), converted to the dtype the kernel
//! reads, a tensor-parallel shard sliced out of it, or, for generated weights on a GPU, made in
//! device memory by the `dummy_fill` op.

use super::convert::convert;
use super::error::LoadError;
use super::graph::Graph;
use super::select::SelectionConfig;
use super::shard::{bind_shard, ShardSpec};
use super::source::WeightSource;
use super::weight_bytes::{bind_weight, WeightBytes};
use crate::device::CudaDevice;
use crate::registry::{OpRequest, Registry};
use rtllm_plugin_api::{DeviceKind, TensorMeta};
use std::sync::Arc;

/// One entry per `graph.weight_uses()` item, in that order.
pub(super) fn bind_weights(
    graph: &Graph,
    weights: &dyn WeightSource,
    registry: &Registry,
    selection: &SelectionConfig,
    device: Option<&Arc<CudaDevice>>,
) -> Result<Vec<WeightBytes>, LoadError> {
    let mut bound = Vec::new();
    for (name, dtype) in graph.weight_uses() {
        if let Some((weight, spec)) = ShardSpec::parse(&name) {
            bound.push(bind_shard(weights, weight, spec, dtype)?);
            continue;
        }
        let meta = weights
            .weight_meta(&name)
            .ok_or_else(|| LoadError::Weight { name: name.clone(), message: "vanished".into() })?;
        if let (Some(device), Some(rule), true) = (device, weights.weight_fill(&name), meta.dtype == dtype) {
            bound.push(fill_on_device(registry, selection, device, rule, &meta)?);
            continue;
        }
        let bytes = weights
            .weight_bytes(&name)
            .ok_or_else(|| LoadError::Weight { name: name.clone(), message: "no data".into() })?;
        if meta.dtype == dtype {
            bound.push(bind_weight(bytes, dtype));
        } else {
            let row_len = meta.dims.last().and_then(|d| d.known()).unwrap_or(1);
            bound.push(WeightBytes::Owned(convert(&name, bytes, meta.dtype, dtype, row_len)?));
        }
    }
    Ok(bound)
}

/// Makes a generated weight directly in GPU memory with the `dummy_fill` op (no host bytes).
fn fill_on_device(
    registry: &Registry,
    selection: &SelectionConfig,
    device: &Arc<CudaDevice>,
    rule: crate::weights::FillRule,
    meta: &TensorMeta,
) -> Result<WeightBytes, LoadError> {
    let shape: Vec<usize> = meta.dims.iter().map(|d| d.known().unwrap_or(0)).collect();
    let request = OpRequest {
        name: "dummy_fill".into(),
        device: DeviceKind::Cuda,
        dtypes: vec![meta.dtype],
        pin: selection.pins.get("dummy_fill").cloned(),
    };
    let fill_error = |message: String| LoadError::Config(format!("generating dummy weights on the GPU: {message}"));
    let provider = registry.resolve(&request).map_err(|e| fill_error(e.to_string()))?;
    let (_, buffer) = crate::registry::generate_on_device(provider, &rule.op_attrs(meta.dtype, &shape), device)
        .map_err(|e| fill_error(e.to_string()))?;
    Ok(WeightBytes::Device(buffer))
}
