//! Where models live on disk: the cache directory (`RTLLM_CACHE_DIR`, else `~/.cache/rtllm`)
//! and the built-in default model's file in it.

use std::path::PathBuf;

/// File name of the built-in default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cache directory: `RTLLM_CACHE_DIR`, else `~/.cache/rtllm`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RTLLM_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("rtllm")
}

/// Where the default model is once `scripts/fetch-default-model.sh` has run.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models").join(DEFAULT_MODEL_FILE)
}
