//! Proof of life for long operations whose only owner is the process doing
//! them (a backup taken by an API request, a restore): a thread that runs a
//! small control-DB write every few seconds until the operation ends. When
//! the process dies the writes stop, and whoever looks after crashes (the
//! backup sweep, the restore guard job) knows the operation is gone within
//! minutes rather than after a grace long enough for the largest tenant.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tenantplane_control_db::error::report;

/// How often a heartbeat writes.
pub const EVERY: Duration = Duration::from_secs(10);

/// Runs `beat` every [`EVERY`] until dropped. A failed beat is logged and
/// the next one tried: a control DB that is briefly away must not end the
/// operation, and a long silence is what the sweeps look for anyway.
pub(crate) struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub(crate) fn start<F>(what: String, beat: F) -> Heartbeat
    where
        F: FnMut() -> tenantplane_control_db::Result<()> + Send + 'static,
    {
        Heartbeat::start_every(what, EVERY, beat)
    }

    fn start_every<F>(what: String, every: Duration, mut beat: F) -> Heartbeat
    where
        F: FnMut() -> tenantplane_control_db::Result<()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                // Until stopped (a message, or the owner gone).
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    if let Err(e) = beat() {
                        tracing::warn!(operation = %what, error = %report(&e), "heartbeat not written");
                    }
                }
            });
        match thread {
            Ok(t) => Heartbeat {
                stop: Some(tx),
                thread: Some(t),
            },
            Err(e) => {
                // No thread, no heartbeat: the operation still runs; the
                // sweep may then call it interrupted after a few minutes,
                // which only costs a retry.
                tracing::warn!(error = %e, "cannot start a heartbeat thread");
                Heartbeat {
                    stop: None,
                    thread: None,
                }
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn beats_until_dropped_and_stops_at_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let counter = n.clone();
        let hb = Heartbeat::start_every("test".into(), Duration::from_millis(5), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        while n.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(hb);
        let after = n.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(n.load(Ordering::SeqCst), after, "no beat after the drop");
    }
}
