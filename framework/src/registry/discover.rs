//! Plugin dylib discovery: explicit paths (API/config/`--plugin-path`), `RTLLM_PLUGIN_PATH`,
//! the running executable's directory and its `plugins/` subfolder. Yields candidate files in a
//! deterministic order, deduplicated by canonical path (and file identity), and cheaply tells
//! rtllm plugins from other dylibs by looking for abi_stable's root-module symbol, and which
//! devices a plugin declares (`export_plugin!`'s `devices:`), both by reading the file.

use rtllm_plugin_api::DeviceKind;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Colon-separated (`;` on Windows) directories or files to load plugins from.
pub const PLUGIN_PATH_ENV: &str = "RTLLM_PLUGIN_PATH";

/// The symbol every abi_stable root module exports (`abi_stable::library::ROOT_MODULE_LOADER_NAME`).
pub(crate) const ROOT_SYMBOL: &[u8] = b"_1as_0lib_1header_0root_bmodule_bloader";

/// What `export_plugin!(.., devices: [..])` writes into a plugin: this, the device names each
/// followed by `,`, then `;`.
pub(crate) const DEVICES_MARKER: &[u8] = b"rtllm-plugin-devices:";

/// Where to look for plugins.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// Directories or files given explicitly (config, API, `--plugin-path`). A missing path or
    /// an explicit file that is not a plugin is a load error, not a quiet skip.
    pub paths: Vec<PathBuf>,
    /// Read `RTLLM_PLUGIN_PATH`.
    pub use_env: bool,
    /// Scan the running executable's directory and its `plugins/` subfolder.
    pub use_exe_dir: bool,
    /// Load only plugins that may serve this device: one that declares its devices and does
    /// not list it is skipped without being opened (a CPU run does not map GPU-only plugins).
    /// `None` (the default) loads every plugin, as `rtllm plugins list` does.
    pub device: Option<DeviceKind>,
}

impl Default for DiscoveryOptions {
    /// Everything: explicit paths (none yet), the environment, the executable's directory.
    fn default() -> Self {
        DiscoveryOptions { paths: Vec::new(), use_env: true, use_exe_dir: true, device: None }
    }
}

impl DiscoveryOptions {
    /// Only these paths: no environment, no executable directory.
    pub fn only(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        DiscoveryOptions {
            paths: paths.into_iter().map(Into::into).collect(),
            use_env: false,
            use_exe_dir: false,
            device: None,
        }
    }

    /// Loads only plugins that may serve `device` (see [`DiscoveryOptions::device`]).
    pub fn for_device(mut self, device: DeviceKind) -> Self {
        self.device = Some(device);
        self
    }

    /// Adds explicit paths.
    pub fn with_paths(mut self, paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.paths.extend(paths.into_iter().map(Into::into));
        self
    }
}

/// How a candidate was found; explicit ones report problems that scanned ones skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Explicit,
    Scanned,
}

/// A file to try loading.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub path: PathBuf,
    pub origin: Origin,
}

/// A discovery problem worth reporting (a missing explicit path).
#[derive(Clone, Debug)]
pub(crate) struct DiscoveryProblem {
    pub path: PathBuf,
    pub reason: String,
}

/// True for names like `libfoo.so` / `libfoo.dylib` / `foo.dll`.
pub fn is_dylib_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.starts_with(std::env::consts::DLL_PREFIX)
        && name.ends_with(std::env::consts::DLL_SUFFIX)
        && name.len() > std::env::consts::DLL_PREFIX.len() + std::env::consts::DLL_SUFFIX.len()
}

/// What reading a dylib's bytes tells without loading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileScan {
    /// The file contains abi_stable's root-module symbol name (a dylib without it cannot be an
    /// rtllm plugin).
    pub exports_root: bool,
    /// The devices the plugin declares (`export_plugin!`'s `devices:`); `None` if it declares
    /// none. Unknown names are kept out; a declaration naming none known counts as none.
    pub devices: Option<Vec<DeviceKind>>,
    /// Why the file is no sound ELF file (truncated, headers pointing outside it): it must
    /// not be `dlopen`ed (see `elf`). Checked only for files that export the root module.
    pub malformed: Option<String>,
}

/// The most bytes a plugin file may have (a debug build of the CUDA plugin is well under it).
const MAX_PLUGIN_BYTES: u64 = 4 << 30;

/// Reads the file (with `read`, never mapped or `dlopen`ed, so arbitrary libraries next to the
/// executable are not run and a truncated one cannot fault) for the root-module symbol, the
/// devices marker and, on Linux, the soundness of its ELF structure.
pub(crate) fn scan_file(path: &Path) -> std::io::Result<FileScan> {
    let bytes = crate::input_file::read_regular(path, MAX_PLUGIN_BYTES)?;
    let exports_root = memchr::memmem::find(&bytes, ROOT_SYMBOL).is_some();
    let devices = if exports_root { declared_devices(&bytes) } else { None };
    let malformed = if exports_root && cfg!(target_os = "linux") { super::elf::check_elf(&bytes).err() } else { None };
    Ok(FileScan { exports_root, devices, malformed })
}

/// Parses the first devices marker in `bytes`: `rtllm-plugin-devices:cuda,cpu,;`.
fn declared_devices(bytes: &[u8]) -> Option<Vec<DeviceKind>> {
    let at = memchr::memmem::find(bytes, DEVICES_MARKER)? + DEVICES_MARKER.len();
    let rest = &bytes[at..bytes.len().min(at + 256)];
    let list = &rest[..memchr::memchr(b';', rest)?];
    let devices: Vec<DeviceKind> =
        std::str::from_utf8(list).ok()?.split(',').filter(|d| !d.is_empty()).filter_map(DeviceKind::parse).collect();
    (!devices.is_empty()).then_some(devices)
}

