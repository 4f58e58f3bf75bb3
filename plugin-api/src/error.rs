//! The ABI's error value: a message that names the op and the cause.

use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

/// An error returned across the plugin boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    pub message: RString,
}

impl PluginError {
    pub fn new(message: impl Into<String>) -> Self {
        PluginError { message: RString::from(message.into()) }
    }

    /// Prefixes the message with some context, e.g. the op name.
    pub fn context(self, what: impl fmt::Display) -> Self {
        PluginError::new(format!("{what}: {}", self.message))
    }

    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<String> for PluginError {
    fn from(s: String) -> Self {
        PluginError::new(s)
    }
}

impl From<&str> for PluginError {
    fn from(s: &str) -> Self {
        PluginError::new(s)
    }
}

/// Returns early with a [`PluginError`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::PluginError::new(format!($($arg)*)))
    };
}

/// Returns early with a [`PluginError`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail!($($arg)*);
        }
    };
}
