//! The worker's durable jobs: which kinds this process runs, and the
//! periodic housekeeping it keeps queued.
//!
//! Periodic jobs are enqueued for the next boundary of their period with the
//! boundary as dedup key, by every worker process: the first enqueue wins,
//! the others are no-ops while it waits, so the fleet of workers runs each
//! sweep once per period, on whichever worker claims it, with retries and a
//! visible record in `jobs`.

use chrono::{Duration as ChronoDuration, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use tenantplane_control_db::{write_tx, ControlDb, Result};
use tenantplane_flags::plans;
use tenantplane_fleet::registry::{sweep_abandoned, PROVISIONING_GRACE};
use tenantplane_jobs::{enqueue_at, prune_succeeded, Job, JobContext, JobError, Registry};

/// How long finished jobs stay visible before the prune removes them.
const KEEP_SUCCEEDED_DAYS: i64 = 7;

/// How long outbox events and their finished deliveries stay (how far back
/// a webhook replay reaches); dead deliveries stay until retried.
const KEEP_NOTIFICATIONS_DAYS: i64 = 30;

/// Every kind this worker runs.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<ProvisioningSweep>()
        .register::<TrialSweep>()
        .register::<PruneJobs>()
        .register::<BackupSweep>();
    tenantplane_backup::jobs::register(&mut r);
    tenantplane_notify::register(&mut r);
    tenantplane_drift::register(&mut r);
    r
}

/// Drops the database and row of tenants left `provisioning` by a crash.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProvisioningSweep {
    /// The period boundary this run belongs to (its dedup key); absent when
    /// a schedule started it (its payload is a `schedules::Fire`, whose
    /// fields this job does not need, and the schedule sets the key).
    #[serde(default)]
    pub due: Option<NaiveDateTime>,
}

impl Job for ProvisioningSweep {
    const KIND: &'static str = "sweep.provisioning";

    fn dedup_key(&self) -> Option<String> {
        self.due.map(|d| d.to_string())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let n = sweep_abandoned(ctx.db(), PROVISIONING_GRACE)?;
        if n > 0 {
            tracing::info!(removed = n, "provisioning sweep done");
        }
        Ok(())
    }
}

/// Moves tenants whose trial ended to their plan's fallback.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrialSweep {
    /// As for [`ProvisioningSweep`].
    #[serde(default)]
    pub due: Option<NaiveDateTime>,
}

impl Job for TrialSweep {
    const KIND: &'static str = "sweep.trials";

    fn dedup_key(&self) -> Option<String> {
        self.due.map(|d| d.to_string())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let n = plans::sweep_expired_trials(ctx.db())?;
        let ending = plans::notify_trials_ending(ctx.db(), plans::TRIAL_ENDING_NOTICE)?;
        if ending > 0 {
            tracing::info!(tenants = ending, "trial.ending recorded");
        }
        if n > 0 {
            tracing::info!(moved = n, "expired trials moved to their fallback plans");
        }
        Ok(())
    }
}

/// Removes succeeded jobs and decided schedule runs older than a week
/// (dead jobs stay until an operator retries or they are looked at), and
/// delivered notifications older than 30 days and idempotency keys older
/// than a day.
#[derive(Debug, Serialize, Deserialize)]
pub struct PruneJobs {
    pub due: Option<NaiveDateTime>,
}

impl Job for PruneJobs {
    const KIND: &'static str = "jobs.prune";

    fn dedup_key(&self) -> Option<String> {
        self.due.map(|d| d.to_string())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let before = Utc::now().naive_utc() - ChronoDuration::days(KEEP_SUCCEEDED_DAYS);
        let n = prune_succeeded(ctx.db(), before)?;
        let runs = tenantplane_jobs::schedules::prune_runs(ctx.db(), before)?;
        let keys = tenantplane_control_db::idempotency::prune(ctx.db(), Utc::now().naive_utc())?;
        if keys > 0 {
            tracing::info!(keys, "old idempotency keys pruned");
        }
        let notify_before = Utc::now().naive_utc() - ChronoDuration::days(KEEP_NOTIFICATIONS_DAYS);
        let pruned = tenantplane_notify::deliveries::prune(ctx.db(), notify_before)?;
        if pruned.events + pruned.deliveries > 0 {
            tracing::info!(?pruned, "old notifications pruned");
        }
        if n + runs > 0 {
            tracing::info!(
                jobs = n,
                schedule_runs = runs,
                "old jobs and schedule runs pruned"
            );
        }
        Ok(())
    }
}

