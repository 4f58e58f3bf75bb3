//! Streams of `RequestOutput`s for one request: a blocking iterator, and an async stream on
//! tokio fed from it. Dropping either before the end cancels the request.

use super::llm::LlmError;
use super::output::RequestOutput;
use super::tracker::RequestTracker;
use crate::runtime::executor::RequestHandle;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// A blocking iterator of outputs; each carries the `text_diff` since the previous one, the
/// last one has `finished` set.
pub struct OutputStream {
    handle: RequestHandle,
    tracker: RequestTracker,
    done: bool,
}

impl OutputStream {
    pub(crate) fn new(handle: RequestHandle, tracker: RequestTracker) -> OutputStream {
        OutputStream { handle, tracker, done: false }
    }

    pub fn request_id(&self) -> u64 {
        self.handle.id()
    }

    /// Stops the request; the stream then ends.
    pub fn cancel(&mut self) {
        self.handle.cancel();
    }

    /// Drains the stream and returns the final output.
    pub fn finish(mut self) -> Result<RequestOutput, LlmError> {
        let mut last = None;
        for out in &mut self {
            last = Some(out?);
        }
        last.ok_or(LlmError::Closed)
    }
}

impl Iterator for OutputStream {
    type Item = Result<RequestOutput, LlmError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let Some(mut update) = self.handle.recv() else {
                self.done = true;
                self.tracker.close();
                return Some(Ok(self.tracker.snapshot()));
            };
            if let Some(e) = update.error.take() {
                self.done = true;
                return Some(Err(LlmError::Request(e)));
            }
            let changed = self.tracker.apply(update);
            if self.tracker.all_finished() {
                self.done = true;
                return Some(Ok(self.tracker.snapshot()));
            }
            if changed {
                return Some(Ok(self.tracker.snapshot()));
            }
        }
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        if !self.done {
            self.handle.cancel();
        }
    }
}

/// The async form of [`OutputStream`] (a `futures_core::Stream`).
pub struct OutputStreamAsync {
    request_id: u64,
    rx: UnboundedReceiver<Result<RequestOutput, LlmError>>,
}

impl OutputStreamAsync {
    /// Runs `stream` on tokio's blocking pool and forwards its items. Must be called from
    /// within a tokio runtime.
    pub(crate) fn spawn(stream: OutputStream) -> OutputStreamAsync {
        let request_id = stream.request_id();
        let (tx, rx) = unbounded_channel();
        tokio::task::spawn_blocking(move || {
            for item in stream {
                if tx.send(item).is_err() {
                    // The receiver is gone: dropping the stream cancels the request.
                    break;
                }
            }
        });
        OutputStreamAsync { request_id, rx }
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The next output, or `None` at the end.
    pub async fn next(&mut self) -> Option<Result<RequestOutput, LlmError>> {
        self.rx.recv().await
    }

    /// Waits for the final output.
    pub async fn finish(mut self) -> Result<RequestOutput, LlmError> {
        let mut last = None;
        while let Some(out) = self.rx.recv().await {
            last = Some(out?);
        }
        last.ok_or(LlmError::Closed)
    }
}

impl futures_core::Stream for OutputStreamAsync {
    type Item = Result<RequestOutput, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
