//! Op attributes: a small ordered map from names to int, float, bool, string or int-list values.

use crate::error::PluginError;
use abi_stable::{
    std_types::{RString, RVec, Tuple2},
    StableAbi,
};
use std::fmt;

/// One attribute value.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(RString),
    Ints(RVec<i64>),
}

impl AttrValue {
    pub fn kind(&self) -> &'static str {
        match self {
            AttrValue::Int(_) => "int",
            AttrValue::Float(_) => "float",
            AttrValue::Bool(_) => "bool",
            AttrValue::Str(_) => "string",
            AttrValue::Ints(_) => "int list",
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
            AttrValue::Str(v) => write!(f, "{:?}", v.as_str()),
            AttrValue::Ints(v) => write!(f, "{:?}", v.as_slice()),
        }
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<usize> for AttrValue {
    fn from(v: usize) -> Self {
        AttrValue::Int(v as i64)
    }
}
impl From<i32> for AttrValue {
    fn from(v: i32) -> Self {
        AttrValue::Int(v as i64)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Float(v)
    }
}
impl From<f32> for AttrValue {
    fn from(v: f32) -> Self {
        AttrValue::Float(v as f64)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.into())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v.into())
    }
}
impl From<Vec<i64>> for AttrValue {
    fn from(v: Vec<i64>) -> Self {
        AttrValue::Ints(v.into())
    }
}

/// Named attributes of one op call, in insertion order; a later `set` replaces an earlier one.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct Attrs {
    pub entries: RVec<Tuple2<RString, AttrValue>>,
}

impl Attrs {
    pub fn new() -> Self {
        Attrs::default()
    }

    /// Builder form of [`Attrs::set`].
    pub fn with(mut self, name: &str, value: impl Into<AttrValue>) -> Self {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: &str, value: impl Into<AttrValue>) {
        let value = value.into();
        if let Some(entry) = self.entries.iter_mut().find(|e| e.0.as_str() == name) {
            entry.1 = value;
        } else {
            self.entries.push(Tuple2(name.into(), value));
        }
    }

    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        self.entries.iter().find(|e| e.0.as_str() == name).map(|e| &e.1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttrValue)> {
        self.entries.iter().map(|e| (e.0.as_str(), &e.1))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn missing(name: &str) -> PluginError {
        PluginError::new(format!("missing attribute '{name}'"))
    }

    fn wrong(name: &str, want: &str, got: &AttrValue) -> PluginError {
        PluginError::new(format!("attribute '{name}' must be {want}, got {} {got}", got.kind()))
    }

    pub fn int(&self, name: &str) -> Result<i64, PluginError> {
        match self.get(name) {
            Some(AttrValue::Int(v)) => Ok(*v),
            Some(other) => Err(Self::wrong(name, "an int", other)),
            None => Err(Self::missing(name)),
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, PluginError> {
        if self.get(name).is_none() {
            return Ok(default);
        }
        self.int(name)
    }

    /// A non-negative int attribute as `usize`.
    pub fn usize(&self, name: &str) -> Result<usize, PluginError> {
        let v = self.int(name)?;
        usize::try_from(v).map_err(|_| PluginError::new(format!("attribute '{name}' must be >= 0, got {v}")))
    }

    /// A float attribute; ints are accepted and converted.
    pub fn float(&self, name: &str) -> Result<f64, PluginError> {
        match self.get(name) {
            Some(AttrValue::Float(v)) => Ok(*v),
            Some(AttrValue::Int(v)) => Ok(*v as f64),
            Some(other) => Err(Self::wrong(name, "a float", other)),
            None => Err(Self::missing(name)),
        }
    }

    pub fn float_or(&self, name: &str, default: f64) -> Result<f64, PluginError> {
        if self.get(name).is_none() {
            return Ok(default);
        }
        self.float(name)
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, PluginError> {
        match self.get(name) {
            Some(AttrValue::Bool(v)) => Ok(*v),
            Some(other) => Err(Self::wrong(name, "a bool", other)),
            None => Ok(default),
        }
    }

    pub fn str(&self, name: &str) -> Result<&str, PluginError> {
        match self.get(name) {
            Some(AttrValue::Str(v)) => Ok(v.as_str()),
            Some(other) => Err(Self::wrong(name, "a string", other)),
            None => Err(Self::missing(name)),
        }
    }

    pub fn str_or<'a>(&'a self, name: &str, default: &'a str) -> Result<&'a str, PluginError> {
        if self.get(name).is_none() {
            return Ok(default);
        }
        self.str(name)
    }

    pub fn ints(&self, name: &str) -> Result<&[i64], PluginError> {
        match self.get(name) {
            Some(AttrValue::Ints(v)) => Ok(v.as_slice()),
            Some(other) => Err(Self::wrong(name, "an int list", other)),
            None => Err(Self::missing(name)),
        }
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_and_errors() {
        let a = Attrs::new().with("heads", 9usize).with("eps", 1e-5).with("name", "x").with("heads", 3usize);
        assert_eq!(a.int("heads").unwrap(), 3);
        assert_eq!(a.float("heads").unwrap(), 3.0);
        assert_eq!(a.float("eps").unwrap(), 1e-5);
        assert_eq!(a.int_or("missing", 7).unwrap(), 7);
        assert!(a.int("eps").unwrap_err().message().contains("must be an int"));
        assert!(a.str("nope").unwrap_err().message().contains("missing attribute 'nope'"));
        assert_eq!(a.entries.len(), 3);
    }
}
