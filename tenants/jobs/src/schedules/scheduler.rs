//! The scheduler thread: creates the default schedules once, then calls
//! [`tick`] every second until stopped. Every worker process runs one; the
//! fire times stay exactly once however many do.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use tenantplane_control_db::error::report;
use tenantplane_control_db::ControlDb;

use super::fire::tick;
use super::store::ensure_defaults;

/// How a scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between ticks.
    pub every: Duration,
    /// Create the default schedules (by name, once ever) before the first
    /// tick.
    pub defaults: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            every: Duration::from_secs(1),
            defaults: true,
        }
    }
}

/// A running scheduler thread. [`Scheduler::stop`] waits for the tick in
/// hand; dropping it asks the thread to stop without waiting.
#[derive(Debug)]
pub struct Scheduler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the scheduler with the defaults: a tick every second, the
    /// default schedules created first.
    pub fn start(db: ControlDb) -> std::io::Result<Scheduler> {
        Scheduler::start_with(db, SchedulerConfig::default())
    }

    pub fn start_with(db: ControlDb, config: SchedulerConfig) -> std::io::Result<Scheduler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || run_scheduler(&db, &flag, &config))?;
        Ok(Scheduler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after the tick in hand.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the scheduler thread panicked");
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sleeps up to `d`, waking early when `stop` is set.
fn nap(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// The scheduler's loop, for a caller that runs its own thread: ticks every
/// `config.every` until `stop` is set. A failing schedule is logged when
/// its error first appears or changes, not every second.
pub fn run_scheduler(db: &ControlDb, stop: &AtomicBool, config: &SchedulerConfig) {
    let mut defaults_done = !config.defaults;
    let mut known_failures: BTreeMap<String, String> = BTreeMap::new();
    tracing::info!(
        every_ms = config.every.as_millis() as u64,
        "scheduler started"
    );
    while !stop.load(Ordering::SeqCst) {
        if !defaults_done {
            match ensure_defaults(db) {
                Ok(created) => {
                    if !created.is_empty() {
                        tracing::info!(?created, "default schedules created");
                    }
                    defaults_done = true;
                }
                Err(e) => {
                    tracing::warn!(error = %report(&e), "creating the default schedules failed")
                }
            }
        }
        match tick(db, Utc::now().naive_utc()) {
            Ok(r) => {
                let failing: BTreeMap<String, String> = r.failed.into_iter().collect();
                for (name, error) in &failing {
                    if known_failures.get(name) != Some(error) {
                        tracing::warn!(schedule = %name, %error, "deciding a schedule's fire times failed");
                    }
                }
                known_failures = failing;
            }
            Err(e) => tracing::warn!(error = %report(&e), "scheduler tick failed"),
        }
        nap(stop, config.every);
    }
    tracing::info!("scheduler stopped");
}
