//! Runs the CPU-heavy part of a request (parsing its JSON, rendering the chat template,
//! tokenizing) on tokio's blocking threads, at most `preprocess_threads` at once, so the async
//! workers stay free for /health, streams and accepting connections however large the prompts.

use super::error::ApiError;
use axum::http::StatusCode;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A bound on the preparation work running at once.
#[derive(Debug)]
pub struct Preprocess {
    permits: Arc<Semaphore>,
}

impl Preprocess {
    pub fn new(threads: usize) -> Preprocess {
        Preprocess { permits: Arc::new(Semaphore::new(threads.max(1))) }
    }

    /// Runs `work` on a blocking thread once a permit is free. Dropping the future before
    /// then gives up its turn; once running, `work` runs to its end.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("preparing a request failed: {e}");
            Err(ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "preparing the request failed"))
        })
    }
}
