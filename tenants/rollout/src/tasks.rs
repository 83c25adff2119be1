//! The worker's side of the control database: claiming tasks with leases,
//! heartbeats, recording outcomes, and moving rollouts through their waves.

use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_fleet::tenant_run::{Outcome, TaskError};
use tenantplane_jobs::backoff::{backoff, lease_expiry};
use tenantplane_migrations::StepDirection;

use crate::rollouts::advance;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::Result;
use tenantplane_control_db::schema::{
    migration_runs, rollouts as rollouts_t, task_attempts, tasks, tenants,
};

/// A task a worker holds the lease of, with what it needs to run it.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedTask {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub rollout_id: String,
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    #[diesel(sql_type = Text)]
    pub server_id: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub to_version: Option<String>,
    /// The pre-migration backup an earlier attempt of this task took.
    #[diesel(sql_type = Nullable<Text>)]
    pub backup_id: Option<String>,
}

/// The rollout settings a task runs under.
#[derive(Debug, Clone, Queryable)]
pub struct TaskPolicy {
    pub verify: bool,
    pub timeout_s: i32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    /// Back the tenant up just before migrating it.
    pub backup: bool,
    /// Restore the tenant from that backup when its migration fails for good.
    pub restore_on_failure: bool,
    /// Migrate the tenant even if its schema drifted.
    pub allow_drift: bool,
}

/// Takes the next pending, due task of one rollout whose wave has started
/// (`$4` rollout, `$5` its current wave), on a server that is not full
/// (`{servers}`: `AND t.server_id NOT IN (…)` or nothing). `{lock}` is `FOR
/// UPDATE OF t SKIP LOCKED` on PostgreSQL. `$1` worker, `$2` lease expiry,
/// `$3` now. One rollout at a time, with the caps decided beforehand:
/// evaluated per candidate inside the query, PostgreSQL's planner
/// (expecting few rows to pass the caps) scanned and sorted every pending
/// task — 1.8 s per claim at 100,000 — instead of walking the index.
/// `{indexed}` is `INDEXED BY tasks_claim_idx` on SQLite, whose planner
/// otherwise takes the rollout's index and sorts its pending tasks (~0.1 s
/// per claim at 100,000); walking the claim index in order stops at the
/// first due task.
const CLAIM: &str = "
UPDATE tasks SET state = 'running', lease_owner = $1, lease_expires_at = $2,
       attempts = attempts + 1, started_at = COALESCE(started_at, $3)
 WHERE id = (
   SELECT t.id FROM tasks t {indexed}
    WHERE t.state = 'pending' AND t.rollout_id = $4 AND t.wave <= $5
      AND t.next_attempt_at <= $3 {servers}
    ORDER BY t.priority DESC, t.id
    LIMIT 1 {lock})
RETURNING id, rollout_id, tenant_id, server_id, attempts, max_attempts, to_version, backup_id";

/// Serialises claims on PostgreSQL so the concurrency counts cannot race.
const CLAIM_LOCK: i64 = 0x7465_6e61_6e74_0010;

/// When this process last looked for expired leases (ms since the epoch).
static EXPIRED_CHECKED_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Expired leases are looked for at most this often per process: leases run
/// for tens of seconds, and the search would otherwise run before every
/// claim and nearly always find nothing.
const EXPIRED_EVERY_MS: i64 = 1_000;

/// Hands every task whose lease expired (its worker died) back to
/// `pending`, due now, in one statement: a dead worker's tasks are all
/// claimable at once, not one per look. `$1` now.
const RECLAIM: &str = "
UPDATE tasks SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL,
       next_attempt_at = $1,
       last_error = 'lease of worker ' || COALESCE(lease_owner, '?') || ' expired'
 WHERE state = 'running' AND lease_expires_at < $1";

