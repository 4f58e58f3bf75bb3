//! What an HF FP8 checkpoint says about itself: `config.json`'s `quantization_config` (and
//! ModelOpt's `hf_quant_config.json`) read into one [`Fp8Format`] — the weight-scale
//! granularity, the activation scheme and the modules left unquantized — for the three
//! producers users get FP8 checkpoints from:
//!
//! - compressed-tensors (llm-compressor): `quant_method: "compressed-tensors"`, `format:
//!   "float-quantized"`, one config group targeting `Linear` with 8-bit float weights
//!   (`strategy` `tensor` or `channel`) and input activations static per tensor or dynamic per
//!   token; `ignore` (names or `re:` patterns); an optional `kv_cache_scheme` (8-bit float,
//!   static per tensor: the FP8 KV cache with per-layer `k_scale` / `v_scale`).
//! - NVIDIA ModelOpt: `quant_method: "modelopt"` in config.json and/or `hf_quant_config.json`'s
//!   `quantization`, `quant_algo` `FP8` (per-tensor weight scale, static per-tensor input
//!   scale) or `FP8_PER_CHANNEL_PER_TOKEN`; `exclude_modules` (wildcards); an optional
//!   `kv_cache_quant_algo: FP8`.
//! - fbgemm (transformers' `FbgemmFp8Config`, Meta's FP8 releases): `quant_method:
//!   "fbgemm_fp8"`, per-channel weight scales, dynamic per-token activations capped at
//!   `activation_scale_ub`; `modules_to_not_convert` (substrings of module names).
//!
//! Anything else — another method, format, bit width, strategy, another KV-cache scheme,
//! fields that disagree — is an error naming the field. Never a silent fallback.

use rtllm_plugin_api::shapes::fp8::Fp8Activation;
use serde_json::{Map, Value};

/// Who wrote the checkpoint (the tensor names and shapes each writes differ slightly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producer {
    CompressedTensors,
    ModelOpt,
    Fbgemm,
}

/// The weight-scale granularity the checkpoint declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightScale {
    PerTensor,
    PerChannel,
}

/// How a module name is matched by the checkpoint's list of unquantized modules.
#[derive(Clone, Debug, PartialEq)]
pub enum Ignore {
    /// The exact module name, or its last components (`lm_head`).
    Name(String),
    /// compressed-tensors `re:<regex>`, matched against the whole module name.
    Regex(String),
    /// ModelOpt's `fnmatch`-style wildcard (`*`).
    Wildcard(String),
    /// fbgemm: a substring of the module name.
    Substring(String),
}

/// One checkpoint's FP8 scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct Fp8Format {
    pub producer: Producer,
    pub weight_scale: WeightScale,
    pub activation: Fp8Activation,
    pub ignore: Vec<Ignore>,
    /// The checkpoint declares an FP8 KV cache with static per-tensor (per-layer) scales.
    pub kv_cache: bool,
}

fn field_err(field: &str, message: impl std::fmt::Display) -> String {
    format!("quantization_config.{field}: {message}")
}

fn str_field<'a>(obj: &'a Map<String, Value>, field: &str, path: &str) -> Result<Option<&'a str>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(field_err(&format!("{path}{field}"), format!("expected a string, got {other}"))),
    }
}

/// The object at `obj[field]`, or an error naming `path + field`.
fn object<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    path: &str,
    missing: &str,
) -> Result<&'a Map<String, Value>, String> {
    obj.get(field).and_then(Value::as_object).ok_or_else(|| field_err(&format!("{path}{field}"), missing))
}

fn string_list(obj: &Map<String, Value>, field: &str, path: &str) -> Result<Vec<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| field_err(&format!("{path}{field}"), "expected a list of strings")),
        Some(other) => Err(field_err(&format!("{path}{field}"), format!("expected a list of strings, got {other}"))),
    }
}

/// Reads the FP8 scheme from `config.json`'s `quantization_config` (`config`, None when absent)
/// and the contents of `hf_quant_config.json` (`hf_quant`, None when absent). `Ok(None)`: the
/// checkpoint declares no quantization.
pub fn parse(config: Option<&Value>, hf_quant: Option<&Value>) -> Result<Option<Fp8Format>, String> {
    let modelopt_file = match hf_quant {
        None => None,
        Some(v) => Some(
            v.get("quantization")
                .and_then(Value::as_object)
                .ok_or("hf_quant_config.json: `quantization` must be an object")?,
        ),
    };
    let Some(config) = config else {
        return modelopt_file.map(|q| modelopt(q, "hf_quant_config.json: quantization.")).transpose();
    };
    let obj = config.as_object().ok_or_else(|| field_err("", "expected an object"))?;
    let method = str_field(obj, "quant_method", "")?.ok_or_else(|| field_err("quant_method", "missing"))?;
    match method {
        "compressed-tensors" => compressed_tensors(obj).map(Some),
        "fbgemm_fp8" => fbgemm(obj).map(Some),
        "modelopt" => {
            let from_config =
                if obj.contains_key("quant_algo") { Some(modelopt(obj, "quantization_config.")?) } else { None };
            let from_file = modelopt_file.map(|q| modelopt(q, "hf_quant_config.json: quantization.")).transpose()?;
            match (from_config, from_file) {
                (Some(a), Some(b))
                    if (a.weight_scale, a.activation, a.kv_cache) != (b.weight_scale, b.activation, b.kv_cache) =>
                {
                    Err(field_err("quant_algo", "config.json and hf_quant_config.json describe different FP8 schemes"))
                }
                (Some(a), _) => Ok(Some(a)),
                (None, Some(b)) => Ok(Some(b)),
                (None, None) => Err(field_err("quant_algo", "missing, and there is no hf_quant_config.json")),
            }
        }
        other => Err(field_err(
            "quant_method",
            format!("`{other}` is not supported (FP8 checkpoints: compressed-tensors, modelopt, fbgemm_fp8)"),
        )),
    }
}

