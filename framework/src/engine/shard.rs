//! Sharded weights for tensor parallelism: a weight split into `parts` equal slices along one
//! dimension, of which a rank reads one. The graph names a shard `"{weight}#shard{dim}:{rank}/{parts}"`
//! (a `ValueSource::Weight` like any other); its meta comes from the stored weight's, and at
//! binding its bytes are sliced out of the stored tensor: a slice of whole leading rows is a
//! view (no copy), any other slice is copied. Quantized tensors slice by whole blocks; a
//! column split that would cut a block dequantizes the weight first (the builder binds such a
//! shard in the float fallback dtype and says so).

use super::buffer::AlignedBuf;
use super::convert::convert;
use super::error::LoadError;
use super::source::WeightSource;
use super::weight_bytes::{bind_weight, WeightBytes};
use rtllm_plugin_api::{DType, TensorMeta};

/// Which slice of a weight: part `rank` of `parts` along dimension `dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    pub dim: usize,
    pub rank: usize,
    pub parts: usize,
}

const MARK: &str = "#shard";

impl ShardSpec {
    /// The graph's name for this shard of `weight`.
    pub fn name(&self, weight: &str) -> String {
        format!("{weight}{MARK}{}:{}/{}", self.dim, self.rank, self.parts)
    }

    /// Splits a shard name into the stored weight's name and the spec (None: not a shard).
    pub fn parse(name: &str) -> Option<(&str, ShardSpec)> {
        let (weight, spec) = name.rsplit_once(MARK)?;
        let (dim, rest) = spec.split_once(':')?;
        let (rank, parts) = rest.split_once('/')?;
        let spec = ShardSpec { dim: dim.parse().ok()?, rank: rank.parse().ok()?, parts: parts.parse().ok()? };
        Some((weight, spec))
    }

    /// The shard's meta, or why `meta` cannot be split this way.
    pub fn meta(&self, meta: &TensorMeta) -> Result<TensorMeta, String> {
        let shape = meta.shape().ok_or_else(|| format!("shape {meta} is not concrete"))?;
        let Some(&len) = shape.get(self.dim) else {
            return Err(format!("has no dimension {} to split (shape {shape:?})", self.dim));
        };
        if self.parts == 0 || self.rank >= self.parts {
            return Err(format!("part {} of {} does not exist", self.rank, self.parts));
        }
        if len % self.parts != 0 {
            return Err(format!("dimension {} ({len}) does not split into {} equal parts", self.dim, self.parts));
        }
        let mut out = shape.clone();
        out[self.dim] = len / self.parts;
        Ok(TensorMeta::of(meta.dtype, &out))
    }

    /// Whether slicing `meta` this way would cut quantized blocks (a column split whose width
    /// is not whole blocks): such a shard is dequantized before it is sliced.
    pub fn cuts_blocks(&self, meta: &TensorMeta) -> bool {
        let shape = meta.shape().unwrap_or_default();
        let last = shape.len().saturating_sub(1);
        let bs = meta.dtype.block_size();
        bs > 1 && self.dim == last && shape.get(last).is_some_and(|&n| (n / self.parts.max(1)) % bs != 0)
    }
}

/// The bytes of shard `spec` of stored tensor `bytes` (dtype `dtype`, shape `shape`): a view when
/// the slice is contiguous, else a copy. Quantized blocks must not be cut (see `cuts_blocks`).
fn slice<'a>(bytes: &'a [u8], dtype: DType, shape: &[usize], spec: ShardSpec) -> Result<Slice<'a>, String> {
    let last = shape.len().checked_sub(1).ok_or("a scalar cannot be split")?;
    let row_len = shape[last];
    let row_bytes =
        dtype.bytes_for(row_len).ok_or_else(|| format!("a row of {row_len} is not whole {dtype} blocks"))?;
    let rows: usize = shape[..last].iter().product();
    if rows * row_bytes != bytes.len() {
        return Err(format!("{} bytes do not hold {rows} rows of {row_bytes}", bytes.len()));
    }
    let len = shape[spec.dim];
    let part = len / spec.parts;
    if spec.dim == last {
        let width = dtype.bytes_for(part).ok_or_else(|| format!("{part} columns cut {dtype} blocks"))?;
        let offset = width * spec.rank;
        let mut out = AlignedBuf::zeroed(rows * width);
        for (dst, src) in out.as_bytes_mut().chunks_exact_mut(width).zip(bytes.chunks_exact(row_bytes)) {
            dst.copy_from_slice(&src[offset..offset + width]);
        }
        return Ok(Slice::Owned(out));
    }
    // Split a leading dimension: `outer` runs of `len` blocks of `inner` rows each.
    let outer: usize = shape[..spec.dim].iter().product();
    let inner_bytes: usize = shape[spec.dim + 1..last].iter().product::<usize>() * row_bytes;
    let (run, chunk) = (len * inner_bytes, part * inner_bytes);
    if outer == 1 {
        let start = chunk * spec.rank;
        return Ok(Slice::View(&bytes[start..start + chunk]));
    }
    let mut out = AlignedBuf::zeroed(outer * chunk);
    for (dst, src) in out.as_bytes_mut().chunks_exact_mut(chunk).zip(bytes.chunks_exact(run)) {
        dst.copy_from_slice(&src[chunk * spec.rank..chunk * (spec.rank + 1)]);
    }
    Ok(Slice::Owned(out))
}

enum Slice<'a> {
    View(&'a [u8]),
    Owned(AlignedBuf),
}

impl Slice<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Slice::View(b) => b,
            Slice::Owned(b) => b.as_bytes(),
        }
    }
}