/// Claims the next runnable task that is due. At most once a second per
/// process it first hands back all tasks of dead workers (expired leases).
pub fn claim(
    db: &ControlDb,
    worker: &str,
    lease: Duration,
) -> Result<Option<(ClaimedTask, TaskPolicy)>> {
    let mut conn = db.conn()?;
    let now_ms = Utc::now().timestamp_millis();
    let last = EXPIRED_CHECKED_MS.load(std::sync::atomic::Ordering::Relaxed);
    let look_for_expired = now_ms - last >= EXPIRED_EVERY_MS
        && EXPIRED_CHECKED_MS
            .compare_exchange(
                last,
                now_ms,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok();
    let claimed = write_tx(&mut conn, Some(CLAIM_LOCK), |conn| {
        // The clock is read under the lock: a claim that waited for it
        // behind the completion that opened this task's wave starts after
        // that completion finished, not before.
        let now = Utc::now().naive_utc();
        let expires = lease_expiry(now, lease);
        if look_for_expired {
            let reclaimed = match conn {
                ControlConnection::Postgres(pg) => diesel::sql_query(RECLAIM)
                    .bind::<Timestamp, _>(now)
                    .execute(pg)?,
                ControlConnection::Sqlite(lite) => diesel::sql_query(RECLAIM.replace('$', "?"))
                    .bind::<Timestamp, _>(now)
                    .execute(lite)?,
            };
            if reclaimed > 0 {
                tracing::warn!(
                    reclaimed,
                    "tasks of dead workers handed back (their leases expired)"
                );
            }
        }
        claim_next(conn, worker, expires, now)
    })?;
    let Some(task) = claimed else { return Ok(None) };
    let policy: TaskPolicy = rollouts_t::table
        .find(&task.rollout_id)
        .select((
            rollouts_t::verify,
            rollouts_t::timeout_s,
            rollouts_t::backoff_base_ms,
            rollouts_t::backoff_max_ms,
            rollouts_t::backup,
            rollouts_t::restore_on_failure,
            rollouts_t::allow_drift,
        ))
        .first(&mut conn)?;
    Ok(Some((task, policy)))
}

/// A running rollout as the claim sees it.
type OpenRollout = (String, i32, i32, i32);

/// Picks the next task under the caps: rollouts by priority (then age), each
/// under its concurrency, its candidates on servers under the per-server
/// concurrency. Inside the claim's transaction.
fn claim_next(
    conn: &mut ControlConnection,
    worker: &str,
    expires: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<Option<ClaimedTask>> {
    let open: Vec<OpenRollout> = rollouts_t::table
        .filter(rollouts_t::state.eq(RolloutState::Running.as_str()))
        .order((rollouts_t::priority.desc(), rollouts_t::created_at.asc()))
        .select((
            rollouts_t::id,
            rollouts_t::current_wave,
            rollouts_t::concurrency,
            rollouts_t::per_server_concurrency,
        ))
        .load(conn)?;
    if open.is_empty() {
        return Ok(None);
    }
    // Live leases per (rollout, server): at most the sum of the caps.
    let running: Vec<(String, String, i64)> = tasks::table
        .filter(tasks::state.eq(TaskState::Running.as_str()))
        .filter(tasks::lease_expires_at.ge(now))
        .group_by((tasks::rollout_id, tasks::server_id))
        .select((
            tasks::rollout_id,
            tasks::server_id,
            diesel::dsl::count_star(),
        ))
        .load(conn)?;
    for (rollout_id, wave, concurrency, per_server) in open {
        let mine = running.iter().filter(|(r, _, _)| *r == rollout_id);
        if mine.clone().map(|(_, _, n)| n).sum::<i64>() >= i64::from(concurrency) {
            continue;
        }
        let full: Vec<&str> = mine
            .filter(|(_, _, n)| *n >= i64::from(per_server))
            .map(|(_, server, _)| server.as_str())
            .collect();
        // Server ids are uuids (no quote can occur); bound one by one all
        // the same would need a dynamic number of binds.
        let servers = if full.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = full
                .iter()
                .map(|id| format!("'{}'", id.replace('\'', "''")))
                .collect();
            format!("AND t.server_id NOT IN ({})", list.join(", "))
        };
        let sql = CLAIM.replace("{servers}", &servers);
        let rows: Vec<ClaimedTask> = match conn {
            ControlConnection::Postgres(pg) => diesel::sql_query(
                sql.replace("{lock}", "FOR UPDATE OF t SKIP LOCKED")
                    .replace("{indexed}", ""),
            )
            .bind::<Text, _>(worker)
            .bind::<Timestamp, _>(expires)
            .bind::<Timestamp, _>(now)
            .bind::<Text, _>(&rollout_id)
            .bind::<Integer, _>(wave)
            .load(pg)?,
            ControlConnection::Sqlite(lite) => diesel::sql_query(
                sql.replace("{lock}", "")
                    .replace("{indexed}", "INDEXED BY tasks_claim_idx")
                    .replace('$', "?"),
            )
            .bind::<Text, _>(worker)
            .bind::<Timestamp, _>(expires)
            .bind::<Timestamp, _>(now)
            .bind::<Text, _>(&rollout_id)
            .bind::<Integer, _>(wave)
            .load(lite)?,
        };
        if let Some(task) = rows.into_iter().next() {
            return Ok(Some(task));
        }
    }
    Ok(None)
}

/// Extends the leases of the tasks this worker is running.
pub fn heartbeat(db: &ControlDb, worker: &str, ids: &[i64], lease: Duration) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let expires = lease_expiry(Utc::now().naive_utc(), lease);
    let mut conn = db.conn()?;
    Ok(diesel::update(
        tasks::table
            .filter(tasks::id.eq_any(ids))
            .filter(tasks::lease_owner.eq(worker))
            .filter(tasks::state.eq(TaskState::Running.as_str())),
    )
    .set(tasks::lease_expires_at.eq(expires))
    .execute(&mut conn)?)
}

