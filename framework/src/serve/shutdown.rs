//! Graceful shutdown: the signals that start it (SIGINT and SIGTERM alike, as Docker and
//! Kubernetes send SIGTERM) and the phase every part of the server watches: `Serving`, then
//! `Draining` (no new connection or request is admitted; running ones go on), then `Expired`
//! once `shutdown_timeout` has passed (streams end with an error event and `[DONE]`, waiting
//! answers become 503s).

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
    Expired,
}

/// The shared phase.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { tx: watch::channel(Phase::Serving).0 }
    }
}

impl Shutdown {
    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// Moves to `phase` (never back).
    pub fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            let later = matches!(
                (*p, phase),
                (Phase::Serving, Phase::Draining | Phase::Expired) | (Phase::Draining, Phase::Expired)
            );
            if later {
                *p = phase;
            }
            later
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }
}

/// Resolves once `phase` reaches `at` (or later); never if the server is gone first.
pub async fn reached(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let rank = |p: Phase| p as u8;
    if phase.wait_for(|p| rank(*p) >= rank(at)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves on the first SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_advance() {
        let s = Shutdown::default();
        let mut rx = s.subscribe();
        s.advance(Phase::Draining);
        reached(&mut rx, Phase::Draining).await;
        s.advance(Phase::Serving);
        assert_eq!(s.phase(), Phase::Draining);
        s.advance(Phase::Expired);
        reached(&mut rx, Phase::Expired).await;
        reached(&mut rx, Phase::Draining).await;
        assert_eq!(s.phase(), Phase::Expired);
    }
}
