//! The engine: rollouts to head run by an in-process worker, timed, and the
//! check that every tenant got there.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use diesel::prelude::*;
use tenantplane_control_db::schema::{tasks, tenants};
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_migrations::catalogue;
use tenantplane_rollout::rollouts::{self, Created, RolloutRequest, Selector};
use tenantplane_worker::{WorkerConfig, WorkerHandle};
use uuid::Uuid;

use super::progress::Progress;
use super::Settings;
use crate::cpu_meter::CpuMeter;

/// How often the engine phase reads the rollout's state.
const POLL: Duration = Duration::from_millis(20);
/// How often it reads the whole rollout (counts) for the progress lines.
const FULL_READ: Duration = Duration::from_secs(1);
/// Tenant databases whose applied versions are checked after the engine run.
const SAMPLE: i64 = 25;
/// A rollout that finishes no tenant for this long fails the bench.
const STALL: Duration = Duration::from_secs(300);

/// Stops the worker when dropped, so an error never leaves executors running
/// against a database that is about to be dropped.
pub(super) struct Worker(Option<WorkerHandle>);

impl Worker {
    pub(super) fn stop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.stop();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rollout_to_head(s: &Settings) -> RolloutRequest {
    RolloutRequest {
        target: "head".to_string(),
        selector: Selector {
            all: Some(true),
            ..Selector::default()
        },
        waves: None,
        concurrency: Some(s.concurrency),
        per_server_concurrency: None,
        max_attempts: None,
        backoff: None,
        timeout_s: None,
        failure_budget: None,
        verify: None,
        dry_run: None,
        priority: None,
        backup: None,
        restore_on_failure: None,
        allow_drift: None,
    }
}

pub(super) fn start_worker(s: &Settings, db: &ControlDb) -> Result<Worker> {
    let config = WorkerConfig {
        threads: s.threads,
        ..WorkerConfig::default()
    };
    let handle = tenantplane_worker::start(db.clone(), config).context("starting the worker")?;
    Ok(Worker(Some(handle)))
}

pub(super) struct EngineRun {
    pub(super) secs: f64,
    /// Busy CPU seconds of the whole machine during the run.
    pub(super) cpu_secs: f64,
    pub(super) create_secs: f64,
    /// Sum of the tasks' durations (tenant runs as the executor times them).
    pub(super) task_secs: f64,
    pub(super) polls: u64,
    pub(super) poll_secs: f64,
    pub(super) worker: Worker,
}

pub(super) fn run(s: &Settings, db: &ControlDb, actor: &Actor) -> Result<EngineRun> {
    eprintln!("engine: rollout to head over {} tenants", s.tenants);
    let started = Instant::now();
    let cpu = CpuMeter::start()?;
    let created =
        rollouts::create(db, actor, rollout_to_head(s)).context("creating the rollout")?;
    let create_secs = started.elapsed().as_secs_f64();
    let Created::Rollout(rollout) = created else {
        bail!("rollouts::create returned a plan, not a rollout");
    };
    // Started right after the rollout exists: an idle executor backs off up
    // to 2 s between polls, which would otherwise add up to 2 s of nothing.
    let worker = start_worker(s, db)?;
    let mut progress = Progress::new("engine", s.tenants);
    let waited = wait_for(db, &rollout.id, &mut progress)?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu.busy_secs()?;
    ensure!(
        waited.succeeded == s.tenants as i64,
        "the rollout succeeded with {} of {} tenants migrated",
        waited.succeeded,
        s.tenants
    );
    // Sum of the task durations, as a plain BIGINT on both backends.
    let task_ms: i64 = tasks::table
        .filter(tasks::rollout_id.eq(&rollout.id))
        .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT)",
        ))
        .first(&mut db.conn()?)
        .context("summing the task durations")?;
    Ok(EngineRun {
        secs,
        cpu_secs,
        create_secs,
        task_secs: task_ms as f64 / 1000.0,
        polls: waited.polls,
        poll_secs: waited.poll_secs,
        worker,
    })
}

struct Waited {
    succeeded: i64,
    skipped: i64,
    polls: u64,
    poll_secs: f64,
}