/// Hands back tasks this worker holds but will not finish (it is shutting
/// down): `pending`, due now, unowned, the attempt not counted, so another
/// worker claims them at once instead of after the lease. A tenant run
/// still in progress here cannot collide with the next one: the tenant's
/// lock serialises them, and the run whose process exits never commits.
/// Returns how many were handed back (a task whose lease was already lost is
/// not ours to hand back).
pub fn release(db: &ControlDb, worker: &str, ids: &[i64]) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut conn = db.conn()?;
    Ok(diesel::update(
        tasks::table
            .filter(tasks::id.eq_any(ids))
            .filter(tasks::lease_owner.eq(worker))
            .filter(tasks::state.eq(TaskState::Running.as_str())),
    )
    .set((
        tasks::state.eq(TaskState::Pending.as_str()),
        tasks::lease_owner.eq(None::<String>),
        tasks::lease_expires_at.eq(None::<NaiveDateTime>),
        tasks::next_attempt_at.eq(Utc::now().naive_utc()),
        tasks::attempts.eq(tasks::attempts - 1),
    ))
    .execute(&mut conn)?)
}

/// Whether a failed attempt goes back to `pending` (transient, attempts
/// left) rather than failing the task.
fn retried(task: &ClaimedTask, err: &TaskError) -> bool {
    err.transient && task.attempts < task.max_attempts
}

/// Whether `complete` makes this outcome a failed task: a permanent error,
/// or a transient one on the last attempt.
pub fn fails_for_good(task: &ClaimedTask, outcome: &Outcome) -> bool {
    outcome.error.as_ref().is_some_and(|e| !retried(task, e))
}

/// Writes the steps of an attempt to `migration_runs`: first those it found
/// applied but unrecorded (marked `recovered`, at their `run_on`), then
/// those it applied. `was` is the version the control DB had recorded; only
/// recovered steps beyond it are written, so nothing is recorded twice. One
/// multi-row insert (the MultiConnection has none, the backends do).
fn record_runs(
    conn: &mut ControlConnection,
    worker: &str,
    task: &ClaimedTask,
    outcome: &Outcome,
    was: Option<&str>,
    now: NaiveDateTime,
) -> Result<()> {
    let direction = |d: StepDirection| match d {
        StepDirection::Up => "up",
        StepDirection::Down => "down",
    };
    let recovered = outcome.recovered.iter().filter(|r| match r.direction {
        StepDirection::Up => Some(r.version.as_str()) > was,
        StepDirection::Down => Some(r.version.as_str()) <= was,
    });
    let runs: Vec<_> = recovered
        .map(|r| {
            (
                &r.version,
                direction(r.direction),
                r.ran_at.unwrap_or(now),
                true,
            )
        })
        .chain(
            outcome
                .applied
                .iter()
                .map(|step| (&step.version, direction(step.direction), now, false)),
        )
        .map(|(version, direction, ran_at, recovered)| {
            (
                migration_runs::tenant_id.eq(&task.tenant_id),
                migration_runs::task_id.eq(Some(task.id)),
                migration_runs::version.eq(version),
                migration_runs::direction.eq(direction),
                migration_runs::worker.eq(worker),
                migration_runs::ran_at.eq(ran_at),
                migration_runs::recovered.eq(recovered),
            )
        })
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    if !outcome.recovered.is_empty() {
        tracing::warn!(
            tenant_id = %task.tenant_id,
            steps = outcome.recovered.len(),
            "recording steps an earlier attempt applied but never recorded"
        );
    }
    let insert = diesel::insert_into(migration_runs::table).values(&runs);
    match conn {
        ControlConnection::Sqlite(c) => insert.execute(c)?,
        ControlConnection::Postgres(c) => insert.execute(c)?,
    };
    Ok(())
}