/// The directories and files to search, in order: explicit paths, `RTLLM_PLUGIN_PATH`, the
/// executable's directory, then its `plugins/` subfolder.
pub(crate) fn candidates(opts: &DiscoveryOptions) -> (Vec<Candidate>, Vec<DiscoveryProblem>) {
    let mut roots: Vec<(PathBuf, Origin)> = opts.paths.iter().map(|p| (p.clone(), Origin::Explicit)).collect();
    if opts.use_env {
        if let Some(value) = std::env::var_os(PLUGIN_PATH_ENV) {
            for p in std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()) {
                roots.push((p, Origin::Explicit));
            }
        }
    }
    if opts.use_exe_dir {
        match std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
            Some(dir) => {
                let sub = dir.join("plugins");
                roots.push((dir, Origin::Scanned));
                roots.push((sub, Origin::Scanned));
            }
            None => tracing::debug!("cannot tell the executable's directory; not scanning it for plugins"),
        }
    }

    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    for (root, origin) in roots {
        if root.is_file() {
            seen.push(&mut out, root, origin);
        } else if root.is_dir() {
            match list_dylibs(&root) {
                Ok(files) => files.into_iter().for_each(|f| seen.push(&mut out, f, Origin::Scanned)),
                Err(e) if origin == Origin::Explicit => {
                    problems.push(DiscoveryProblem { path: root, reason: format!("cannot read the directory: {e}") })
                }
                Err(e) => tracing::debug!("skipping plugin directory {}: {e}", root.display()),
            }
        } else if origin == Origin::Explicit {
            // Neither a file nor a directory: missing, or a FIFO, socket or device (never opened).
            let reason = match crate::input_file::check_regular(&root) {
                Err(e) if root.exists() => e.to_string(),
                _ => "no such file or directory".into(),
            };
            problems.push(DiscoveryProblem { path: root, reason });
        }
    }
    (out, problems)
}

/// The dylib-named files directly in `dir`, sorted by name.
fn list_dylibs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && is_dylib_name(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Deduplication by canonical path and, on Unix, by (device, inode) so hard links (cargo
/// links `deps/libx.so` to `libx.so`) load once.
#[derive(Default)]
struct Seen {
    paths: HashSet<PathBuf>,
    ids: HashSet<(u64, u64)>,
}

impl Seen {
    fn push(&mut self, out: &mut Vec<Candidate>, path: PathBuf, origin: Origin) {
        let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !self.paths.insert(canonical.clone()) {
            return;
        }
        if let Some(id) = file_id(&canonical) {
            if !self.ids.insert(id) {
                tracing::debug!("{} is a link to a plugin already found; skipping", path.display());
                return;
            }
        }
        out.push(Candidate { path: canonical, origin });
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_scans_find_the_root_symbol_and_declared_devices() {
        let dir = tempfile::tempdir().unwrap();
        let scan = |bytes: &[u8]| {
            let path = dir.path().join("f");
            std::fs::write(&path, bytes).unwrap();
            scan_file(&path).unwrap()
        };
        let root = |tail: &[u8]| [b"xx".as_slice(), ROOT_SYMBOL, b"yy", tail].concat();
        let not_elf = Some("not an ELF file (43 bytes, no ELF magic)".to_string());
        assert_eq!(scan(&root(b"")), FileScan { exports_root: true, devices: None, malformed: not_elf });
        assert!(!scan(&ROOT_SYMBOL[..ROOT_SYMBOL.len() - 1]).exports_root);
        assert!(!scan(b"").exports_root);
        let cuda = scan(&root(b"\0rtllm-plugin-devices:cuda,;\0"));
        assert_eq!(cuda.devices, Some(vec![DeviceKind::Cuda]));
        let both = scan(&root(b"rtllm-plugin-devices:cpu,cuda,;"));
        assert_eq!(both.devices, Some(vec![DeviceKind::Cpu, DeviceKind::Cuda]));
        // Unknown names only, or no terminator: no declaration (the plugin loads everywhere).
        assert_eq!(scan(&root(b"rtllm-plugin-devices:tpu,;")).devices, None);
        assert_eq!(scan(&root(b"rtllm-plugin-devices:cuda")).devices, None);
        // Without the root symbol the marker is not read.
        assert_eq!(scan(b"rtllm-plugin-devices:cuda,;").devices, None);
    }

    #[test]
    fn dylib_names() {
        let ok = format!("{}x{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        assert!(is_dylib_name(Path::new(&ok)));
        assert!(!is_dylib_name(Path::new("x.txt")));
        assert!(!is_dylib_name(Path::new(&format!(
            "{}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ))));
    }

    #[test]
    fn discovery_is_sorted_deduplicated_and_reports_missing_explicit_paths() {
        let dir = tempfile::tempdir().unwrap();
        let name = |s: &str| format!("{}{s}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        for f in ["b", "a", "c"] {
            std::fs::write(dir.path().join(name(f)), b"not a library").unwrap();
        }
        std::fs::write(dir.path().join("readme.txt"), b"x").unwrap();
        let missing = dir.path().join("nope");
        let opts = DiscoveryOptions::only([dir.path().to_path_buf(), dir.path().join(name("a")), missing.clone()]);
        let (found, problems) = candidates(&opts);
        let names: Vec<_> = found.iter().map(|c| c.path.file_name().unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, vec![name("a"), name("b"), name("c")]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, missing);
        assert!(!scan_file(&found[0].path).unwrap().exports_root);
    }
}