/// Binds shard `spec` of stored weight `weight` in `dtype` (what the graph reads): sliced,
/// then converted when `dtype` differs from the stored one; a quantized column split that
/// would cut blocks is converted first, then sliced.
pub(crate) fn bind_shard(
    weights: &dyn WeightSource,
    weight: &str,
    spec: ShardSpec,
    dtype: DType,
) -> Result<WeightBytes, LoadError> {
    let shard_name = spec.name(weight);
    let err = |message: String| LoadError::Weight { name: shard_name.clone(), message };
    let meta = weights.weight_meta(weight).ok_or_else(|| err("the stored weight vanished".into()))?;
    let bytes = weights.weight_bytes(weight).ok_or_else(|| err("the stored weight has no data".into()))?;
    let shard_meta = spec.meta(&meta).map_err(&err)?;
    let shape = meta.shape().unwrap_or_default();
    let row_len = |m: &TensorMeta| m.dims.last().and_then(|d| d.known()).unwrap_or(1);
    if spec.cuts_blocks(&meta) {
        let whole = convert(weight, bytes, meta.dtype, dtype, row_len(&meta))?;
        let part = slice(whole.as_bytes(), dtype, &shape, spec).map_err(&err)?;
        return Ok(WeightBytes::Owned(match part {
            Slice::View(b) => AlignedBuf::from_bytes(b),
            Slice::Owned(b) => b,
        }));
    }
    let part = slice(bytes, meta.dtype, &shape, spec).map_err(&err)?;
    if meta.dtype != dtype {
        return Ok(WeightBytes::Owned(convert(&shard_name, part.bytes(), meta.dtype, dtype, row_len(&shard_meta))?));
    }
    Ok(match part {
        Slice::View(b) => bind_weight(b, dtype),
        Slice::Owned(b) => WeightBytes::Owned(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn as_f32(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    #[test]
    fn names_round_trip_and_plain_names_are_not_shards() {
        let spec = ShardSpec { dim: 1, rank: 2, parts: 4 };
        let name = spec.name("model.layers.0.mlp.down_proj.weight");
        assert_eq!(ShardSpec::parse(&name), Some(("model.layers.0.mlp.down_proj.weight", spec)));
        assert_eq!(ShardSpec::parse("model.norm.weight"), None);
    }

    #[test]
    fn metas_split_or_say_why_not() {
        let m = TensorMeta::of(DType::F32, &[6, 4]);
        assert_eq!(ShardSpec { dim: 0, rank: 1, parts: 3 }.meta(&m).unwrap(), TensorMeta::of(DType::F32, &[2, 4]));
        assert_eq!(ShardSpec { dim: 1, rank: 0, parts: 2 }.meta(&m).unwrap(), TensorMeta::of(DType::F32, &[6, 2]));
        assert!(ShardSpec { dim: 1, rank: 0, parts: 3 }.meta(&m).unwrap_err().contains("3 equal parts"));
        assert!(ShardSpec { dim: 2, rank: 0, parts: 2 }.meta(&m).unwrap_err().contains("no dimension 2"));
        let q = TensorMeta::of(DType::Q8_0, &[4, 64]);
        assert!(!ShardSpec { dim: 1, rank: 0, parts: 2 }.cuts_blocks(&q), "32 columns are one block");
        assert!(ShardSpec { dim: 1, rank: 0, parts: 4 }.cuts_blocks(&q), "16 columns cut a block");
        assert!(!ShardSpec { dim: 0, rank: 0, parts: 4 }.cuts_blocks(&q), "rows never cut blocks");
    }

    #[test]
    fn rows_are_views_columns_are_copies() {
        // A 4 × 6 matrix holding 0..24.
        let data = f32_bytes(&(0..24).map(|v| v as f32).collect::<Vec<_>>());
        let shape = [4, 6];
        match slice(&data, DType::F32, &shape, ShardSpec { dim: 0, rank: 1, parts: 2 }).unwrap() {
            Slice::View(b) => assert_eq!(as_f32(b), (12..24).map(|v| v as f32).collect::<Vec<_>>()),
            Slice::Owned(_) => panic!("a row split was copied"),
        }
        let cols = slice(&data, DType::F32, &shape, ShardSpec { dim: 1, rank: 2, parts: 3 }).unwrap();
        assert!(matches!(cols, Slice::Owned(_)));
        assert_eq!(as_f32(cols.bytes()), vec![4.0, 5.0, 10.0, 11.0, 16.0, 17.0, 22.0, 23.0]);
        // A 3-D tensor split along its middle dimension copies one run per outer index.
        let mid = slice(&data, DType::F32, &[2, 4, 3], ShardSpec { dim: 1, rank: 1, parts: 2 }).unwrap();
        assert_eq!(as_f32(mid.bytes()), vec![6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0]);
    }

    #[test]
    fn quantized_columns_slice_by_whole_blocks() {
        // Two rows of two Q8_0 blocks each (34 bytes a block): the column halves are blocks.
        let data: Vec<u8> = (0..4 * 34).map(|i| i as u8).collect();
        let part = slice(&data, DType::Q8_0, &[2, 64], ShardSpec { dim: 1, rank: 1, parts: 2 }).unwrap();
        let want: Vec<u8> = [&data[34..68], &data[102..136]].concat();
        assert_eq!(part.bytes(), &want[..]);
        assert!(slice(&data, DType::Q8_0, &[2, 64], ShardSpec { dim: 1, rank: 1, parts: 4 }).is_err());
    }
}