fn compressed_tensors(obj: &Map<String, Value>) -> Result<Fp8Format, String> {
    match str_field(obj, "format", "")? {
        Some("float-quantized") => {}
        Some(other) => {
            return Err(field_err("format", format!("`{other}` is not supported (FP8: `float-quantized`)")));
        }
        None => return Err(field_err("format", "missing (FP8: `float-quantized`)")),
    }
    let kv_cache = match obj.get("kv_cache_scheme") {
        None | Some(Value::Null) => false,
        Some(Value::Object(kv)) => {
            kv_scheme(kv)?;
            true
        }
        Some(other) => return Err(field_err("kv_cache_scheme", format!("expected an object, got {other}"))),
    };
    let groups = obj
        .get("config_groups")
        .and_then(Value::as_object)
        .ok_or_else(|| field_err("config_groups", "missing or not an object"))?;
    let [(name, group)] = groups.iter().collect::<Vec<_>>()[..] else {
        return Err(field_err("config_groups", format!("exactly one group is supported, got {}", groups.len())));
    };
    let path = format!("config_groups.{name}.");
    let group = group.as_object().ok_or_else(|| field_err(&path, "not an object"))?;
    let targets = string_list(group, "targets", &path)?;
    if targets != ["Linear"] {
        return Err(field_err(&format!("{path}targets"), format!("only [\"Linear\"] is supported, got {targets:?}")));
    }
    if group.get("output_activations").is_some_and(|v| !v.is_null()) {
        return Err(field_err(&format!("{path}output_activations"), "output quantization is not supported"));
    }
    let weights = object(group, "weights", &path, "missing")?;
    let wpath = format!("{path}weights.");
    float8(weights, &wpath)?;
    if weights.get("dynamic").and_then(Value::as_bool) == Some(true) {
        return Err(field_err(&format!("{wpath}dynamic"), "dynamic weight quantization is not a checkpoint format"));
    }
    let weight_scale = match str_field(weights, "strategy", &wpath)? {
        Some("tensor") => WeightScale::PerTensor,
        Some("channel") => WeightScale::PerChannel,
        other => {
            return Err(field_err(
                &format!("{wpath}strategy"),
                format!("{other:?} is not supported (tensor or channel)"),
            ))
        }
    };
    let acts = object(group, "input_activations", &path, "missing (weight-only FP8 is not supported)")?;
    let apath = format!("{path}input_activations.");
    float8(acts, &apath)?;
    let dynamic =
        acts.get("dynamic").and_then(Value::as_bool).ok_or_else(|| field_err(&format!("{apath}dynamic"), "missing"))?;
    let activation = match (dynamic, str_field(acts, "strategy", &apath)?) {
        (false, Some("tensor")) => Fp8Activation::Static,
        (true, Some("token")) => Fp8Activation::Dynamic { upper_bound: None },
        (d, s) => {
            return Err(field_err(
                &format!("{apath}strategy"),
                format!("{s:?} with dynamic={d} is not supported (static `tensor` or dynamic `token`)"),
            ))
        }
    };
    let ignore = string_list(obj, "ignore", "")?
        .into_iter()
        .map(|s| match s.strip_prefix("re:") {
            Some(re) => Ignore::Regex(re.to_string()),
            None => Ignore::Name(s),
        })
        .collect();
    Ok(Fp8Format { producer: Producer::CompressedTensors, weight_scale, activation, ignore, kv_cache })
}

/// compressed-tensors' `kv_cache_scheme`: 8-bit float, static, one scale per tensor (per layer).
fn kv_scheme(kv: &Map<String, Value>) -> Result<(), String> {
    let path = "kv_cache_scheme.";
    float8(kv, path)?;
    if kv.get("dynamic").and_then(Value::as_bool) != Some(false) {
        return Err(field_err(&format!("{path}dynamic"), "only static (`false`) KV-cache scales are supported"));
    }
    match str_field(kv, "strategy", path)? {
        Some("tensor") => Ok(()),
        other => Err(field_err(
            &format!("{path}strategy"),
            format!("{other:?} is not supported (`tensor`: one k_scale and one v_scale per layer)"),
        )),
    }
}

