//! The worker: background work driven only by rows in the control database.
//!
//! - Executor threads claim rollout tasks (leases), migrate one tenant each
//!   (`tenant_run`), and record the outcome; a tenant whose schema drifted
//!   from its version's reference is refused first (`drift_gate`).
//! - A maintenance thread extends the leases of running tasks, moves rollouts
//!   through their waves, and keeps the periodic housekeeping queued.
//! - A job runner (`tenantplane_jobs`) runs durable jobs: the provisioning
//!   and trial sweeps and the pruning of old jobs today (`jobs.rs`).
//! - A scheduler thread fires the cron schedules (`tenantplane_jobs::schedules`).
//! - A relay thread fans new outbox events out into deliveries, which the
//!   job runner sends (`tenantplane_notify`).
//! - Optionally, a health listener (`health.rs`) answers Kubernetes'
//!   liveness and readiness probes.
//!
//! Connections: the control DB through the one pool of the process
//! (`ControlDb::open_with`); tenant databases one per tenant run, at most
//! [`WorkerConfig::tenant_db_per_server`] at once per server
//! (`server_slots.rs`). docs/operations.md ("Connection budget") adds them
//! up.
//!
//! Any number of worker processes may share a PostgreSQL control database: a
//! task belongs to whoever holds its lease, and a killed worker's leases
//! expire so others take its tasks over.

mod drift_gate;
mod executor;
pub mod health;
pub mod jobs;
mod server_slots;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tenantplane_control_db::error::report;
use tenantplane_control_db::ControlDb;
use tenantplane_jobs::schedules::{Scheduler, SchedulerConfig};
use tenantplane_jobs::{Runner, RunnerConfig};
use tenantplane_rollout::{rollouts, tasks};

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Executor threads: tenants this process migrates at once.
    pub threads: usize,
    /// How long a claimed task stays ours without a heartbeat.
    pub lease: Duration,
    /// How long an idle executor waits before looking for work again.
    pub poll: Duration,
    /// SQLite: how long to wait for a tenant's lock before retrying later.
    pub lock_wait: Duration,
    /// How often the provisioning and trial sweeps run (across all workers).
    pub sweep_every: Duration,
    /// Threads running durable jobs (sweeps, backups, verifications…).
    pub job_threads: usize,
    /// Where backup jobs write (`file:///dir`); `None`: backup jobs of this
    /// worker fail with a clear error instead of writing somewhere unasked.
    pub backup_store: Option<String>,
    /// E-mail and webhook settings of the delivery jobs and the relay.
    pub notify: tenantplane_notify::NotifyConfig,
    /// How often the relay looks for new outbox events when idle.
    pub relay_poll: Duration,
    /// Tenant runs (one tenant connection each) this process has open at
    /// once against one database server, across rollouts; `None`: as many
    /// as executor threads (no bound beyond the rollouts' own
    /// `per_server_concurrency`).
    pub tenant_db_per_server: Option<usize>,
    /// Where the health listener binds (`/healthz`, `/readyz`); `None`: no
    /// listener.
    pub health_addr: Option<String>,
    /// Liveness fails when the maintenance loop has not gone round for this
    /// long. One round makes at most three control-DB calls, each of which
    /// gives up after the pool's 10 s timeout when the database is away,
    /// plus its nap (a third of the lease): 2 minutes tell a hung process
    /// from a database outage.
    pub stall_after: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        WorkerConfig {
            // A tenant run waits on its database as much as it computes, and
            // far more when the database is across a network: measured at a
            // 2.4 ms round trip, 16 threads on 2 cores migrated 20 PostgreSQL
            // tenants/s against 12 with 4, and on loopback 4 per core is as
            // fast as 2 per core (docs/benchmarks.md). It also matches the
            // rollouts' default concurrency of 8 on a 2-core machine.
            threads: (cores * 4).max(2),
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(200),
            lock_wait: Duration::from_millis(1000),
            sweep_every: Duration::from_secs(30),
            job_threads: 2,
            backup_store: None,
            notify: tenantplane_notify::NotifyConfig::default(),
            relay_poll: Duration::from_millis(250),
            tenant_db_per_server: None,
            health_addr: None,
            stall_after: Duration::from_secs(120),
        }
    }
}

