//! The tenant-DB connection budget of one worker process: at most
//! `max_per_server` tenant runs (each holding one tenant connection, plus
//! the pre-migration backup's when asked) at once against one database
//! server, whatever rollouts the executors are working for
//! (`TENANTPLANE_TENANT_DB_POOL_SIZE`).
//!
//! A rollout's `per_server_concurrency` already bounds its own running
//! tasks per server across all workers (the claim counts them); this bound
//! is per process and across rollouts, so two rollouts running at once, or
//! a fleet of workers with many threads, cannot open more connections to one
//! server than the operator budgeted. An executor that claimed a task for a
//! full server waits here (its lease kept alive by the maintenance thread)
//! until another run on that server ends.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

pub(crate) struct ServerSlots {
    max_per_server: usize,
    held: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

/// One slot on one server, given back when dropped.
pub(crate) struct Slot<'a> {
    slots: &'a ServerSlots,
    server: String,
}

impl ServerSlots {
    pub(crate) fn new(max_per_server: usize) -> ServerSlots {
        ServerSlots {
            max_per_server: max_per_server.max(1),
            held: Mutex::new(HashMap::new()),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot on `server`.
    pub(crate) fn acquire(&self, server: &str) -> Slot<'_> {
        // A poisoned lock means a thread panicked while counting; the
        // counts themselves are still whole numbers, so go on with them.
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.get(server).copied().unwrap_or(0) >= self.max_per_server {
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        *held.entry(server.to_string()).or_insert(0) += 1;
        Slot {
            slots: self,
            server: server.to_string(),
        }
    }

    #[cfg(test)]
    fn in_use(&self, server: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(server).copied().unwrap_or(0)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.server) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.server);
            }
        }
        drop(held);
        self.slots.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn never_more_than_the_budget_per_server() {
        let slots = ServerSlots::new(2);
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        let _slot = slots.acquire("pg-1");
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        // Another server is not held up by this one's budget.
                        let other = slots.acquire("pg-2");
                        std::thread::sleep(Duration::from_millis(2));
                        drop(other);
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(slots.in_use("pg-1"), 0);
        assert_eq!(slots.in_use("pg-2"), 0);
    }
}