/// An 8-bit symmetric float quantization args block.
fn float8(args: &Map<String, Value>, path: &str) -> Result<(), String> {
    if str_field(args, "type", path)? != Some("float") {
        return Err(field_err(&format!("{path}type"), "only `float` (FP8 E4M3) is supported"));
    }
    if args.get("num_bits").and_then(Value::as_u64) != Some(8) {
        return Err(field_err(&format!("{path}num_bits"), "only 8 is supported"));
    }
    if args.get("symmetric").and_then(Value::as_bool) == Some(false) {
        return Err(field_err(&format!("{path}symmetric"), "asymmetric FP8 is not supported"));
    }
    for f in ["group_size", "block_structure"] {
        if args.get(f).is_some_and(|v| !v.is_null()) {
            return Err(field_err(&format!("{path}{f}"), "group and block scales are not supported"));
        }
    }
    Ok(())
}

fn modelopt(obj: &Map<String, Value>, path: &str) -> Result<Fp8Format, String> {
    let err = |field: &str, m: String| format!("{path}{field}: {m}");
    let (weight_scale, activation) = match str_field(obj, "quant_algo", "")? {
        Some("FP8") => (WeightScale::PerTensor, Fp8Activation::Static),
        Some("FP8_PER_CHANNEL_PER_TOKEN") => (WeightScale::PerChannel, Fp8Activation::Dynamic { upper_bound: None }),
        Some(other) => {
            return Err(err("quant_algo", format!("`{other}` is not supported (FP8, FP8_PER_CHANNEL_PER_TOKEN)")))
        }
        None => return Err(err("quant_algo", "missing".into())),
    };
    if obj.get("kv_cache_scheme").is_some_and(|v| !v.is_null()) {
        return Err(err("kv_cache_scheme", "ModelOpt declares its KV cache with kv_cache_quant_algo".into()));
    }
    let kv_cache = match str_field(obj, "kv_cache_quant_algo", "")? {
        None => false,
        Some("FP8") => true,
        Some(other) => return Err(err("kv_cache_quant_algo", format!("`{other}` is not supported (FP8)"))),
    };
    let mut ignore: Vec<Ignore> =
        string_list(obj, "exclude_modules", path)?.into_iter().map(Ignore::Wildcard).collect();
    ignore.extend(string_list(obj, "ignore", path)?.into_iter().map(Ignore::Wildcard));
    Ok(Fp8Format { producer: Producer::ModelOpt, weight_scale, activation, ignore, kv_cache })
}

fn fbgemm(obj: &Map<String, Value>) -> Result<Fp8Format, String> {
    let ub = match obj.get("activation_scale_ub") {
        None | Some(Value::Null) => 1200.0, // transformers' FbgemmFp8Config default
        Some(v) => v.as_f64().ok_or_else(|| field_err("activation_scale_ub", format!("expected a number, got {v}")))?,
    };
    if !(ub.is_finite() && ub > 0.0) {
        return Err(field_err("activation_scale_ub", format!("must be a positive finite number, got {ub}")));
    }
    let mut ignore: Vec<Ignore> =
        string_list(obj, "modules_to_not_convert", "")?.into_iter().map(Ignore::Substring).collect();
    if ignore.is_empty() {
        ignore.push(Ignore::Substring("lm_head".into())); // transformers' default
    }
    Ok(Fp8Format {
        producer: Producer::Fbgemm,
        weight_scale: WeightScale::PerChannel,
        activation: Fp8Activation::Dynamic { upper_bound: Some(ub as f32) },
        ignore,
        kv_cache: false,
    })
}

impl Fp8Format {
    /// Whether module `module` (e.g. `model.layers.0.mlp.down_proj`) is left unquantized.
    pub fn ignores(&self, module: &str) -> bool {
        self.ignore.iter().any(|i| match i {
            Ignore::Name(n) => module == n || module.ends_with(&format!(".{n}")),
            Ignore::Regex(re) => fancy_regex::Regex::new(&format!("^(?:{re})$"))
                .ok()
                .and_then(|r| r.is_match(module).ok())
                .unwrap_or(false),
            Ignore::Wildcard(w) => wildcard(w, module),
            Ignore::Substring(s) => module.contains(s.as_str()),
        })
    }

    /// Checks every `re:` pattern compiles (a bad one is the config's error, not a silent miss).
    pub fn check_patterns(&self) -> Result<(), String> {
        for i in &self.ignore {
            if let Ignore::Regex(re) = i {
                fancy_regex::Regex::new(re)
                    .map_err(|e| field_err("ignore", format!("`re:{re}` is not a regex: {e}")))?;
            }
        }
        Ok(())
    }
}

/// `fnmatch` with `*` (any run) and `?` (one character).
fn wildcard(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
