//! Streams of `RequestOutput`s for one request: a blocking iterator, and an async stream that
//! polls the executor's handle directly (no thread per request). Dropping either before the
//! end cancels the request (its place in the executor's queue is free at once).

use super::llm::LlmError;
use super::output::RequestOutput;
use super::tracker::RequestTracker;
use crate::runtime::executor::{OutputUpdate, RequestHandle};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What both stream kinds share: the handle, the tracker, and what one update does.
struct Core {
    handle: RequestHandle,
    tracker: RequestTracker,
    done: bool,
}

impl Core {
    /// Folds one update (`None`: the executor closed the stream) into the tracker; returns the
    /// item to yield, if the update changed something.
    fn fold(&mut self, update: Option<OutputUpdate>) -> Option<Result<RequestOutput, LlmError>> {
        let Some(mut update) = update else {
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
        changed.then(|| Ok(self.tracker.snapshot()))
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if !self.done {
            self.handle.cancel();
        }
    }
}

/// A blocking iterator of outputs; each carries the `text_diff` since the previous one, the
/// last one has `finished` set.
pub struct OutputStream {
    core: Core,
}

impl OutputStream {
    pub(crate) fn new(handle: RequestHandle, tracker: RequestTracker) -> OutputStream {
        OutputStream { core: Core { handle, tracker, done: false } }
    }

    pub fn request_id(&self) -> u64 {
        self.core.handle.id()
    }

    /// Stops the request; the stream then ends.
    pub fn cancel(&mut self) {
        self.core.handle.cancel();
    }

    /// Drains the stream and returns the final output.
    pub fn finish(mut self) -> Result<RequestOutput, LlmError> {
        let mut last = None;
        for out in &mut self {
            last = Some(out?);
        }
        last.ok_or(LlmError::Closed)
    }

    /// The same stream, read from async code.
    pub fn into_async(self) -> OutputStreamAsync {
        OutputStreamAsync { core: self.core }
    }
}

impl Iterator for OutputStream {
    type Item = Result<RequestOutput, LlmError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.core.done {
            let update = self.core.handle.recv();
            if let Some(item) = self.core.fold(update) {
                return Some(item);
            }
        }
        None
    }
}

/// The async form of [`OutputStream`] (a `futures_core::Stream`); works on any executor.
pub struct OutputStreamAsync {
    core: Core,
}

impl OutputStreamAsync {
    pub fn request_id(&self) -> u64 {
        self.core.handle.id()
    }

    /// Stops the request; the stream then ends.
    pub fn cancel(&mut self) {
        self.core.handle.cancel();
    }

    /// The next output, or `None` at the end.
    pub async fn next(&mut self) -> Option<Result<RequestOutput, LlmError>> {
        std::future::poll_fn(|cx| self.poll_next_output(cx)).await
    }

    /// Waits for the final output.
    pub async fn finish(mut self) -> Result<RequestOutput, LlmError> {
        let mut last = None;
        while let Some(out) = self.next().await {
            last = Some(out?);
        }
        last.ok_or(LlmError::Closed)
    }

    fn poll_next_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RequestOutput, LlmError>>> {
        while !self.core.done {
            let Poll::Ready(update) = self.core.handle.poll_recv(cx) else {
                return Poll::Pending;
            };
            if let Some(item) = self.core.fold(update) {
                return Poll::Ready(Some(item));
            }
        }
        Poll::Ready(None)
    }
}

impl futures_core::Stream for OutputStreamAsync {
    type Item = Result<RequestOutput, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_next_output(cx)
    }
}
