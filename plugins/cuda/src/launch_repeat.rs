//! A diagnostic for attributing GPU time inside a running pipeline: `RTLLM_CUDA_REPEAT` makes
//! chosen kernels launch more than once, back to back, so a step-time profile
//! (`RTLLM_PROFILE_STEPS=1`) shows what one more copy of each costs *in context* (overlapped by
//! programmatic dependent launch, inside CUDA graphs), which isolated per-kernel timings
//! (ncu serializes kernels) cannot. Only meaningful for kernels whose repeat computes the same
//! result (GEMVs, attention, norms writing separate outputs, greedy argmax): the result of a
//! non-idempotent kernel repeated is wrong, so this is never for real runs.
//!
//! Syntax: `RTLLM_CUDA_REPEAT=<name part>[@<blocks>]:<extra launches>[,...]`, e.g.
//! `gemv_m1_bf16@384:1` (one extra launch of the 384-block bf16 GEMV) or `pa_decode:3`.

use crate::runtime::Function;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The environment variable read once per process.
pub const ENV: &str = "RTLLM_CUDA_REPEAT";

/// One rule: kernels whose name contains `part` (and, when given, whose grid has `blocks`
/// blocks) launch `extra` more times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub part: String,
    pub blocks: Option<u32>,
    pub extra: usize,
}

/// Parses the variable's value; malformed rules are reported, not ignored.
pub fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (target, extra) = item.rsplit_once(':').ok_or_else(|| format!("{ENV}: `{item}` has no `:<count>`"))?;
        let extra = extra.parse::<usize>().map_err(|e| format!("{ENV}: count in `{item}`: {e}"))?;
        let (part, blocks) = match target.split_once('@') {
            Some((p, b)) => (p, Some(b.parse::<u32>().map_err(|e| format!("{ENV}: blocks in `{item}`: {e}"))?)),
            None => (target, None),
        };
        if part.is_empty() {
            return Err(format!("{ENV}: `{item}` names no kernel"));
        }
        rules.push(Rule { part: part.to_string(), blocks, extra });
    }
    Ok(rules)
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        if spec.trim().is_empty() {
            return Vec::new();
        }
        match parse(&spec) {
            Ok(r) => {
                eprintln!("rtllm-cuda: {ENV}={spec}: DIAGNOSTIC ONLY, repeated kernels ({r:?})");
                r
            }
            Err(e) => {
                eprintln!("rtllm-cuda: ignoring {e}");
                Vec::new()
            }
        }
    })
}

fn names() -> &'static Mutex<HashMap<usize, String>> {
    static NAMES: OnceLock<Mutex<HashMap<usize, String>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Remembers `f`'s name when any rule is set (called when a function is looked up).
pub fn note_function(f: Function, name: &str) {
    if rules().is_empty() {
        return;
    }
    if let Ok(mut map) = names().lock() {
        map.insert(f.0 as usize, name.to_string());
    }
}

/// Extra launches for `f` with a grid of `blocks` blocks (0 without rules).
pub fn extra_launches(f: Function, blocks: u32) -> usize {
    let rules = rules();
    if rules.is_empty() {
        return 0;
    }
    let Ok(map) = names().lock() else { return 0 };
    let Some(name) = map.get(&(f.0 as usize)) else { return 0 };
    rules.iter().filter(|r| name.contains(&r.part) && r.blocks.is_none_or(|b| b == blocks)).map(|r| r.extra).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_and_rejects_malformed_ones() {
        let r = parse("gemv_m1_bf16@384:1, pa_decode:3").unwrap();
        assert_eq!(
            r,
            vec![
                Rule { part: "gemv_m1_bf16".into(), blocks: Some(384), extra: 1 },
                Rule { part: "pa_decode".into(), blocks: None, extra: 3 },
            ]
        );
        assert!(parse("").unwrap().is_empty());
        for bad in ["gemv", "gemv:x", "gemv@x:1", ":2", "@3:1"] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
