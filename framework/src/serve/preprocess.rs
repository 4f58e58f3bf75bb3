//! Runs the CPU-heavy part of a request (parsing its JSON, rendering the chat template,
//! tokenizing) on tokio's blocking threads, at most `preprocess_threads` at once, so the async
//! workers stay free for /health, streams and accepting connections however large the prompts.

use super::error::ApiError;
use super::http::{admitting, read_body};
use super::AppState;
use axum::extract::Request;
use axum::http::StatusCode;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The start of every generation route: refuses new work while draining, reads the body, and
/// runs `prepare` over it on the pool.
pub async fn read_and_prepare<T: Send + 'static>(
    state: &Arc<AppState>,
    req: Request,
    prepare: fn(&AppState, &[u8]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    admitting(state)?;
    let bytes = read_body(req, &state.config).await?;
    let for_work = state.clone();
    state.preprocess.run(move || prepare(&for_work, &bytes)).await
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_runtime_thread_a_bounded_number_at_once() {
        let pool = Arc::new(Preprocess::new(2));
        let runtime_thread = std::thread::current().id();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    pool.run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                        Ok(std::thread::current().id())
                    })
                    .await
                })
            })
            .collect();
        for job in jobs {
            let thread = job.await.unwrap().unwrap();
            assert_ne!(thread, runtime_thread);
        }
        assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    }
}