/// One row in `task_attempts` for this attempt: its outcome, error and
/// duration, kept after the task's own columns move on to the next attempt.
fn record_attempt(
    conn: &mut ControlConnection,
    worker: &str,
    task: &ClaimedTask,
    outcome: &Outcome,
    now: NaiveDateTime,
    ms: i64,
) -> Result<()> {
    let result = match &outcome.error {
        None => "succeeded",
        Some(err) if retried(task, err) => "retry",
        Some(_) => "failed",
    };
    let started = now - chrono::Duration::milliseconds(ms);
    diesel::insert_into(task_attempts::table)
        .values((
            task_attempts::task_id.eq(task.id),
            task_attempts::attempt.eq(task.attempts),
            task_attempts::worker.eq(worker),
            task_attempts::outcome.eq(result),
            task_attempts::error.eq(outcome.error.as_ref().map(|e| e.message.as_str())),
            task_attempts::error_version
                .eq(outcome.error.as_ref().and_then(|e| e.version.as_deref())),
            task_attempts::reached_version.eq(outcome.reached.as_deref()),
            task_attempts::started_at.eq(started),
            task_attempts::finished_at.eq(now),
            task_attempts::duration_ms.eq(ms),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records the outcome of a task this worker holds. The tenant's
/// `schema_version` follows what the tenant database durably reached.
/// `backup_id` is the pre-migration backup this attempt took or reused
/// (`None` keeps what an earlier attempt recorded); it is written with the
/// outcome, and a task going back to `pending` keeps it for its next
/// attempt. Does nothing if the lease was lost (another worker took the
/// task over).
pub fn complete(
    db: &ControlDb,
    worker: &str,
    task: &ClaimedTask,
    policy: &TaskPolicy,
    outcome: &Outcome,
    backup_id: Option<&str>,
    duration: Duration,
) -> Result<bool> {
    let backup_id = backup_id.or(task.backup_id.as_deref());
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        // Read under the write lock, like the claim's (see there).
        let now = Utc::now().naive_utc();
        let ours = tasks::table
            .filter(tasks::id.eq(task.id))
            .filter(tasks::lease_owner.eq(worker))
            .filter(tasks::state.eq(TaskState::Running.as_str()));
        let still_ours: i64 = ours.count().get_result(conn)?;
        if still_ours == 0 {
            tracing::warn!(task_id = task.id, tenant_id = %task.tenant_id, "lease lost before completion; leaving the task to its new owner");
            return Ok(false);
        }
        let mut was: Option<String> = None;
        if outcome.reached_known {
            was = tenants::table
                .find(&task.tenant_id)
                .select(tenants::schema_version)
                .first(conn)?;
            if was != outcome.reached {
                diesel::update(tenants::table.find(&task.tenant_id))
                    .set((
                        tenants::schema_version.eq(outcome.reached.as_deref()),
                        tenants::updated_at.eq(now),
                    ))
                    .execute(conn)?;
                // Feature evaluation depends on the schema version.
                tenantplane_control_db::changes::bump(conn)?;
            }
        }
        record_runs(conn, worker, task, outcome, was.as_deref(), now)?;
        let ms = duration.as_millis() as i64;
        record_attempt(conn, worker, task, outcome, now, ms)?;
        match &outcome.error {
            None => {
                diesel::update(tasks::table.find(task.id))
                    .set((
                        tasks::state.eq(TaskState::Succeeded.as_str()),
                        tasks::reached_version.eq(outcome.reached.as_deref()),
                        tasks::finished_at.eq(Some(now)),
                        tasks::duration_ms.eq(Some(ms)),
                        tasks::lease_owner.eq(None::<String>),
                        tasks::lease_expires_at.eq(None::<NaiveDateTime>),
                        tasks::last_error.eq(None::<String>),
                        tasks::error_version.eq(None::<String>),
                        tasks::backup_id.eq(backup_id),
                    ))
                    .execute(conn)?;
            }
            Some(err) if retried(task, err) => {
                let delay = backoff(task.attempts, policy.backoff_base_ms, policy.backoff_max_ms);
                let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                diesel::update(tasks::table.find(task.id))
                    .set((
                        tasks::state.eq(TaskState::Pending.as_str()),
                        tasks::next_attempt_at.eq(next),
                        tasks::reached_version.eq(outcome.reached.as_deref()),
                        tasks::lease_owner.eq(None::<String>),
                        tasks::lease_expires_at.eq(None::<NaiveDateTime>),
                        tasks::last_error.eq(Some(&err.message)),
                        tasks::error_version.eq(err.version.as_deref()),
                        tasks::backup_id.eq(backup_id),
                    ))
                    .execute(conn)?;
            }
            Some(err) => {
                diesel::update(tasks::table.find(task.id))
                    .set((
                        tasks::state.eq(TaskState::Failed.as_str()),
                        tasks::reached_version.eq(outcome.reached.as_deref()),
                        tasks::finished_at.eq(Some(now)),
                        tasks::duration_ms.eq(Some(ms)),
                        tasks::lease_owner.eq(None::<String>),
                        tasks::lease_expires_at.eq(None::<NaiveDateTime>),
                        tasks::last_error.eq(Some(&err.message)),
                        tasks::error_version.eq(err.version.as_deref()),
                        tasks::backup_id.eq(backup_id),
                    ))
                    .execute(conn)?;
            }
        }
        advance(conn, &task.rollout_id)?;
        Ok(true)
    })
}

/// Why restoring a failed task's pre-migration backup (taken at `taken`, of
/// the tenant at `backup_version`) would be wrong, if it would: another task
/// (or process) migrated the tenant since the backup began, so restoring it
/// would undo their work too; or the tenant is still at the backup's version
/// (the failed runs committed nothing, each step being all or nothing), so
/// a restore would only throw away what the tenant wrote since. Read after
/// `complete`, so the tenant's `schema_version` is what the run reached.
pub fn restore_unneeded(
    db: &ControlDb,
    task: &ClaimedTask,
    backup_version: Option<&str>,
    taken: NaiveDateTime,
) -> Result<Option<String>> {
    let mut conn = db.conn()?;
    let other: Option<Option<i64>> = migration_runs::table
        .filter(migration_runs::tenant_id.eq(&task.tenant_id))
        .filter(migration_runs::ran_at.ge(taken))
        .filter(
            migration_runs::task_id
                .is_null()
                .or(migration_runs::task_id.ne(task.id)),
        )
        .select(migration_runs::task_id)
        .first(&mut conn)
        .optional()?;
    if let Some(other) = other {
        let by = other.map_or_else(|| "another process".to_string(), |t| format!("task {t}"));
        return Ok(Some(format!(
            "{by} migrated the tenant after the backup was taken; restoring it would undo that too"
        )));
    }
    let now: Option<String> = tenants::table
        .find(&task.tenant_id)
        .select(tenants::schema_version)
        .first(&mut conn)?;
    if now.as_deref() == backup_version {
        return Ok(Some(format!(
            "nothing to undo: the tenant is still at the backup's version {}",
            backup_version.unwrap_or("(empty)")
        )));
    }
    Ok(None)
}

/// What became of the restore a failed task's rollout asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreNote {
    /// The tenant was restored in place from the task's backup.
    Restored,
    /// Not restored, and why (appended to `last_error`).
    NotRestored(String),
}

