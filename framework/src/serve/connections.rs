//! The open connections and the limit on them. Each connection counts its requests in
//! progress; one with none is idle. A connection beyond `max_connections` closes the one idle
//! the longest (an idle or half-sent connection holds nothing worth keeping, so a flood of
//! them cannot lock real clients out); when every connection has a request running, the new
//! one is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Debug)]
struct Entry {
    in_flight: usize,
    /// Since when nothing has been in progress.
    idle_since: Instant,
    /// Told to close (it no longer counts against the limit).
    evicted: bool,
    close: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Entries not evicted.
    live: usize,
}

/// Every open connection.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    inner: Mutex<Inner>,
}

/// A connection's place; dropping it forgets the connection.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    /// Notified when the connection should close (evicted for a newer one).
    pub close: Arc<Notify>,
    set: Arc<Connections>,
}

/// A request in progress on a connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    id: u64,
    set: Arc<Connections>,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections { max: max.max(1), inner: Mutex::new(Inner::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection, closing the longest-idle one if the limit is reached;
    /// `None` when every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Conn> {
        let mut g = self.lock();
        if g.live >= self.max {
            let victim = g
                .entries
                .iter_mut()
                .filter(|(_, e)| !e.evicted && e.in_flight == 0)
                .min_by_key(|(_, e)| e.idle_since)
                .map(|(_, e)| e)?;
            victim.evicted = true;
            victim.close.notify_one();
            g.live -= 1;
        }
        let id = g.next_id;
        g.next_id += 1;
        let close = Arc::new(Notify::new());
        let entry = Entry { in_flight: 0, idle_since: Instant::now(), evicted: false, close: close.clone() };
        g.entries.insert(id, entry);
        g.live += 1;
        Some(Conn { id, close, set: self.clone() })
    }

    /// Open connections (evicted ones that have not closed yet included).
    pub fn open(&self) -> usize {
        self.lock().entries.len()
    }

    /// When connection `id` became idle, or `None` while it has a request in progress.
    pub fn idle_since(&self, id: u64) -> Option<Instant> {
        self.lock().entries.get(&id).filter(|e| e.in_flight == 0).map(|e| e.idle_since)
    }

    /// Marks a request in progress on connection `id`.
    pub fn begin(self: &Arc<Self>, id: u64) -> InFlight {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.in_flight += 1;
        }
        InFlight { id, set: self.clone() }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut g = self.set.lock();
        if let Some(e) = g.entries.remove(&self.id) {
            if !e.evicted {
                g.live -= 1;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.set.lock().entries.get_mut(&self.id) {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 {
                e.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_evicts_the_longest_idle_and_refuses_when_all_are_busy() {
        let set = Connections::new(2);
        let a = set.admit().unwrap();
        let b = set.admit().unwrap();
        let busy_b = set.begin(b.id);
        let c = set.admit().expect("a is idle: evicted");
        assert!(set.idle_since(b.id).is_none());
        // a was told to close: its notification is waiting.
        let notified = futures_util::FutureExt::now_or_never(a.close.notified());
        assert!(notified.is_some());
        let busy_c = set.begin(c.id);
        assert!(set.admit().is_none(), "b and c are busy");
        drop(busy_c);
        assert!(set.idle_since(c.id).is_some());
        assert_eq!(set.open(), 3, "a has not closed yet");
        drop(a);
        let d = set.admit().expect("c is idle again");
        drop((b, busy_b, c, d));
        assert_eq!(set.open(), 0);
    }
}
