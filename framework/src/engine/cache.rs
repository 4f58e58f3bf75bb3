//! The automatic engine cache: engine directories (see `serialize`) under
//! `RTLLM_CACHE_DIR/engines/<key>/`, keyed by a hash of the model files' identity (path, size,
//! content checksum), the build config, the model definition, the plugin set (names, versions, every op's
//! provider with its version, dtypes and priority, the pins) and the rtllm binary.
//!
//! Entries are written to a temporary directory and renamed into place, with a
//! `manifest.json` holding the size and checksum of every file. A lookup verifies the
//! manifest; an entry that fails (missing file, truncation, bad JSON, checksum mismatch) is
//! logged, removed and reported as a miss, never trusted. The oldest entries beyond
//! [`MAX_ENTRIES_ENV`] (default 8) are pruned after a store.

pub use super::checksum::checksum;
use super::checksum::checksum_file;
use crate::registry::Registry;
use rtllm_models::toml::ModelDefinition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

pub const MANIFEST_FILE: &str = "manifest.json";
/// Set to 1 / true to turn the cache off (as `--no-build-cache` does).
pub const DISABLE_ENV: &str = "RTLLM_NO_BUILD_CACHE";
/// Most entries kept (oldest pruned after a store).
pub const MAX_ENTRIES_ENV: &str = "RTLLM_ENGINE_CACHE_MAX";

static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);
static CORRUPT: AtomicU64 = AtomicU64::new(0);
static STORES: AtomicU64 = AtomicU64::new(0);

/// Process-wide cache counters (for tests and `--stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    /// Entries found corrupt and removed.
    pub corrupt: u64,
    pub stores: u64,
}

pub fn counters() -> CacheCounters {
    CacheCounters {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
        corrupt: CORRUPT.load(Ordering::Relaxed),
        stores: STORES.load(Ordering::Relaxed),
    }
}

/// Counts a hit that loaded (lookups only verify files; the caller confirms the load).
pub fn record_hit() {
    HITS.fetch_add(1, Ordering::Relaxed);
}

/// Whether `RTLLM_NO_BUILD_CACHE` turns the cache off.
pub fn disabled_by_env() -> bool {
    std::env::var(DISABLE_ENV).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
}

/// A cache key (32 hex digits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey(pub String);

/// Identity of a model source: each file's path, size and content checksum (a directory: its
/// files, sorted). The content, not the modification time, so weights edited in place (even
/// with the mtime put back) never serve the engine built from the old ones; hashing costs a
/// streamed read of the source (measured in docs/hostile-inputs.md).
pub fn model_identity(path: &Path) -> std::io::Result<String> {
    let mut out = String::new();
    for f in source_files(path)? {
        let (size, sum) =
            checksum_file(&f).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
        out.push_str(&format!("{}|{size}|{sum}\n", f.display()));
    }
    Ok(out)
}

/// The files of a model source: the file itself, or a directory's regular files (sorted).
fn source_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let path = std::fs::canonicalize(path)?;
    let mut files = Vec::new();
    if path.is_dir() {
        for e in std::fs::read_dir(&path)? {
            let p = e?.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path);
    }
    Ok(files)
}

/// A file's path, size and modification time (the running binary's identity: not an input).
fn stat_identity(path: &Path) -> std::io::Result<String> {
    let m = std::fs::metadata(path)?;
    let mtime = m.modified()?.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    Ok(format!("{}|{}|{}", path.display(), m.len(), mtime))
}

/// The plugin set as it bears on a build: plugins (name, version) and every op's providers in
/// resolution order (plugin, version, op version, device, dtypes, priority), plus the pins.
pub fn plugin_set_identity(registry: &Registry) -> String {
    let mut out = String::new();
    let mut plugins: Vec<(String, String)> =
        registry.plugins().iter().map(|p| (p.name.clone(), p.version.clone())).collect();
    plugins.sort();
    for (n, v) in plugins {
        out.push_str(&format!("plugin {n} {v}\n"));
    }
    for (op, providers) in registry.ops() {
        for p in providers {
            out.push_str(&format!(
                "op {op} {} {} v{} {} {:?} {}\n",
                p.plugin,
                p.plugin_version,
                p.decl.version,
                p.device(),
                p.dtypes(),
                p.priority()
            ));
        }
    }
    let pins: BTreeMap<_, _> = registry.pins().iter().collect();
    out.push_str(&format!("pins {pins:?}\n"));
    out
}

fn definition_identity(definition: Option<&ModelDefinition>) -> String {
    match definition {
        None => format!("registered {:?}", rtllm_models::known_architecture_names()),
        Some(ModelDefinition::Registered(a)) => format!("registered {}", a.name()),
        Some(ModelDefinition::Toml(t)) => {
            let sum = checksum_file(Path::new(t.file())).map(|(_, sum)| sum).unwrap_or_default();
            format!("toml {} {} {sum}", t.name(), t.file())
        }
    }
}

/// The running binary's identity, so a rebuilt rtllm never trusts an older one's engines.
fn binary_identity() -> String {
    std::env::current_exe().ok().and_then(|p| stat_identity(&p).ok()).unwrap_or_default()
}

