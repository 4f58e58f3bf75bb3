//! The output directory, written atomically: everything goes into a hidden sibling directory
//! (`.NAME.rtllm-quantize-PID`), which is renamed into place only when complete; a failed or
//! interrupted run removes it, so `DIR` never holds half a model. An existing `DIR` is refused
//! unless it is empty or `--force` is given (then it is replaced only after the new one is
//! complete). Weights are written as HF writes them: `model.safetensors`, or shards of at most
//! [`SHARD_BYTES`] with `model.safetensors.index.json`.

use super::QuantizeError;
use crate::weights::safetensors::{safetensors_bytes, TensorToWrite};
use rtllm_plugin_api::DType;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest shard, in tensor bytes (transformers 4's default `max_shard_size`, "5GB").
pub const SHARD_BYTES: usize = 5_000_000_000;

/// A directory being written, renamed to its final path by [`StagedDir::commit`].
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

fn output_err(path: &Path, message: impl Into<String>) -> QuantizeError {
    QuantizeError::Output { path: path.to_path_buf(), message: message.into() }
}

impl StagedDir {
    /// Checks `target` may be written (absent, an empty directory, or `force`; never the
    /// source or a directory holding it) and creates the staging directory beside it.
    pub fn create(target: &Path, source: &Path, force: bool) -> Result<StagedDir, QuantizeError> {
        if target.exists() {
            if !target.is_dir() {
                return Err(output_err(target, "exists and is not a directory"));
            }
            let non_empty = std::fs::read_dir(target).map_err(QuantizeError::io(target))?.next().is_some();
            if non_empty && !force {
                return Err(output_err(target, "exists and is not empty (pass --force to replace it)"));
            }
            let (t, s) = (canonical(target)?, canonical(source)?);
            if s.starts_with(&t) {
                return Err(output_err(target, format!("would replace the source model {}", source.display())));
            }
        }
        let name = target
            .file_name()
            .ok_or_else(|| output_err(target, "names no directory (give a path ending in a name)"))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(QuantizeError::io(&parent))?;
        let staging = parent.join(format!(".{name}.rtllm-quantize-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(QuantizeError::io(&staging))?;
        }
        std::fs::create_dir(&staging).map_err(QuantizeError::io(&staging))?;
        Ok(StagedDir { target: target.to_path_buf(), staging, committed: false })
    }

    /// Where files are written until the commit.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Writes `name` (a file name) into the staging directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), QuantizeError> {
        let path = self.staging.join(name);
        std::fs::write(&path, bytes).map_err(QuantizeError::io(path))
    }

    /// Moves the finished directory to its final path, replacing what was there.
    pub fn commit(mut self) -> Result<PathBuf, QuantizeError> {
        let old = self.target.exists().then(|| {
            let mut p = self.staging.clone().into_os_string();
            p.push(".replaced");
            PathBuf::from(p)
        });
        if let Some(old) = &old {
            std::fs::rename(&self.target, old).map_err(QuantizeError::io(&self.target))?;
        }
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            if let Some(old) = &old {
                // Put the previous directory back; the staging directory goes on drop.
                let _ = std::fs::rename(old, &self.target);
            }
            return Err(QuantizeError::io(&self.target)(e));
        }
        self.committed = true;
        if let Some(old) = old {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!("could not remove the replaced directory {}: {e}", old.display());
            }
        }
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = std::fs::remove_dir_all(&self.staging) {
                tracing::warn!("could not remove the unfinished output {}: {e}", self.staging.display());
            }
        }
    }
}

fn canonical(path: &Path) -> Result<PathBuf, QuantizeError> {
    std::fs::canonicalize(path).map_err(QuantizeError::io(path))
}

/// One output tensor: name, dtype, shape and its bytes' size (the bytes are made when its
/// shard is written, so only one shard is in memory at a time).
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

