//! Loading one plugin dylib: `lib_header_from_path` + `init_root_module::<PluginModRef>()` (not
//! `load_from_directory`, which caches one library per interface type), then reading the
//! plugin's identity and op list. Failures become a [`LoadError`] naming the file and the
//! reason, with the expected and found ABI versions spelled out. Libraries are never unloaded.

use super::discover::{scan_file, Candidate, FileScan, Origin};
use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use rtllm_plugin_api::{DeviceKind, OpDecl, PluginModRef, PLUGIN_ABI_VERSION};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Why a plugin failed to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// The path does not exist or its directory cannot be read.
    Missing(String),
    /// The file was named explicitly but is not an rtllm plugin.
    NotAPlugin(String),
    /// The dynamic loader refused the file.
    Open(String),
    /// Built against an incompatible plugin ABI version.
    AbiVersion { expected: String, found: String },
    /// Same version numbers, different layout of the ABI's types (or another abi_stable).
    AbiLayout { expected: String, found: String, detail: String },
    /// The root module's initializer or its op listing failed.
    Init(String),
}

/// A plugin file that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin {}: {}", path.display(), describe(kind))]
pub struct LoadError {
    pub path: PathBuf,
    pub kind: LoadErrorKind,
}

fn describe(kind: &LoadErrorKind) -> String {
    match kind {
        LoadErrorKind::Missing(r) => r.clone(),
        LoadErrorKind::NotAPlugin(r) => format!("not an rtllm plugin: {r}"),
        LoadErrorKind::Open(r) => format!("cannot be opened: {r}"),
        LoadErrorKind::AbiVersion { expected, found } => format!(
            "incompatible plugin ABI version: this rtllm expects rtllm_plugin {expected}, \
             the plugin was built against {found}; rebuild it against rtllm-plugin-api {expected}"
        ),
        LoadErrorKind::AbiLayout { expected, found, detail } => {
            format!("incompatible plugin ABI layout (this rtllm: rtllm_plugin {expected}, plugin: {found}): {detail}")
        }
        LoadErrorKind::Init(r) => format!("failed to initialize: {r}"),
    }
}

impl LoadError {
    pub(crate) fn new(path: &Path, kind: LoadErrorKind) -> Self {
        LoadError { path: path.to_path_buf(), kind }
    }
}

/// A loaded plugin: identity, file and its ops.
pub(crate) struct LoadedPlugin {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub ops: Vec<OpDecl>,
}

/// What became of one candidate.
pub(crate) enum LoadOutcome {
    Loaded(LoadedPlugin),
    /// Not an rtllm plugin (another dylib next to the executable): skipped quietly.
    Skipped(String),
    Failed(LoadError),
}

/// The most lines of abi_stable's layout report kept in an error message.
const MAX_DETAIL_LINES: usize = 24;

/// Loads `c`, unless it is no plugin or (with `device`) declares only other devices: then it is
/// skipped without being opened.
pub(crate) fn load_candidate(c: &Candidate, device: Option<DeviceKind>) -> LoadOutcome {
    let path = c.path.as_path();
    let skip_or_fail = |reason: String| match c.origin {
        Origin::Scanned => LoadOutcome::Skipped(reason),
        Origin::Explicit => LoadOutcome::Failed(LoadError::new(path, LoadErrorKind::NotAPlugin(reason))),
    };
    match scan_file(path) {
        Ok(scan) if !scan.exports_root => return skip_or_fail("it does not export abi_stable's root module".into()),
        Ok(FileScan { malformed: Some(why), .. }) => {
            return LoadOutcome::Failed(LoadError::new(path, LoadErrorKind::Open(why)))
        }
        Ok(scan) => match (device, scan.devices) {
            (Some(want), Some(declared)) if !declared.contains(&want) => {
                let names: Vec<String> = declared.iter().map(|d| d.to_string()).collect();
                return LoadOutcome::Skipped(format!("it declares only {} ops; this run uses {want}", names.join(",")));
            }
            _ => {}
        },
        Err(e) => return LoadOutcome::Failed(LoadError::new(path, LoadErrorKind::Open(e.to_string()))),
    }
    let header = match lib_header_from_path(path) {
        Ok(h) => h,
        Err(LibraryError::GetSymbolError { .. }) => {
            return skip_or_fail("it does not export abi_stable's root module".into())
        }
        Err(e) => return LoadOutcome::Failed(LoadError::new(path, classify(e, None))),
    };
    let base_name = header.root_mod_consts().base_name().as_str().to_string();
    if base_name != PluginModRef::BASE_NAME {
        return skip_or_fail(format!("its abi_stable root module is '{base_name}', not '{}'", PluginModRef::BASE_NAME));
    }
    let found = header.version_strings().version.as_str().to_string();
    let module = match header.init_root_module::<PluginModRef>() {
        Ok(m) => m,
        Err(e) => return LoadOutcome::Failed(LoadError::new(path, classify(e, Some(found)))),
    };
    match read_module(module) {
        Ok((name, version, ops)) => LoadOutcome::Loaded(LoadedPlugin { name, version, path: path.to_path_buf(), ops }),
        Err(reason) => LoadOutcome::Failed(LoadError::new(path, LoadErrorKind::Init(reason))),
    }
}

/// Calls the plugin's identity and op-list entry points (each guarded against panics).
fn read_module(module: PluginModRef) -> Result<(String, String, Vec<OpDecl>), String> {
    catch_unwind(AssertUnwindSafe(|| {
        let name = (module.name())().into_string();
        let version = (module.version())().into_string();
        let ops = (module.ops())().into_result().map_err(|e| format!("listing its ops failed: {e}"))?;
        Ok((name, version, ops.into_vec()))
    }))
    .unwrap_or_else(|p| Err(format!("panicked: {}", rtllm_plugin_api::author::panic_message(&p))))
}

/// Turns abi_stable's error into ours, always with both ABI versions when known.
fn classify(e: LibraryError, found: Option<String>) -> LoadErrorKind {
    let expected = PLUGIN_ABI_VERSION.to_string();
    let found = found.unwrap_or_else(|| "unknown".into());
    match e {
        LibraryError::OpenError { err, .. } => LoadErrorKind::Open(err.to_string()),
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => {
            LoadErrorKind::AbiVersion { expected: expected_version.to_string(), found: actual_version.to_string() }
        }
        LibraryError::ParseVersionError(p) => {
            LoadErrorKind::AbiVersion { expected, found: format!("{found} (unparseable: {p})") }
        }
        LibraryError::AbiInstability(detail) => {
            LoadErrorKind::AbiLayout { expected, found, detail: trim_detail(&detail.to_string()) }
        }
        LibraryError::InvalidAbiHeader(h) => LoadErrorKind::AbiLayout {
            expected,
            found,
            detail: format!("built with an incompatible abi_stable (its header: {h:?})"),
        },
        LibraryError::InvalidCAbi { expected: want, found: got } => {
            LoadErrorKind::AbiLayout { expected, found, detail: format!("C ABI differs: expected {want}, found {got}") }
        }
        LibraryError::RootModule { err, .. } => LoadErrorKind::Init(trim_detail(&err.to_string())),
        other => LoadErrorKind::Init(trim_detail(&other.to_string())),
    }
}

fn trim_detail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let mut out = lines.iter().take(MAX_DETAIL_LINES).copied().collect::<Vec<_>>().join("\n  ");
    if lines.len() > MAX_DETAIL_LINES {
        out.push_str(&format!("\n  ... ({} more lines; RTLLM_LOG=debug shows them)", lines.len() - MAX_DETAIL_LINES));
        tracing::debug!("full ABI report:\n{text}");
    }
    out
}
