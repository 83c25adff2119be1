//! The worker: background work driven only by rows in the control database.
//!
//! Today it runs the provisioning sweeper (tenants left `provisioning` by a
//! crashed process are cleaned up); the rollout engine, backups and schedules
//! join it here.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use tenantplane_tenants::registry::{sweep_abandoned, PROVISIONING_GRACE};
use tenantplane_tenants::ControlDb;

/// How often the worker looks for work when idle.
pub const TICK: Duration = Duration::from_secs(30);

/// A running worker; dropping the handle does not stop it, [`WorkerHandle::stop`] does.
pub struct WorkerHandle {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl WorkerHandle {
    /// Asks the worker to stop and waits for its current job to finish.
    pub fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::error!("worker thread panicked");
        }
    }
}

/// One pass over every job the worker runs.
pub fn tick(db: &ControlDb) {
    match sweep_abandoned(db, PROVISIONING_GRACE) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "provisioning sweep done"),
        Err(e) => tracing::warn!(error = %e, "provisioning sweep failed"),
    }
}

/// Starts the worker on its own thread.
pub fn start(db: ControlDb, tick_every: Duration) -> std::io::Result<WorkerHandle> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            tracing::info!("worker started");
            loop {
                tick(&db);
                match stopped.recv_timeout(tick_every) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            tracing::info!("worker stopped");
        })?;
    Ok(WorkerHandle { stop, thread })
}
