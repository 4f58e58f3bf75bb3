//! GGUF metadata: the typed key/value section (all thirteen GGUF value types, arrays of any of
//! them, nested arrays bounded in depth) and typed accessors whose errors name the key.

use super::reader::Reader;
use super::GgufError;
use std::collections::BTreeMap;
use std::fmt;

/// Deepest array nesting accepted (GGUF files in practice use 1).
const MAX_ARRAY_DEPTH: usize = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// GGUF value type codes.
pub mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// The smallest encoding of one value of a type (strings: the 8-byte length; arrays: type +
/// count), used to bound element counts by the bytes left.
fn min_size(ty: u32) -> usize {
    match ty {
        value_type::U8 | value_type::I8 | value_type::BOOL => 1,
        value_type::U16 | value_type::I16 => 2,
        value_type::U32 | value_type::I32 | value_type::F32 => 4,
        value_type::ARRAY => 12,
        _ => 8,
    }
}

impl GgufValue {
    /// The GGUF type code of this value.
    pub fn type_code(&self) -> u32 {
        use value_type as t;
        match self {
            GgufValue::U8(_) => t::U8,
            GgufValue::I8(_) => t::I8,
            GgufValue::U16(_) => t::U16,
            GgufValue::I16(_) => t::I16,
            GgufValue::U32(_) => t::U32,
            GgufValue::I32(_) => t::I32,
            GgufValue::F32(_) => t::F32,
            GgufValue::Bool(_) => t::BOOL,
            GgufValue::String(_) => t::STRING,
            GgufValue::Array(_) => t::ARRAY,
            GgufValue::U64(_) => t::U64,
            GgufValue::I64(_) => t::I64,
            GgufValue::F64(_) => t::F64,
        }
    }

    /// A short type name for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }

    /// Any integer type as i128 (lossless), else `None`.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any numeric type as f64, else `None`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>, ty: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        use value_type as t;
        Ok(match ty {
            t::U8 => GgufValue::U8(r.u8(key)?),
            t::I8 => GgufValue::I8(r.u8(key)? as i8),
            t::U16 => GgufValue::U16(r.u16(key)?),
            t::I16 => GgufValue::I16(r.u16(key)? as i16),
            t::U32 => GgufValue::U32(r.u32(key)?),
            t::I32 => GgufValue::I32(r.u32(key)? as i32),
            t::F32 => GgufValue::F32(f32::from_bits(r.u32(key)?)),
            t::BOOL => {
                let at = r.pos() as u64;
                match r.u8(key)? {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => return Err(GgufError::Invalid { what: format!("bool value {b} of `{key}`"), offset: at }),
                }
            }
            t::STRING => GgufValue::String(r.string(key)?),
            t::U64 => GgufValue::U64(r.u64(key)?),
            t::I64 => GgufValue::I64(r.u64(key)? as i64),
            t::F64 => GgufValue::F64(f64::from_bits(r.u64(key)?)),
            t::ARRAY => {
                let at = r.pos() as u64;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Invalid {
                        what: format!("arrays nested deeper than {MAX_ARRAY_DEPTH} in `{key}`"),
                        offset: at,
                    });
                }
                let elem = r.u32(key)?;
                if elem > t::F64 {
                    return Err(GgufError::Invalid {
                        what: format!("array element type {elem} of `{key}`"),
                        offset: at,
                    });
                }
                let n = r.count(&format!("element count of array `{key}`"), min_size(elem))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(GgufValue::read(r, elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            other => {
                return Err(GgufError::Invalid {
                    what: format!("value type {other} of `{key}`"),
                    offset: r.pos().saturating_sub(4) as u64,
                })
            }
        })
    }
}

impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufValue::String(s) => write!(f, "{s:?}"),
            GgufValue::Array(items) => write!(f, "[{} items]", items.len()),
            GgufValue::Bool(b) => write!(f, "{b}"),
            GgufValue::F32(v) => write!(f, "{v}"),
            GgufValue::F64(v) => write!(f, "{v}"),
            other => write!(f, "{}", other.as_int().unwrap_or_default()),
        }
    }
}

/// The metadata section: key → value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufMetadata {
    pub entries: BTreeMap<String, GgufValue>,
}

fn wrong_type(key: &str, expected: &str, found: &GgufValue) -> GgufError {
    GgufError::WrongType { key: key.to_string(), expected: expected.to_string(), found: found.type_name().to_string() }
}

impl GgufMetadata {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// An integer value (any integer type) that fits in u64.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_int().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| wrong_type(key, "unsigned integer", v))
            })
            .transpose()
    }

    /// An integer value as usize (for sizes and counts).
    pub fn usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        match self.u64(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v).map(Some).map_err(|_| GgufError::Metadata {
                key: key.to_string(),
                message: format!("{v} does not fit in usize"),
            }),
        }
    }

    /// A token id (any integer type that fits in u32).
    pub fn u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.get(key)
            .map(|v| v.as_int().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| wrong_type(key, "u32", v)))
            .transpose()
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| wrong_type(key, "number", v))).transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| match v {
                GgufValue::Bool(b) => Ok(*b),
                other => Err(wrong_type(key, "bool", other)),
            })
            .transpose()
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| wrong_type(key, "string", v))).transpose()
    }

    /// An array value's items.
    pub fn array(&self, key: &str) -> Result<Option<&[GgufValue]>, GgufError> {
        self.get(key)
            .map(|v| match v {
                GgufValue::Array(items) => Ok(items.as_slice()),
                other => Err(wrong_type(key, "array", other)),
            })
            .transpose()
    }

    /// An array of strings.
    pub fn str_array(&self, key: &str) -> Result<Option<Vec<String>>, GgufError> {
        self.array_of(key, "array of strings", |v| v.as_str().map(str::to_string))
    }

    /// An array of integers, each fitting in i32.
    pub fn i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.array_of(key, "array of integers", |v| v.as_int().and_then(|i| i32::try_from(i).ok()))
    }

    /// An array of numbers as f32.
    pub fn f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.array_of(key, "array of numbers", |v| v.as_f64().map(|x| x as f32))
    }

    fn array_of<T>(
        &self,
        key: &str,
        expected: &str,
        f: impl Fn(&GgufValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        items.iter().map(|v| f(v).ok_or_else(|| wrong_type(key, expected, v))).collect::<Result<Vec<_>, _>>().map(Some)
    }
}