/// Marks backups interrupted by a crash `failed` and removes artifacts no
/// backup row references (`tenantplane_backup::sweep`).
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupSweep {
    #[serde(default)]
    pub due: Option<NaiveDateTime>,
}

impl Job for BackupSweep {
    const KIND: &'static str = "sweep.backups";

    fn dedup_key(&self) -> Option<String> {
        self.due.map(|d| d.to_string())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let Some(store) = tenantplane_backup::jobs::installed_store() else {
            // No store in this worker: nothing of ours to sweep.
            return Ok(());
        };
        let r = tenantplane_backup::sweep(
            ctx.db(),
            store.as_ref(),
            tenantplane_backup::SweepAges::DEFAULT,
        )?;
        tracing::info!(report = ?r, "backup sweep done");
        Ok(())
    }
}

/// The first multiple of `period` after `now` (since the epoch), so every
/// worker computes the same boundary and its enqueue dedups against theirs.
pub fn next_boundary(now: NaiveDateTime, period: std::time::Duration) -> NaiveDateTime {
    let period_ms = (period.as_millis() as i64).max(1);
    let now_ms = now.and_utc().timestamp_millis();
    let next_ms = (now_ms / period_ms + 1) * period_ms;
    chrono::DateTime::from_timestamp_millis(next_ms)
        .map(|t| t.naive_utc())
        .unwrap_or(now)
}

/// Queues the housekeeping for the next period boundary (a no-op when
/// another worker already did).
pub fn enqueue_housekeeping(db: &ControlDb, period: std::time::Duration) -> Result<()> {
    let due = next_boundary(Utc::now().naive_utc(), period);
    // Pruning needs no 30-second cadence: once an hour is plenty.
    let hourly = next_boundary(Utc::now().naive_utc(), std::time::Duration::from_secs(3600));
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        enqueue_at(conn, &ProvisioningSweep { due: Some(due) }, due)?;
        enqueue_at(conn, &TrialSweep { due: Some(due) }, due)?;
        enqueue_at(conn, &PruneJobs { due: Some(hourly) }, hourly)?;
        enqueue_at(conn, &BackupSweep { due: Some(hourly) }, hourly)?;
        enqueue_at(
            conn,
            &tenantplane_backup::export::ExpireExports { due: Some(hourly) },
            hourly,
        )?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("time")
    }

    #[test]
    fn sweeps_accept_a_schedule_fire_as_payload() {
        let fire = serde_json::json!({
            "schedule": "sweeps", "run_id": 7, "fire_at": "2026-11-29T15:00:00",
            "selector": null, "params": null
        });
        let job: ProvisioningSweep = serde_json::from_value(fire.clone()).expect("parses");
        assert_eq!(job.due, None);
        assert_eq!(job.dedup_key(), None);
        let job: TrialSweep = serde_json::from_value(fire).expect("parses");
        assert_eq!(job.due, None);
    }

    #[test]
    fn boundaries_are_shared_and_in_the_future() {
        let period = std::time::Duration::from_secs(30);
        let a = next_boundary(at("2026-11-29 15:00:01.000"), period);
        let b = next_boundary(at("2026-11-29 15:00:29.999"), period);
        assert_eq!(a, at("2026-11-29 15:00:30.000"));
        assert_eq!(a, b, "two workers in one period agree on the job");
        // Exactly on a boundary: the next one, never the present.
        assert_eq!(
            next_boundary(at("2026-11-29 15:00:30.000"), period),
            at("2026-11-29 15:01:00.000")
        );
    }
}
