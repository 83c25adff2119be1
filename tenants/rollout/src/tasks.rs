//! The worker's side of the control database: claiming tasks with leases,
//! heartbeats, recording outcomes, and moving rollouts through their waves.

use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use tenantplane_control_db::states::TaskState;
use tenantplane_fleet::tenant_run::Outcome;
use tenantplane_jobs::backoff::{backoff, lease_expiry};
use tenantplane_migrations::StepDirection;

use crate::rollouts::advance;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::Result;
use tenantplane_control_db::schema::{migration_runs, rollouts as rollouts_t, tasks, tenants};

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
}

/// The rollout settings a task runs under.
#[derive(Debug, Clone, Queryable)]
pub struct TaskPolicy {
    pub verify: bool,
    pub timeout_s: i32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
}

/// Candidates: a running rollout, a started wave, under the rollout's and the
/// server's concurrency. `{lock}` is `FOR UPDATE OF t SKIP LOCKED` on
/// PostgreSQL. `$1` worker, `$2` lease expiry, `$3` now.
const CLAIM: &str = "
UPDATE tasks SET state = 'running', lease_owner = $1, lease_expires_at = $2,
       attempts = attempts + 1, started_at = COALESCE(started_at, $3)
 WHERE id = (
   SELECT t.id FROM tasks t JOIN rollouts r ON r.id = t.rollout_id
    WHERE t.state = '{state}' AND {due}
      AND r.state = 'running' AND t.wave <= r.current_wave
      AND (SELECT count(*) FROM tasks x WHERE x.rollout_id = t.rollout_id AND x.state = 'running'
              AND x.lease_expires_at >= $3) < r.concurrency
      AND (SELECT count(*) FROM tasks x WHERE x.rollout_id = t.rollout_id AND x.server_id = t.server_id
              AND x.state = 'running' AND x.lease_expires_at >= $3) < r.per_server_concurrency
    ORDER BY t.priority DESC, t.id
    LIMIT 1 {lock})
RETURNING id, rollout_id, tenant_id, server_id, attempts, max_attempts, to_version";

/// Serialises claims on PostgreSQL so the concurrency counts cannot race.
const CLAIM_LOCK: i64 = 0x7465_6e61_6e74_0010;

/// When this process last looked for expired leases (ms since the epoch).
static EXPIRED_CHECKED_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Expired leases are looked for at most this often per process: leases run
/// for tens of seconds, and the search is a second full claim query that
/// would otherwise run before every claim and nearly always find nothing.
const EXPIRED_EVERY_MS: i64 = 1_000;

/// Claims the next runnable task: first a task whose lease expired (its
/// worker died; looked for at most once a second), then a pending one that
/// is due.
pub fn claim(
    db: &ControlDb,
    worker: &str,
    lease: Duration,
) -> Result<Option<(ClaimedTask, TaskPolicy)>> {
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    let expires = lease_expiry(now, lease);
    let now_ms = now.and_utc().timestamp_millis();
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
    let passes: &[(TaskState, &str)] = if look_for_expired {
        &[
            (TaskState::Running, "t.lease_expires_at < $3"),
            (TaskState::Pending, "t.next_attempt_at <= $3"),
        ]
    } else {
        &[(TaskState::Pending, "t.next_attempt_at <= $3")]
    };
    let claimed = write_tx(&mut conn, Some(CLAIM_LOCK), |conn| {
        for &(state, due) in passes {
            let sql = CLAIM
                .replace("{state}", state.as_str())
                .replace("{due}", due);
            let rows: Vec<ClaimedTask> = match conn {
                ControlConnection::Postgres(pg) => {
                    diesel::sql_query(sql.replace("{lock}", "FOR UPDATE OF t SKIP LOCKED"))
                        .bind::<Text, _>(worker)
                        .bind::<Timestamp, _>(expires)
                        .bind::<Timestamp, _>(now)
                        .load(pg)?
                }
                ControlConnection::Sqlite(lite) => {
                    diesel::sql_query(sql.replace("{lock}", "").replace('$', "?"))
                        .bind::<Text, _>(worker)
                        .bind::<Timestamp, _>(expires)
                        .bind::<Timestamp, _>(now)
                        .load(lite)?
                }
            };
            if let Some(task) = rows.into_iter().next() {
                return Ok(Some(task));
            }
        }
        Ok(None)
    })?;
    let Some(task) = claimed else { return Ok(None) };
    let policy: TaskPolicy = rollouts_t::table
        .find(&task.rollout_id)
        .select((
            rollouts_t::verify,
            rollouts_t::timeout_s,
            rollouts_t::backoff_base_ms,
            rollouts_t::backoff_max_ms,
        ))
        .first(&mut conn)?;
    Ok(Some((task, policy)))
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

/// Records the outcome of a task this worker holds. The tenant's
/// `schema_version` follows what the tenant database durably reached. Does
/// nothing if the lease was lost (another worker took the task over).
pub fn complete(
    db: &ControlDb,
    worker: &str,
    task: &ClaimedTask,
    policy: &TaskPolicy,
    outcome: &Outcome,
    duration: Duration,
) -> Result<bool> {
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    write_tx(&mut conn, None, |conn| {
        let ours = tasks::table
            .filter(tasks::id.eq(task.id))
            .filter(tasks::lease_owner.eq(worker))
            .filter(tasks::state.eq(TaskState::Running.as_str()));
        let still_ours: i64 = ours.count().get_result(conn)?;
        if still_ours == 0 {
            tracing::warn!(task_id = task.id, tenant_id = %task.tenant_id, "lease lost before completion; leaving the task to its new owner");
            return Ok(false);
        }
        if outcome.reached_known {
            let was: Option<String> = tenants::table
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
        // One multi-row insert (the MultiConnection has none, the backends do).
        let runs: Vec<_> = outcome
            .applied
            .iter()
            .map(|step| {
                (
                    migration_runs::tenant_id.eq(&task.tenant_id),
                    migration_runs::task_id.eq(Some(task.id)),
                    migration_runs::version.eq(&step.version),
                    migration_runs::direction.eq(match step.direction {
                        StepDirection::Up => "up",
                        StepDirection::Down => "down",
                    }),
                    migration_runs::worker.eq(worker),
                    migration_runs::ran_at.eq(now),
                )
            })
            .collect();
        if !runs.is_empty() {
            let insert = diesel::insert_into(migration_runs::table).values(&runs);
            match conn {
                ControlConnection::Sqlite(c) => insert.execute(c)?,
                ControlConnection::Postgres(c) => insert.execute(c)?,
            };
        }
        let ms = duration.as_millis() as i64;
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
                    ))
                    .execute(conn)?;
            }
            Some(err) if err.transient && task.attempts < task.max_attempts => {
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
                    ))
                    .execute(conn)?;
            }
        }
        advance(conn, &task.rollout_id)?;
        Ok(true)
    })
}
