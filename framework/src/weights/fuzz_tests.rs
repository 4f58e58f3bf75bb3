//! Property tests (the weight parsers' fuzz targets): random bytes, every truncation of a
//! valid file, and random corruptions of counts and lengths must give `Ok` or a clean `Err`,
//! never a panic or a huge allocation.

use super::gguf::GgufFile;
use super::safetensors::{parse_header, safetensors_bytes};
use super::{GgufValue, GgufWriter};
use proptest::prelude::*;
use rtllm_plugin_api::DType;
use std::collections::BTreeMap;

fn small_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 1);
    w.kv_strs("tokenizer.ggml.tokens", &["a", "b", "ab"]);
    w.kv("tokenizer.ggml.scores", GgufValue::Array(vec![GgufValue::F32(0.5); 3]));
    w.kv("nested", GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U64(1)])]));
    w.tensor_f32("token_embd.weight", &[3, 2], &[1.0; 6]).unwrap();
    let q = rtllm_plugin_api::quant::quantize_row_to_vec(DType::Q8_0, &[1.0; 32]).unwrap();
    w.tensor("blk.0.attn_q.weight", DType::Q8_0, &[1, 32], q).unwrap();
    w.to_bytes()
}

fn small_safetensors() -> Vec<u8> {
    let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    safetensors_bytes(&[("a", DType::F32, &[2], &a), ("b", DType::U8, &[3], &[1, 2, 3])], &meta).unwrap()
}

#[test]
fn every_truncation_of_a_valid_gguf_is_an_error() {
    let good = small_gguf();
    assert!(GgufFile::parse(&good).is_ok());
    for len in 0..good.len() {
        // Everything up to the last tensor's data is needed, so every shorter prefix that
        // cuts real data must fail; prefixes cutting only trailing padding may parse.
        if let Ok(f) = GgufFile::parse(&good[..len]) {
            let end = f.tensors.iter().map(|t| t.offset + t.n_bytes).max().unwrap_or(0);
            assert!(end <= len as u64, "prefix {len} parsed with data up to {end}");
        }
    }
}

#[test]
fn every_truncation_of_a_valid_safetensors_is_an_error() {
    let good = small_safetensors();
    assert!(parse_header(&good).is_ok());
    for len in 0..good.len() {
        assert!(parse_header(&good[..len]).is_err(), "prefix {len}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn gguf_random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = GgufFile::parse(&bytes);
        if bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&[b'G', b'G', b'U', b'F', 3, 0, 0, 0]);
            let _ = GgufFile::parse(&bytes);
        }
    }

    #[test]
    fn gguf_corruptions_never_panic(at in 0usize..4096, value in any::<u64>(), width in 0usize..4) {
        let mut bytes = small_gguf();
        let at = at % bytes.len();
        let width = [1, 2, 4, 8][width].min(bytes.len() - at);
        bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        if let Ok(f) = GgufFile::parse(&bytes) {
            for t in &f.tensors {
                prop_assert!(t.offset + t.n_bytes <= bytes.len() as u64);
                let _ = t.dtype();
            }
        }
    }

    #[test]
    fn safetensors_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_header(&bytes);
    }

    #[test]
    fn safetensors_corruptions_never_panic(at in 0usize..4096, value in any::<u64>(), width in 0usize..4) {
        let mut bytes = small_safetensors();
        let at = at % bytes.len();
        let width = [1, 2, 4, 8][width].min(bytes.len() - at);
        bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        if let Ok(h) = parse_header(&bytes) {
            for t in &h.tensors {
                prop_assert!(t.start <= t.end && t.end <= bytes.len());
            }
        }
    }

    #[test]
    fn safetensors_random_json_headers_never_panic(
        dtype in prop::sample::select(vec!["F32", "Q4_K", "BF16", "F64", "Z", ""]),
        shape in proptest::collection::vec(any::<u32>(), 0..4),
        begin in any::<u32>(), end in any::<u32>(), data in 0usize..64,
    ) {
        let header = serde_json::json!({"t": {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}}).to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        let _ = parse_header(&bytes);
    }
}