/// Tensors split into shards of at most `limit` bytes (a bigger tensor gets a shard of its
/// own), in the given order.
pub fn shard(tensors: Vec<PlannedTensor>, limit: usize) -> Vec<Vec<PlannedTensor>> {
    let mut shards: Vec<Vec<PlannedTensor>> = Vec::new();
    let mut size = 0usize;
    for t in tensors {
        if shards.is_empty() || (size + t.bytes > limit && size > 0) {
            shards.push(Vec::new());
            size = 0;
        }
        size += t.bytes;
        if let Some(s) = shards.last_mut() {
            s.push(t);
        }
    }
    shards
}

/// The file name of shard `i` of `n` as transformers names them.
pub fn shard_name(i: usize, n: usize) -> String {
    if n == 1 {
        "model.safetensors".into()
    } else {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
    }
}

/// Writes every shard (`make` gives a tensor's bytes) and, for several, the index.
pub fn write_shards(
    dir: &StagedDir,
    shards: &[Vec<PlannedTensor>],
    mut make: impl FnMut(&PlannedTensor) -> Result<Vec<u8>, QuantizeError>,
) -> Result<usize, QuantizeError> {
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (i, shard) in shards.iter().enumerate() {
        let name = shard_name(i, shards.len());
        let data = shard.iter().map(&mut make).collect::<Result<Vec<_>, _>>()?;
        let tensors: Vec<TensorToWrite<'_>> = shard
            .iter()
            .zip(&data)
            .map(|(t, b)| (t.name.as_str(), t.dtype, t.shape.as_slice(), b.as_slice()))
            .collect();
        let bytes = safetensors_bytes(&tensors, &metadata).map_err(|m| output_err(&dir.path().join(&name), m))?;
        dir.write(&name, &bytes)?;
        for t in shard {
            total += t.bytes;
            weight_map.insert(t.name.clone(), Value::from(name.clone()));
        }
    }
    if shards.len() > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        dir.write("model.safetensors.index.json", pretty(&index).as_bytes())?;
    }
    Ok(total)
}

/// JSON as transformers writes it (2-space indent, a final newline).
pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, bytes: usize) -> PlannedTensor {
        PlannedTensor { name: name.into(), dtype: DType::U8, shape: vec![bytes], bytes }
    }

    #[test]
    fn shards_respect_the_limit_and_keep_order() {
        let shards = shard(vec![t("a", 4), t("b", 4), t("c", 9), t("d", 1)], 8);
        let names: Vec<Vec<&str>> = shards.iter().map(|s| s.iter().map(|t| t.name.as_str()).collect()).collect();
        assert_eq!(names, vec![vec!["a", "b"], vec!["c"], vec!["d"]]);
        assert_eq!(shard_name(0, 1), "model.safetensors");
        assert_eq!(shard_name(1, 3), "model-00002-of-00003.safetensors");
    }

    #[test]
    fn staged_dir_appears_only_on_commit_and_refuses_non_empty_targets() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("src");
        std::fs::create_dir(&source).unwrap();
        let out = root.path().join("out");
        let staged = StagedDir::create(&out, &source, false).unwrap();
        staged.write("x", b"1").unwrap();
        assert!(!out.exists());
        let staging = staged.path().to_path_buf();
        drop(staged);
        assert!(!staging.exists() && !out.exists(), "an unfinished output is removed");

        let staged = StagedDir::create(&out, &source, false).unwrap();
        staged.write("x", b"1").unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read(out.join("x")).unwrap(), b"1");

        let err = StagedDir::create(&out, &source, false).err().unwrap().to_string();
        assert!(err.contains("not empty") && err.contains("--force"), "{err}");
        let staged = StagedDir::create(&out, &source, true).unwrap();
        staged.write("y", b"2").unwrap();
        staged.commit().unwrap();
        assert!(out.join("y").exists() && !out.join("x").exists(), "--force replaces the directory");

        let err = StagedDir::create(root.path(), &source, true).err().unwrap().to_string();
        assert!(err.contains("would replace the source"), "{err}");
        std::fs::write(root.path().join("file"), b"").unwrap();
        let err = StagedDir::create(&root.path().join("file"), &source, true).err().unwrap().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
