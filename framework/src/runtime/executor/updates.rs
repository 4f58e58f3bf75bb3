//! The channel that carries one request's updates from the executor loop to its handle: a
//! std channel plus a waker, so the handle can be read blocking ([`UpdateReceiver::recv`]) or
//! polled from async code ([`UpdateReceiver::poll_recv`]) with no thread per request.

use super::request::OutputUpdate;
use futures_util::task::AtomicWaker;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A connected sender and receiver.
pub(crate) fn update_channel() -> (UpdateSender, UpdateReceiver) {
    let (tx, rx) = channel();
    let waker = Arc::new(AtomicWaker::new());
    (UpdateSender { tx: Some(tx), waker: waker.clone() }, UpdateReceiver { rx, waker })
}

/// The loop's end: every send (and the drop of the last sender) wakes an async reader.
pub(crate) struct UpdateSender {
    /// Always `Some` until dropped (taken first in `drop`, so the wake sees the closed channel).
    tx: Option<Sender<OutputUpdate>>,
    waker: Arc<AtomicWaker>,
}

impl UpdateSender {
    /// Sends an update; `Err` when the handle is gone.
    pub fn send(&self, update: OutputUpdate) -> Result<(), ()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(update).map_err(|_| ()),
            None => Err(()),
        };
        self.waker.wake();
        sent
    }
}

impl Clone for UpdateSender {
    fn clone(&self) -> Self {
        UpdateSender { tx: self.tx.clone(), waker: self.waker.clone() }
    }
}

impl Drop for UpdateSender {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.waker.wake();
    }
}

/// The handle's end.
pub(crate) struct UpdateReceiver {
    rx: Receiver<OutputUpdate>,
    waker: Arc<AtomicWaker>,
}

impl UpdateReceiver {
    /// The next update, blocking; `None` once every sender is gone.
    pub fn recv(&self) -> Option<OutputUpdate> {
        self.rx.recv().ok()
    }

    /// The next update if there is one; registers `cx` to be woken by the next send otherwise.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<OutputUpdate>> {
        if let Some(ready) = self.try_recv() {
            return Poll::Ready(ready);
        }
        self.waker.register(cx.waker());
        // A send between the first look and the registration must not be missed.
        match self.try_recv() {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// `Some(Some(update))`, `Some(None)` when closed, `None` when empty.
    fn try_recv(&self) -> Option<Option<OutputUpdate>> {
        match self.rx.try_recv() {
            Ok(u) => Some(Some(u)),
            Err(TryRecvError::Disconnected) => Some(None),
            Err(TryRecvError::Empty) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::executor::RequestError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_async_reader_is_woken_by_sends_and_by_the_close() {
        let (tx, rx) = update_channel();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(OutputUpdate::failed(RequestError::Engine("x".into()), 1)).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(rx.poll_recv(&mut cx).is_pending());
        let second = tx.clone();
        drop(tx);
        assert!(rx.poll_recv(&mut cx).is_pending(), "one sender is left");
        drop(second);
        assert!(count.0.load(Ordering::SeqCst) >= 2);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }
}
