//! Threads that claim and run jobs, and one that keeps their leases alive.
//!
//! Any number of runners (threads of one process, or processes) may share a
//! control database: a job belongs to whoever holds its lease, and a dead
//! runner's leases expire so another takes its jobs over.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tenantplane_control_db::error::report;
use tenantplane_control_db::ControlDb;

use crate::job::JobContext;
use crate::queue::{self, ClaimedJob};
use crate::registry::Registry;

/// How a runner runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Names this runner in `lease_owner`; unique per process.
    pub worker_id: String,
    /// Jobs this runner runs at once.
    pub threads: usize,
    /// How long a claimed job stays ours without a heartbeat.
    pub lease: Duration,
    /// How long an idle thread first waits before looking for work again;
    /// the wait doubles while the queue stays empty, up to `max_idle`.
    pub poll: Duration,
    pub max_idle: Duration,
}

impl RunnerConfig {
    pub fn new(worker_id: impl Into<String>) -> Self {
        RunnerConfig {
            worker_id: worker_id.into(),
            threads: 2,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(200),
            max_idle: Duration::from_secs(2),
        }
    }
}

/// A running runner. [`Runner::stop`] lets the jobs in hand finish; dropping
/// it asks the threads to stop without waiting for them.
pub struct Runner {
    worker_id: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    stop_heartbeat: Arc<AtomicBool>,
    executors: Vec<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("worker_id", &self.worker_id)
            .field("threads", &self.executors.len())
            .finish()
    }
}

/// Shared by the threads of one runner.
struct Shared {
    db: ControlDb,
    registry: Registry,
    kinds: Vec<&'static str>,
    worker_id: Arc<str>,
    config: RunnerConfig,
    stop: Arc<AtomicBool>,
    in_flight: Mutex<HashSet<i64>>,
}

/// Sleeps up to `d`, waking early when `flag` is set.
fn nap(flag: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !flag.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

impl Runner {
    /// Starts `config.threads` executor threads and the heartbeat thread.
    pub fn start(db: ControlDb, registry: Registry, config: RunnerConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_heartbeat = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            db,
            kinds: registry.kinds(),
            registry,
            worker_id: Arc::from(config.worker_id.as_str()),
            config: config.clone(),
            stop: stop.clone(),
            in_flight: Mutex::new(HashSet::new()),
        });
        let mut runner = Runner {
            worker_id: config.worker_id.clone(),
            shared: shared.clone(),
            stop,
            stop_heartbeat: stop_heartbeat.clone(),
            executors: Vec::new(),
            heartbeat: None,
        };
        // On a failed spawn `runner` drops, which stops the threads already
        // started instead of leaving them running unowned.
        for n in 0..config.threads.max(1) {
            let s = shared.clone();
            runner.executors.push(
                std::thread::Builder::new()
                    .name(format!("job-executor-{n}"))
                    .spawn(move || executor(&s))?,
            );
        }
        let s = shared.clone();
        runner.heartbeat = Some(
            std::thread::Builder::new()
                .name("job-heartbeat".into())
                .spawn(move || heartbeat(&s, &stop_heartbeat))?,
        );
        tracing::info!(worker = %config.worker_id, threads = runner.executors.len(), kinds = ?shared.kinds, "job runner started");
        Ok(runner)
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Stops claiming, waits for the jobs in hand to finish and be recorded,
    /// then stops the heartbeat, which keeps their leases alive until then.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.executors.drain(..) {
            if t.join().is_err() {
                tracing::error!(worker = %self.worker_id, "a job executor thread panicked");
            }
        }
        self.stop_heartbeat.store(true, Ordering::SeqCst);
        if let Some(t) = self.heartbeat.take() {
            if t.join().is_err() {
                tracing::error!(worker = %self.worker_id, "the job heartbeat thread panicked");
            }
        }
        tracing::info!(worker = %self.worker_id, "job runner stopped");
    }
}

impl Runner {
    /// Stops claiming and gives the jobs in hand until `deadline` to finish
    /// (their leases kept alive meanwhile). Jobs still running then are
    /// handed back ([`queue::release`]) so another worker takes them at
    /// once; their threads are left to the process's exit. Returns how many
    /// were handed back.
    pub fn stop_by(self, deadline: Instant) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        while self.executors.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.executors.iter().all(|t| t.is_finished()) {
            self.stop();
            return 0;
        }
        self.stop_heartbeat.store(true, Ordering::SeqCst);
        let ids: Vec<i64> = self
            .shared
            .in_flight
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        match queue::release(&self.shared.db, &self.worker_id, &ids) {
            Ok(n) => {
                tracing::warn!(worker = %self.worker_id, released = n, "shutdown grace over: unfinished jobs handed back");
                n
            }
            Err(e) => {
                tracing::error!(worker = %self.worker_id, error = %report(&e), "could not hand back the unfinished jobs; their leases will expire");
                0
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stop_heartbeat.store(true, Ordering::SeqCst);
    }
}

fn executor(s: &Shared) {
    let mut idle = s.config.poll;
    while !s.stop.load(Ordering::SeqCst) {
        match queue::claim(&s.db, &s.worker_id, s.config.lease, &s.kinds) {
            Ok(Some(job)) => {
                idle = s.config.poll;
                if let Ok(mut set) = s.in_flight.lock() {
                    set.insert(job.id);
                }
                execute(s, &job);
                if let Ok(mut set) = s.in_flight.lock() {
                    set.remove(&job.id);
                }
            }
            Ok(None) => {
                nap(&s.stop, idle);
                idle = (idle * 2).min(s.config.max_idle).max(s.config.poll);
            }
            Err(e) => {
                tracing::warn!(error = %report(&e), "claiming a job failed");
                nap(&s.stop, Duration::from_secs(1));
            }
        }
    }
}

fn execute(s: &Shared, job: &ClaimedJob) {
    let span =
        tracing::info_span!("job", job_id = job.id, kind = %job.kind, attempt = job.attempts);
    let _enter = span.enter();
    let ctx = JobContext::in_runner(
        s.db.clone(),
        s.worker_id.clone(),
        job.id,
        job.attempts,
        s.stop.clone(),
    );
    let started = Instant::now();
    let recorded = match s.registry.run(job, &ctx) {
        Ok(()) => {
            tracing::info!(ms = started.elapsed().as_millis() as u64, "job succeeded");
            queue::complete(&s.db, &s.worker_id, job.id).map(|_| ())
        }
        Err(e) => {
            let backoff = s.registry.backoff(&job.kind);
            let recorded = queue::fail(&s.db, &s.worker_id, job.id, &e, backoff);
            let next = recorded.as_ref().ok().copied().flatten();
            tracing::warn!(
                error = %report(&e),
                permanent = e.is_permanent(),
                next = next.map(|n| n.as_str()),
                "job attempt failed"
            );
            recorded.map(|_| ())
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and another claim retries the job: jobs are
        // idempotent, so running it again is safe.
        tracing::error!(error = %report(&e), "recording the job outcome failed");
    }
}

/// Extends the leases of the jobs in hand every third of the lease, until
/// told to stop (after the executors finished).
fn heartbeat(s: &Shared, stop: &AtomicBool) {
    let beat = (s.config.lease / 3).max(Duration::from_millis(50));
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<i64> = s
            .in_flight
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        match queue::heartbeat(&s.db, &s.worker_id, &ids, s.config.lease) {
            Ok(held) if held < ids.len() => {
                tracing::warn!(
                    held,
                    running = ids.len(),
                    "lost the lease of some jobs in hand"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %report(&e), "job heartbeat failed"),
        }
        nap(stop, beat);
    }
}