/// A running worker. [`WorkerHandle::stop`] lets the tasks in hand finish;
/// [`WorkerHandle::stop_within`] gives them a grace period.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    maintenance: JoinHandle<()>,
    jobs: Runner,
    scheduler: Scheduler,
    relay: tenantplane_notify::Relay,
    pub id: String,
    health_addr: Option<SocketAddr>,
}

/// What a graceful stop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Rollout tasks still running at the end of the grace, handed back.
    pub tasks_released: usize,
    /// Jobs still running at the end of the grace, handed back.
    pub jobs_released: usize,
}

impl WorkerHandle {
    /// The health listener's bound address, when it runs.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn stop(self) {
        self.shared.pulse.set_stopping();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.scheduler.stop();
        self.relay.stop();
        self.jobs.stop();
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        self.shared.stop_heartbeat.store(true, Ordering::SeqCst);
        if self.maintenance.join().is_err() {
            tracing::error!("the maintenance thread panicked");
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }

    /// Stops claiming (tasks, jobs, schedule fires) and gives the tenant
    /// runs and jobs in hand `grace` to finish, their leases kept alive
    /// meanwhile. What is still running then is handed back at once
    /// (`tasks::release`, `queue::release`), so other workers take it over
    /// without waiting for the lease; the threads running it are left to
    /// the process's exit, which rolls their tenant transactions back.
    pub fn stop_within(self, grace: Duration) -> Stopped {
        let deadline = Instant::now() + grace;
        self.shared.pulse.set_stopping();
        self.shared.stop.store(true, Ordering::SeqCst);
        self.scheduler.stop();
        // Events not fanned out yet wait in the outbox for the next relay.
        self.relay.stop();
        let jobs_released = self.jobs.stop_by(deadline);
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = Stopped {
            tasks_released: 0,
            jobs_released,
        };
        if self.threads.iter().all(|t| t.is_finished()) {
            for t in self.threads {
                if t.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        } else {
            let ids: Vec<i64> = self
                .shared
                .in_flight
                .lock()
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default();
            match tasks::release(&self.shared.db, &self.id, &ids) {
                Ok(n) => out.tasks_released = n,
                Err(e) => {
                    tracing::error!(error = %report(&e), "could not hand back the unfinished tasks; their leases will expire")
                }
            }
        }
        self.shared.stop_heartbeat.store(true, Ordering::SeqCst);
        tracing::info!(worker = %self.id, tasks_released = out.tasks_released,
            jobs_released = out.jobs_released, "worker stopped");
        out
    }
}

/// Shared between the threads of one worker process.
struct Shared {
    db: ControlDb,
    id: String,
    config: WorkerConfig,
    stop: Arc<AtomicBool>,
    /// Set after `stop`: the leases of the tasks in hand are kept alive
    /// until then.
    stop_heartbeat: AtomicBool,
    in_flight: Mutex<HashSet<i64>>,
    /// The per-server bound on tenant runs of this process.
    slots: server_slots::ServerSlots,
    /// Proof of life for the liveness probe.
    pulse: Arc<health::Pulse>,
}

/// Sleeps up to `d`, waking early when `flag` is set.
fn nap_until(flag: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !flag.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

impl Shared {
    /// Sleeps up to `d`, waking early when asked to stop.
    fn nap(&self, d: Duration) {
        nap_until(&self.stop, d);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Starts the worker threads.
pub fn start(db: ControlDb, config: WorkerConfig) -> std::io::Result<WorkerHandle> {
    if let Some(url) = &config.backup_store {
        let store = tenantplane_backup::store::open(url)
            .map_err(|e| std::io::Error::other(format!("backup store: {}", report(&e))))?;
        tenantplane_backup::jobs::install_store(store);
    }
    tenantplane_notify::install(config.notify.clone());
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let id = format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    // Bound first: a taken port fails the start before any work is claimed.
    let health_listener = match &config.health_addr {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
            std::io::Error::new(e.kind(), format!("binding the health listener {addr}: {e}"))
        })?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pulse = Arc::new(health::Pulse::new(config.threads));
    pulse.round();
    let shared = Arc::new(Shared {
        db,
        id: id.clone(),
        config: config.clone(),
        stop: stop.clone(),
        stop_heartbeat: AtomicBool::new(false),
        in_flight: Mutex::new(HashSet::new()),
        slots: server_slots::ServerSlots::new(
            config.tenant_db_per_server.unwrap_or(config.threads),
        ),
        pulse: pulse.clone(),
    });
    let mut threads = Vec::new();
    for n in 0..config.threads {
        let s = shared.clone();
        // Counted before the thread starts, so a probe right after the
        // start does not see executors missing.
        let alive = pulse.executor();
        threads.push(
            std::thread::Builder::new()
                .name(format!("executor-{n}"))
                .spawn(move || {
                    let _alive = alive;
                    executor::run(&s)
                })?,
        );
    }
    let jobs = Runner::start(
        shared.db.clone(),
        jobs::registry(),
        RunnerConfig {
            threads: config.job_threads.max(1),
            lease: config.lease,
            ..RunnerConfig::new(id.clone())
        },
    )?;
    // Fires cron schedules (each fire time once, whichever process decides
    // it first). The default schedules are the process's start-up work
    // (`serve::open_control` creates them before anything listens), not
    // every worker's: a worker started on its own (a benchmark, a test)
    // gets no wall-clock backups or retention it did not ask for.
    let scheduler = Scheduler::start_with(
        shared.db.clone(),
        SchedulerConfig {
            defaults: false,
            ..SchedulerConfig::default()
        },
    )?;
    // Fans new outbox events out into deliveries and their jobs.
    let relay = tenantplane_notify::Relay::start(
        shared.db.clone(),
        tenantplane_notify::installed(),
        config.relay_poll,
    )?;
    let s = shared.clone();
    let maintenance = std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || maintenance(&s))?;
    let health_addr = match health_listener {
        Some(l) => Some(health::serve(
            l,
            shared.db.clone(),
            pulse,
            config.stall_after,
        )?),
        None => None,
    };
    tracing::info!(worker = %id, threads = config.threads, job_threads = config.job_threads,
        tenant_db_per_server = config.tenant_db_per_server.unwrap_or(config.threads),
        control_db_pool = shared.db.max_connections(), ?health_addr, "worker started");
    Ok(WorkerHandle {
        shared,
        threads,
        maintenance,
        jobs,
        scheduler,
        relay,
        id,
        health_addr,
    })
}

/// Heartbeats, wave advancement, queueing the housekeeping jobs. Once the
/// worker is stopping, only the heartbeats go on (for the tasks still in
/// hand), until `stop_heartbeat`.
fn maintenance(s: &Shared) {
    let beat = (s.config.lease / 3).max(Duration::from_millis(100));
    // The loop wakes at least every ADVANCE_EVERY so that wave holds open
    // on time; the heartbeat itself runs once per `beat`.
    let tick = beat.min(ADVANCE_EVERY);
    let mut last_sweep: Option<Instant> = None;
    let mut last_advance = Instant::now();
    let mut last_beat: Option<Instant> = None;
    while !s.stop_heartbeat.load(Ordering::SeqCst) {
        s.pulse.round();
        if last_beat.is_none_or(|t| t.elapsed() >= beat) {
            let ids: Vec<i64> = s
                .in_flight
                .lock()
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default();
            if let Err(e) = tasks::heartbeat(&s.db, &s.id, &ids, s.config.lease) {
                tracing::warn!(error = %report(&e), "heartbeat failed");
            }
            last_beat = Some(Instant::now());
        }
        if s.stopping() {
            nap_until(&s.stop_heartbeat, tick);
            continue;
        }
        if last_advance.elapsed() >= ADVANCE_EVERY {
            if let Err(e) = rollouts::advance_all(&s.db) {
                tracing::warn!(error = %report(&e), "advancing rollouts failed");
            }
            last_advance = Instant::now();
        }
        if last_sweep.is_none_or(|t| t.elapsed() >= s.config.sweep_every) {
            if let Err(e) = jobs::enqueue_housekeeping(&s.db, s.config.sweep_every) {
                tracing::warn!(error = %report(&e), "queueing the housekeeping jobs failed");
            }
            last_sweep = Some(Instant::now());
        }
        s.nap(tick);
    }
}

/// How often a worker moves every running rollout on (`advance_all`): the
/// safety net for completions that raced a crash, and what opens a wave
/// after its `hold_s`.
const ADVANCE_EVERY: Duration = Duration::from_secs(2);
