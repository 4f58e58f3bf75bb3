//! The plugin's ops, made from the manifest at run time: the artifacts (embedded at build time,
//! or read from `$RTLLM_TRITON_ARTIFACTS` when set), the parsed manifest grouped by op, and one
//! op declaration per manifest op. The ABI's op hooks are plain `extern "C"` functions without
//! a state pointer, so each op takes a numbered slot: `Slot<I>` implements `Op` by looking up
//! op `I` of the manifest, and `declare::<Slot<I>>()` gives its hooks.

use crate::kernel::TritonKernel;
use crate::manifest::{KernelEntry, Manifest, ManifestError};
use crate::rules;
use rtllm_plugin_api::{declare, Attrs, DType, DeviceKind, Op, OpDecl, OpExample, PluginError, TensorMeta};
use std::collections::HashMap;
use std::sync::OnceLock;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

/// Environment variable naming an artifacts directory to use instead of the embedded one.
pub const ARTIFACTS_ENV: &str = "RTLLM_TRITON_ARTIFACTS";

/// At most this many distinct ops (slots); raise it (and the slot list) to register more.
pub const MAX_OPS: usize = 32;

/// The artifact files: name → bytes.
pub struct Artifacts {
    pub files: HashMap<String, Vec<u8>>,
    pub origin: String,
}

impl Artifacts {
    /// The embedded artifacts.
    pub fn embedded() -> Artifacts {
        Artifacts {
            files: embedded::EMBEDDED.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect(),
            origin: "embedded kernels/triton/artifacts".into(),
        }
    }

    /// Every .json and .cubin file of `dir`.
    pub fn from_dir(dir: &std::path::Path) -> Result<Artifacts, String> {
        let rd = std::fs::read_dir(dir).map_err(|e| format!("{ARTIFACTS_ENV}={}: {e}", dir.display()))?;
        let mut files = HashMap::new();
        for entry in rd.flatten() {
            let p = entry.path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "cubin")) {
                let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                files.insert(entry.file_name().to_string_lossy().into_owned(), bytes);
            }
        }
        Ok(Artifacts { files, origin: dir.display().to_string() })
    }
}

/// One op: its name and the manifest entries that provide it.
pub struct OpSpec {
    pub name: String,
    pub entries: Vec<KernelEntry>,
    pub dtypes: Vec<DType>,
    pub priority: i32,
    pub summary: String,
}

/// The parsed manifest with its artifacts.
pub struct Registry {
    pub ops: Vec<OpSpec>,
    pub artifacts: Artifacts,
    pub manifest: Manifest,
}

impl Registry {
    /// Parses `artifacts`' manifest.json and groups its kernels by op.
    pub fn new(artifacts: Artifacts) -> Result<Registry, ManifestError> {
        let text = artifacts.files.get("manifest.json").ok_or_else(|| {
            ManifestError::Json(format!(
                "no manifest.json in {} (run kernels/triton/compile.py on a GPU machine)",
                artifacts.origin
            ))
        })?;
        let text = std::str::from_utf8(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        let manifest = Manifest::parse(text, &|f| artifacts.files.contains_key(f))?;
        let mut ops = Vec::new();
        for name in manifest.op_names() {
            let entries: Vec<KernelEntry> = manifest.kernels.iter().filter(|k| k.op == name).cloned().collect();
            let mut dtypes = Vec::new();
            for e in &entries {
                for v in &e.variants {
                    dtypes.extend(v.types.values().copied());
                }
                for i in &e.inputs {
                    if let crate::manifest::DtypeSpec::Fixed(d) = i.dtype {
                        dtypes.push(d);
                    }
                }
            }
            dtypes.sort();
            dtypes.dedup();
            let priority = entries.iter().map(|e| e.priority).max().unwrap_or(0);
            let summary = entries.first().map(|e| e.summary.clone()).unwrap_or_default();
            ops.push(OpSpec { name: name.to_string(), entries, dtypes, priority, summary });
        }
        if ops.len() > MAX_OPS {
            return Err(ManifestError::Json(format!(
                "the manifest declares {} ops; this plugin has {MAX_OPS} slots (raise MAX_OPS in plugins/triton/src/registry.rs)",
                ops.len()
            )));
        }
        Ok(Registry { ops, artifacts, manifest })
    }

    /// The op declarations, one per manifest op.
    pub fn decls(&self) -> Vec<OpDecl> {
        self.ops
            .iter()
            .zip(SLOTS.iter())
            .map(|(op, slot)| {
                let mut d = slot();
                d.name = op.name.as_str().into();
                d.dtypes = op.dtypes.clone().into();
                d.priority = op.priority;
                d.summary = op.summary.as_str().into();
                d
            })
            .collect()
    }

    /// The op in slot `i`.
    pub fn op(&self, i: usize) -> Result<&OpSpec, PluginError> {
        self.ops.get(i).ok_or_else(|| PluginError::new(format!("rtllm-triton: no op in slot {i}")))
    }
}

/// The process-wide registry: from `$RTLLM_TRITON_ARTIFACTS` if set, else embedded.
pub fn global() -> Result<&'static Registry, PluginError> {
    static REG: OnceLock<Result<Registry, String>> = OnceLock::new();
    REG.get_or_init(|| {
        let artifacts = match std::env::var_os(ARTIFACTS_ENV) {
            Some(dir) => Artifacts::from_dir(std::path::Path::new(&dir))?,
            None => Artifacts::embedded(),
        };
        Registry::new(artifacts).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| PluginError::new(format!("rtllm-triton: {e}")))
}

/// The plugin's op list (registered with `register_op_set!`).
pub fn manifest_ops() -> Result<Vec<OpDecl>, PluginError> {
    Ok(global()?.decls())
}

/// Op slot `I`: the `I`-th op of the global manifest.
pub struct Slot<const I: usize>;

impl<const I: usize> Op for Slot<I> {
    const NAME: &'static str = "rtllm-triton";
    const DEVICE: DeviceKind = DeviceKind::Cuda;
    type Kernel = TritonKernel;

    fn dtypes() -> Vec<DType> {
        global().and_then(|r| r.op(I).map(|o| o.dtypes.clone())).unwrap_or_default()
    }

    fn infer(inputs: &[TensorMeta], attrs: &Attrs) -> Result<Vec<TensorMeta>, PluginError> {
        let op = global()?.op(I)?;
        rules::infer(&op.name, &op.entries, inputs, attrs).map(|(_, out)| out)
    }

    fn create(inputs: &[TensorMeta], attrs: &Attrs) -> Result<TritonKernel, PluginError> {
        let reg = global()?;
        let op = reg.op(I)?;
        let (entry, _) = rules::infer(&op.name, &op.entries, inputs, attrs)?;
        TritonKernel::create(reg, entry, inputs, attrs)
    }

    fn examples() -> Vec<OpExample> {
        global()
            .and_then(|r| r.op(I).map(|o| o.entries.iter().flat_map(|e| e.examples.iter().cloned()).collect()))
            .unwrap_or_default()
    }
}

macro_rules! slots {
    ($($i:literal)*) => { [$(declare::<Slot<$i>> as fn() -> OpDecl),*] };
}

/// The declaration makers of every slot.
static SLOTS: [fn() -> OpDecl; MAX_OPS] =
    slots!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
