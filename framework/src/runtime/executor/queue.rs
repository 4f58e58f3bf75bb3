//! The bound on the executor's waiting queue: how many requests, and how many prompt tokens,
//! may be submitted and not yet admitted to the running batch at once. `submit` reserves a
//! place for each request (a [`QueueSlot`]) before anything reaches the loop, and refuses with
//! `SubmitError::QueueFull` when there is none. A place is given back when the loop admits the
//! request, or at once when its client cancels or drops the handle, so a client that left
//! frees the queue before the loop has even looked at its cancellation.

use super::request::SubmitError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// How much may wait. The library default is unbounded; `rtllm serve` sets bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most requests waiting (each prompt of a multi-prompt call is one request).
    pub max_queued_requests: usize,
    /// Most prompt tokens waiting, summed over the waiting requests.
    pub max_queued_tokens: usize,
}

impl QueueLimits {
    pub const UNBOUNDED: QueueLimits = QueueLimits { max_queued_requests: usize::MAX, max_queued_tokens: usize::MAX };
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits::UNBOUNDED
    }
}

/// What waits now, against the limits.
#[derive(Debug)]
pub(crate) struct QueueGauge {
    requests: AtomicUsize,
    tokens: AtomicUsize,
    limits: QueueLimits,
}

impl QueueGauge {
    pub fn new(limits: QueueLimits) -> QueueGauge {
        QueueGauge { requests: AtomicUsize::new(0), tokens: AtomicUsize::new(0), limits }
    }

    /// Requests and prompt tokens waiting now.
    pub fn queued(&self) -> (usize, usize) {
        (self.requests.load(Ordering::Acquire), self.tokens.load(Ordering::Acquire))
    }

    /// Whether `requests` requests of `tokens` prompt tokens in all could be queued now
    /// (`ExceedsQueue` when they never could).
    pub fn check(&self, requests: usize, tokens: usize) -> Result<(), SubmitError> {
        let l = self.limits;
        if requests > l.max_queued_requests || tokens > l.max_queued_tokens {
            return Err(SubmitError::ExceedsQueue { requests, tokens, limits: l });
        }
        let (r, t) = self.queued();
        if r.saturating_add(requests) > l.max_queued_requests || t.saturating_add(tokens) > l.max_queued_tokens {
            return Err(SubmitError::QueueFull { requests: r, tokens: t, limits: l });
        }
        Ok(())
    }

    /// Takes room for `requests` requests of `tokens` tokens in all, or none of it.
    pub fn reserve(&self, requests: usize, tokens: usize) -> Result<(), SubmitError> {
        self.check(requests, tokens)?;
        let l = self.limits;
        let add = |cell: &AtomicUsize, n: usize, max: usize| {
            cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_add(n).filter(|&s| s <= max)).is_ok()
        };
        if !add(&self.requests, requests, l.max_queued_requests) {
            let (r, t) = self.queued();
            return Err(SubmitError::QueueFull { requests: r, tokens: t, limits: l });
        }
        if !add(&self.tokens, tokens, l.max_queued_tokens) {
            self.requests.fetch_sub(requests, Ordering::AcqRel);
            let (r, t) = self.queued();
            return Err(SubmitError::QueueFull { requests: r, tokens: t, limits: l });
        }
        Ok(())
    }

    fn release(&self, requests: usize, tokens: usize) {
        self.requests.fetch_sub(requests, Ordering::AcqRel);
        self.tokens.fetch_sub(tokens, Ordering::AcqRel);
    }
}

/// One request's reserved place; given back once (by whichever of the loop and the handle
/// gets there first), and on drop.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    gauge: Arc<QueueGauge>,
    tokens: usize,
    held: AtomicBool,
}

impl QueueSlot {
    /// A place already reserved in `gauge` (see [`QueueGauge::reserve`]); `held = false` makes
    /// a slot that holds nothing (a request that does not count, such as a health probe).
    pub fn reserved(gauge: Arc<QueueGauge>, tokens: usize, held: bool) -> QueueSlot {
        QueueSlot { gauge, tokens, held: AtomicBool::new(held) }
    }

    pub fn release(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.gauge.release(1, self.tokens);
        }
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_all_or_nothing_and_released_once() {
        let gauge = Arc::new(QueueGauge::new(QueueLimits { max_queued_requests: 3, max_queued_tokens: 10 }));
        gauge.reserve(2, 8).unwrap();
        assert!(matches!(gauge.reserve(1, 3), Err(SubmitError::QueueFull { requests: 2, tokens: 8, .. })));
        assert!(matches!(gauge.reserve(2, 1), Err(SubmitError::QueueFull { .. })));
        assert_eq!(gauge.queued(), (2, 8), "a refused reservation takes nothing");
        assert!(matches!(gauge.check(4, 1), Err(SubmitError::ExceedsQueue { .. })));
        assert!(matches!(gauge.check(1, 11), Err(SubmitError::ExceedsQueue { .. })));
        let a = QueueSlot::reserved(gauge.clone(), 5, true);
        let b = QueueSlot::reserved(gauge.clone(), 3, true);
        a.release();
        a.release();
        assert_eq!(gauge.queued(), (1, 3));
        drop(a);
        drop(b);
        assert_eq!(gauge.queued(), (0, 0));
        let free = QueueSlot::reserved(gauge.clone(), 7, false);
        drop(free);
        assert_eq!(gauge.queued(), (0, 0), "a slot that holds nothing gives nothing back");
    }
}