/// Records on a failed task what became of its restore. A separate write
/// after `complete`: a restore in place refuses tenants a task is migrating,
/// so it runs once the task is `failed`. Does nothing if the task changed
/// meanwhile (an operator's retry made it `pending` with no backup).
pub fn record_restore(
    db: &ControlDb,
    task_id: i64,
    backup_id: &str,
    note: &RestoreNote,
) -> Result<bool> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let ours = || {
            tasks::table
                .filter(tasks::id.eq(task_id))
                .filter(tasks::state.eq(TaskState::Failed.as_str()))
                .filter(tasks::backup_id.eq(backup_id))
        };
        let n = match note {
            RestoreNote::Restored => diesel::update(ours())
                .set(tasks::restored.eq(true))
                .execute(conn)?,
            RestoreNote::NotRestored(why) => {
                let last: Option<Option<String>> =
                    ours().select(tasks::last_error).first(conn).optional()?;
                let Some(last) = last else { return Ok(false) };
                let text = match last {
                    Some(e) => format!("{e}\nnot restored from backup {backup_id}: {why}"),
                    None => format!("not restored from backup {backup_id}: {why}"),
                };
                diesel::update(ours())
                    .set(tasks::last_error.eq(Some(text)))
                    .execute(conn)?
            }
        };
        Ok(n > 0)
    })
}
