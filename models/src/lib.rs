//! rtllm-models.
