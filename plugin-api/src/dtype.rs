//! Element types that cross the ABI, including GGUF's block-quantized formats and FP8 E4M3
//! (whose conversions live in [`crate::fp8`]).

use abi_stable::StableAbi;
use std::fmt;

/// An element type. Quantized types store `block_size()` elements in `block_bytes()` bytes.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    I32 = 3,
    I64 = 4,
    U8 = 5,
    Q8_0 = 6,
    Q4_0 = 7,
    Q4_1 = 8,
    Q4_K = 9,
    Q6_K = 10,
    /// FP8 E4M3 ("e4m3fn", safetensors `F8_E4M3`): one byte an element, scales kept in tensors
    /// of their own (see docs/quantization.md).
    F8_E4M3 = 11,
    /// Signed 8-bit integers (safetensors `I8`, ggml `I8`).
    I8 = 12,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::F8_E4M3,
        DType::I8,
    ];

    /// Float types a kernel may compute in or store activations/weights as.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// GGUF block-quantized types.
    pub const QUANTIZED: [DType; 5] = [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q4_K => "q4_k",
            DType::Q6_K => "q6_k",
            DType::F8_E4M3 => "f8_e4m3",
            DType::I8 => "i8",
        }
    }

    /// Parses a name as printed by [`DType::name`] (case-insensitive).
    pub fn parse(s: &str) -> Option<DType> {
        let lower = s.to_ascii_lowercase();
        DType::ALL.into_iter().find(|d| d.name() == lower)
    }

    /// Elements per storage block (1 for plain types).
    pub fn block_size(self) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
            DType::Q4_K | DType::Q6_K => 256,
            _ => 1,
        }
    }

    /// Bytes per storage block (the element size for plain types).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 | DType::I8 | DType::F8_E4M3 => 1,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q4_K => 144,
            DType::Q6_K => 210,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// A float type kernels compute in (f32, f16, bf16). FP8 is a storage format read with
    /// scales, not one of these: see [`DType::is_scaled_storage`].
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// An element-wise type whose values mean something only with a scale tensor beside them
    /// (FP8 weights and activations). Such tensors are never converted to another dtype.
    pub fn is_scaled_storage(self) -> bool {
        matches!(self, DType::F8_E4M3)
    }

    /// Bytes needed for `elements` elements, or `None` when `elements` is not a whole number
    /// of blocks (or overflows).
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let bs = self.block_size();
        if elements % bs != 0 {
            return None;
        }
        (elements / bs).checked_mul(self.block_bytes())
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A plain (non-quantized) element type that kernels can view tensors as: plain data
/// (`bytemuck::Pod`: no padding, every bit pattern valid), so any tensor bytes are valid values.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for half::bf16 {
    const DTYPE: DType = DType::BF16;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for i64 {
    const DTYPE: DType = DType::I64;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}
impl Element for i8 {
    const DTYPE: DType = DType::I8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()), Some(d));
        }
        assert_eq!(DType::parse("Q4_K"), Some(DType::Q4_K));
        assert_eq!(DType::parse("f64"), None);
        assert_eq!(DType::parse("F8_E4M3"), Some(DType::F8_E4M3));
        assert_eq!(DType::parse("i8"), Some(DType::I8));
    }

    #[test]
    fn block_sizes_match_gguf() {
        assert_eq!(DType::Q4_0.bytes_for(64), Some(36));
        assert_eq!(DType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(DType::Q4_K.bytes_for(100), None);
        assert_eq!(DType::BF16.bytes_for(3), Some(6));
        assert_eq!(DType::F8_E4M3.bytes_for(3), Some(3));
        assert_eq!(DType::I8.bytes_for(5), Some(5));
        assert!(!DType::F8_E4M3.is_quantized() && !DType::F8_E4M3.is_float() && DType::F8_E4M3.is_scaled_storage());
    }
}