/// The key of a build of `model_path` with `build` and `definition` (None: the architecture
/// registered for the model's config) over `registry`.
pub fn cache_key(
    model_path: &Path,
    build: &super::BuildConfig,
    definition: Option<&ModelDefinition>,
    registry: &Registry,
) -> std::io::Result<CacheKey> {
    let mut build = build.clone();
    build.use_engine_cache = true;
    let text = format!(
        "rtllm {} format {}\nbinary {}\nmodel {}\nbuild {build:?}\ndefinition {}\n{}",
        env!("CARGO_PKG_VERSION"),
        super::serialize::FORMAT_VERSION,
        binary_identity(),
        model_identity(model_path)?,
        definition_identity(definition),
        plugin_set_identity(registry)
    );
    Ok(CacheKey(checksum(text.as_bytes())))
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    size: u64,
    checksum: String,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    key: String,
    files: BTreeMap<String, FileRecord>,
}

fn file_record(path: &Path) -> Result<FileRecord, String> {
    let (size, checksum) = checksum_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(FileRecord { size, checksum })
}

/// The engine cache at a root directory.
#[derive(Clone, Debug)]
pub struct EngineCache {
    root: PathBuf,
}

impl EngineCache {
    pub fn new(root: impl Into<PathBuf>) -> EngineCache {
        EngineCache { root: root.into() }
    }

    /// `RTLLM_CACHE_DIR/engines` (default `~/.cache/rtllm/engines`).
    pub fn default_location() -> EngineCache {
        EngineCache::new(crate::model::cache_dir().join("engines"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, key: &CacheKey) -> PathBuf {
        self.root.join(&key.0)
    }

    /// The entry for `key` if present and intact; a corrupt one is logged and removed.
    pub fn lookup(&self, key: &CacheKey) -> Option<PathBuf> {
        let dir = self.entry_dir(key);
        if !dir.is_dir() {
            MISSES.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match verify(&dir, key) {
            Ok(()) => Some(dir),
            Err(why) => {
                self.evict(&dir, &why);
                MISSES.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Removes a corrupt entry (logged as a warning).
    pub fn evict(&self, dir: &Path, why: &str) {
        CORRUPT.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("engine cache entry {} is corrupt ({why}); removing it and rebuilding", dir.display());
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!("could not remove {}: {e}", dir.display());
        }
    }

    /// Writes an entry: `write` fills a temporary directory, then the manifest is added and
    /// the directory renamed into place (a concurrent writer that wins keeps its entry).
    pub fn store<E: std::fmt::Display>(
        &self,
        key: &CacheKey,
        write: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.root).map_err(|e| format!("{}: {e}", self.root.display()))?;
        let tmp = self.root.join(format!(".tmp-{}-{}-{}", key.0, std::process::id(), STORES.load(Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let result = (|| {
            write(&tmp).map_err(|e| e.to_string())?;
            let mut files = BTreeMap::new();
            for e in std::fs::read_dir(&tmp).map_err(|e| e.to_string())? {
                let p = e.map_err(|e| e.to_string())?.path();
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    files.insert(name.to_string(), file_record(&p)?);
                }
            }
            let manifest =
                serde_json::to_vec_pretty(&Manifest { key: key.0.clone(), files }).map_err(|e| e.to_string())?;
            std::fs::write(tmp.join(MANIFEST_FILE), manifest).map_err(|e| e.to_string())?;
            let dst = self.entry_dir(key);
            if dst.exists() {
                let _ = std::fs::remove_dir_all(&dst);
            }
            std::fs::rename(&tmp, &dst).map_err(|e| format!("renaming into {}: {e}", dst.display()))?;
            Ok(dst)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        } else {
            STORES.fetch_add(1, Ordering::Relaxed);
            self.prune();
        }
        result
    }

    /// Keeps the newest `RTLLM_ENGINE_CACHE_MAX` (default 8) entries.
    fn prune(&self) {
        let max = std::env::var(MAX_ENTRIES_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(8usize);
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        dirs.sort();
        let excess = dirs.len().saturating_sub(max.max(1));
        for (_, p) in dirs.into_iter().take(excess) {
            tracing::info!("pruning engine cache entry {}", p.display());
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Checks an entry against its manifest.
fn verify(dir: &Path, key: &CacheKey) -> Result<(), String> {
    let text = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| format!("manifest: {e}"))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    if manifest.key != key.0 {
        return Err(format!("manifest key {} does not match {}", manifest.key, key.0));
    }
    for required in [super::serialize::PLAN_FILE, super::serialize::WEIGHTS_FILE] {
        if !manifest.files.contains_key(required) {
            return Err(format!("manifest lists no {required}"));
        }
    }
    for (name, want) in &manifest.files {
        let got = file_record(&dir.join(name))?;
        if got.size != want.size {
            return Err(format!("{name}: {} bytes, the manifest says {}", got.size, want.size));
        }
        if got.checksum != want.checksum {
            return Err(format!("{name}: checksum mismatch"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_and_corruption() {
        let root = tempfile::tempdir().unwrap();
        let cache = EngineCache::new(root.path());
        let key = CacheKey("k1".into());
        assert!(cache.lookup(&key).is_none());
        let dir = cache
            .store(&key, |d| {
                std::fs::write(d.join("plan.json"), b"{}")?;
                std::fs::write(d.join("model.safetensors"), vec![7u8; 1000])
            })
            .unwrap();
        assert_eq!(cache.lookup(&key), Some(dir.clone()));
        std::fs::write(dir.join("model.safetensors"), vec![7u8; 999]).unwrap();
        assert!(cache.lookup(&key).is_none(), "a truncated file must not be trusted");
        assert!(!dir.exists(), "the corrupt entry is removed");
    }
}
