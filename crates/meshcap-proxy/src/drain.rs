//! Graceful drain: one [`Drain`] handle that starts a drain, any number of [`DrainWatch`]es that notice it.
//!
//! The accept loop ([`crate::listen::Listener::serve`]) owns a `Drain` and hands a `DrainWatch` to every
//! connection. When the shutdown future completes the loop stops accepting and signals the drain; a
//! connection handler that can end early (an HTTP/1.1 connection between two requests, for example)
//! watches [`DrainWatch::signaled`] and closes at the next safe point. Connections that do not finish
//! by the listener's drain timeout are aborted.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (drain, watch) = meshcap_proxy::drain::channel();
//! let task = tokio::spawn(async move {
//!     watch.signaled().await;
//!     "closed at a safe point"
//! });
//! drain.signal();
//! assert_eq!(task.await.unwrap(), "closed at a safe point");
//! # }
//! ```

use tokio::sync::watch;

/// Starts a drain; see the [module docs](self).
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
}

/// Notices a drain; cheap to clone.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
}

/// A new drain handle and its first watch.
pub fn channel() -> (Drain, DrainWatch) {
    let (tx, rx) = watch::channel(false);
    (Drain { tx }, DrainWatch { rx })
}

impl Drain {
    /// Signal every watch (idempotent).
    pub fn signal(&self) {
        self.tx.send_replace(true);
    }

    /// Another watch on this drain.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }

    /// Whether the drain was signaled.
    pub fn is_signaled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Number of live watches (connections that still hold one).
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Signal, then wait until every watch is dropped.
    pub async fn drain(self) {
        self.signal();
        self.tx.closed().await;
    }
}

impl DrainWatch {
    /// Whether the drain was signaled.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the drain is signaled (at once if it already was). When the [`Drain`] handle is
    /// dropped without signaling, this never resolves: nobody is left to start a drain.
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_every_watch() {
        let (drain, watch) = channel();
        let second = drain.watch();
        assert_eq!(drain.watchers(), 2);
        assert!(!watch.is_draining());
        let a = tokio::spawn(async move {
            watch.signaled().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let b = tokio::spawn(async move {
            second.signaled().await;
        });
        let start = tokio::time::Instant::now();
        drain.drain().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        a.await.unwrap();
        b.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn watch_of_a_dropped_drain_never_fires() {
        let (drain, watch) = channel();
        drop(drain);
        let fired = tokio::time::timeout(Duration::from_secs(60), watch.signaled()).await;
        assert!(fired.is_err());
    }

    #[tokio::test]
    async fn signaled_resolves_immediately_after_signal() {
        let (drain, watch) = channel();
        drain.signal();
        assert!(drain.is_signaled());
        watch.signaled().await;
        watch.clone().signaled().await;
        assert!(watch.is_draining());
    }
}