/// Waits until the rollout is `succeeded`; any other end fails with a few
/// task errors.
///
/// The state is read every [`POLL`] with `rollouts::find_row` (a primary-key
/// read). `rollouts::get`, which also counts the tasks and aggregates their
/// times, is read only every [`FULL_READ`] for progress and once at the end:
/// at 10,000 tenants one `get` costs several milliseconds of control-database
/// work, and calling it every 20 ms took a large share of a 2-core machine
/// away from the engine being measured.
fn wait_for(db: &ControlDb, id: &str, progress: &mut Progress) -> Result<Waited> {
    let mut polls = 0u64;
    let mut poll_time = Duration::ZERO;
    let mut last_done = -1i64;
    let mut last_change = Instant::now();
    let mut last_full: Option<Instant> = None;
    loop {
        let t = Instant::now();
        let state = {
            let mut conn = db.conn()?;
            rollouts::find_row(&mut conn, id)
                .context("reading the rollout")?
                .state
        };
        let full = state != "running" || last_full.is_none_or(|f| f.elapsed() >= FULL_READ);
        let r = if full {
            last_full = Some(Instant::now());
            Some(rollouts::get(db, id).context("reading the rollout")?)
        } else {
            None
        };
        poll_time += t.elapsed();
        polls += 1;
        let Some(r) = r else {
            std::thread::sleep(POLL);
            continue;
        };
        let c = &r.counts;
        let done = c.succeeded + c.failed + c.skipped + c.cancelled;
        match r.state.as_str() {
            "succeeded" => {
                progress.update(done as usize);
                return Ok(Waited {
                    succeeded: c.succeeded,
                    skipped: c.skipped,
                    polls,
                    poll_secs: poll_time.as_secs_f64(),
                });
            }
            "running" => {}
            other => {
                let errors = task_errors(db, id);
                bail!(
                    "the rollout ended {other} ({}): {} succeeded, {} failed, {} pending; {errors}",
                    r.halt_reason.as_deref().unwrap_or("no reason given"),
                    c.succeeded,
                    c.failed,
                    c.pending
                );
            }
        }
        if done != last_done {
            last_done = done;
            last_change = Instant::now();
            progress.update(done as usize);
        } else if last_change.elapsed() > STALL {
            let errors = task_errors(db, id);
            bail!(
                "the rollout made no progress for {} s ({} of {} done); {errors}",
                STALL.as_secs(),
                done,
                r.total
            );
        }
        std::thread::sleep(POLL);
    }
}

/// A few task errors of a rollout, for a failure message.
fn task_errors(db: &ControlDb, id: &str) -> String {
    let mut lines = Vec::new();
    for state in ["failed", "pending", "running"] {
        match rollouts::tasks_page(db, id, Some(state), 200, None) {
            Ok(page) => lines.extend(
                page.items
                    .into_iter()
                    .filter_map(|t| t.last_error.map(|e| format!("{} ({state}): {e}", t.slug))),
            ),
            Err(e) => lines.push(format!("cannot read {state} tasks: {e}")),
        }
        if lines.len() >= 5 {
            break;
        }
    }
    lines.truncate(5);
    if lines.is_empty() {
        "no task error recorded".to_string()
    } else {
        format!("task errors: {}", lines.join(" | "))
    }
}

/// Every tenant's control row is at head, and a random sample of tenant
/// databases holds every catalogue version.
pub(super) fn verify(s: &Settings, db: &ControlDb, server: &DatabaseServer) -> Result<()> {
    let mut conn = db.conn()?;
    let total: i64 = tenants::table.count().get_result(&mut conn)?;
    let at_head: i64 = tenants::table
        .filter(tenants::schema_version.eq(s.head))
        .count()
        .get_result(&mut conn)?;
    ensure!(
        total == s.tenants as i64 && at_head == total,
        "control database: {at_head} of {total} tenants at head {} (expected {})",
        s.head,
        s.tenants
    );
    let sample: Vec<String> = tenants::table
        .select(tenants::id)
        .order(diesel::dsl::sql::<diesel::sql_types::Double>("random()"))
        .limit(SAMPLE)
        .load(&mut conn)?;
    drop(conn);
    let all: Vec<String> = catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .collect();
    for id in &sample {
        let uuid = Uuid::parse_str(id).with_context(|| format!("tenant id {id}"))?;
        let location = TenantDbLocation::new(server, &uuid);
        let applied = location
            .connect()
            .map_err(|e| anyhow!("connecting to tenant {id}: {e}"))?
            .applied_versions()
            .with_context(|| format!("reading the versions of tenant {id}"))?;
        ensure!(
            applied == all,
            "tenant {id}: its database has {} of {} versions",
            applied.len(),
            all.len()
        );
    }
    eprintln!(
        "engine verified: {total} control rows at head, {} sampled tenant databases hold all {} versions",
        sample.len(),
        all.len()
    );
    Ok(())
}

pub(super) struct Noop {
    pub(super) secs: f64,
    pub(super) skipped: i64,
}

pub(super) fn run_noop(s: &Settings, db: &ControlDb, actor: &Actor) -> Result<Noop> {
    let started = Instant::now();
    let created =
        rollouts::create(db, actor, rollout_to_head(s)).context("creating the no-op rollout")?;
    let Created::Rollout(rollout) = created else {
        bail!("rollouts::create returned a plan, not a rollout");
    };
    let mut progress = Progress::new("no-op rollout", s.tenants);
    let waited = wait_for(db, &rollout.id, &mut progress)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        waited.skipped + waited.succeeded == s.tenants as i64,
        "the no-op rollout covered {} of {} tenants",
        waited.skipped + waited.succeeded,
        s.tenants
    );
    Ok(Noop {
        secs,
        skipped: waited.skipped,
    })
}
