//! Errors of TOML model files and the helpers that make them point somewhere: byte offsets to
//! line numbers, locations (`file:line` + key path), and "did you mean" name suggestions.

use crate::builder::BuildError;
use std::path::PathBuf;

/// Why a TOML model file could not be loaded. Build-time errors (unknown op, shape mismatch,
/// missing weight, unknown config reference) are [`BuildError`]s whose scope starts with the
/// same `file:line: `key`` prefix.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Syntax { file: String, line: usize, message: String },
    #[error("{file}:{line}: `{key}`: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
}

/// Where something is in the file: its line (1-based) and TOML key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub line: usize,
    pub key: String,
}

/// Maps byte offsets of one source text to line numbers.
pub struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}

/// Prefixes a build error's scope with the file location, so it reads
/// `file:line: `key`: layer 3: op 'matmul' on inputs (...)`.
pub fn locate_build_error(file: &str, loc: &Loc, e: BuildError) -> BuildError {
    let at = |scope: String| {
        if scope.is_empty() {
            format!("{file}:{}: `{}`", loc.line, loc.key)
        } else {
            format!("{file}:{}: `{}`: {scope}", loc.line, loc.key)
        }
    };
    match e {
        BuildError::UnknownOp { scope, op, hint } => BuildError::UnknownOp { scope: at(scope), op, hint },
        BuildError::Op { scope, op, inputs, message } => BuildError::Op { scope: at(scope), op, inputs, message },
        BuildError::MissingWeight { scope, name, hint } => BuildError::MissingWeight { scope: at(scope), name, hint },
        BuildError::Invalid { scope, message } => BuildError::Invalid { scope: at(scope), message },
    }
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Up to three candidates close to `name`, as ` (did you mean: a, b)`, or "".
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let mut scored: Vec<(usize, &str)> = candidates.into_iter().map(|c| (edit_distance(name, c), c)).collect();
    scored.sort();
    scored.dedup();
    let limit = (name.len() / 2).max(2);
    let close: Vec<&str> = scored.into_iter().filter(|(d, _)| *d <= limit).take(3).map(|(_, c)| c).collect();
    if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean: {})", close.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_to_lines() {
        let l = Lines::new("a\nbc\n\nd");
        assert_eq!(l.line(0), 1);
        assert_eq!(l.line(1), 1);
        assert_eq!(l.line(2), 2);
        assert_eq!(l.line(5), 3);
        assert_eq!(l.line(6), 4);
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("hidden_sise", ["hidden_size", "head_dim"]), " (did you mean: hidden_size)");
        assert_eq!(did_you_mean("zzzzzz", ["hidden_size"]), "");
    }
}
