//! The `jobs` table: enqueueing (inside the caller's transaction), claims
//! with leases, heartbeats, outcomes, and the operator's reads and retries.
//!
//! A job belongs to the worker that holds its lease: `complete` and `fail`
//! act only while `lease_owner` is still the caller, so a worker that stalled
//! past its lease cannot overwrite what the worker that took the job over
//! recorded.

use std::time::Duration;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Integer, Text, Timestamp};
use tenantplane_control_db::error::{report, DbError, Error, Result};
use tenantplane_control_db::schema::jobs;
use tenantplane_control_db::states::JobState;
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb};

use crate::backoff::{backoff, lease_expiry};
use crate::job::{BackoffPolicy, Job, JobError};

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new row with this id.
    New(i64),
    /// A job of the same kind and dedup key was already pending or running:
    /// nothing was written; this is its id.
    Existing(i64),
}

impl Enqueued {
    pub fn id(self) -> i64 {
        match self {
            Enqueued::New(id) | Enqueued::Existing(id) => id,
        }
    }

    pub fn is_new(self) -> bool {
        matches!(self, Enqueued::New(_))
    }
}

#[derive(Insertable)]
#[diesel(table_name = jobs)]
struct NewJob<'a> {
    kind: &'a str,
    payload: &'a str,
    dedup_key: Option<&'a str>,
    state: &'a str,
    attempts: i32,
    max_attempts: i32,
    run_at: NaiveDateTime,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// Queues `job` to run as soon as a worker is free. Takes a connection so it
/// can join the caller's transaction: the job is written (or not) together
/// with the change that causes it.
pub fn enqueue<J: Job>(conn: &mut ControlConnection, job: &J) -> Result<Enqueued> {
    enqueue_at(conn, job, Utc::now().naive_utc())
}

/// Queues `job` to run at `run_at` (UTC) or later.
///
/// With a dedup key, a job of the same kind and key that is pending or
/// running makes this a no-op returning that job's id. The insert is
/// `ON CONFLICT DO NOTHING` rather than a caught unique violation because on
/// PostgreSQL a failed statement aborts the caller's whole transaction.
pub fn enqueue_at<J: Job>(
    conn: &mut ControlConnection,
    job: &J,
    run_at: NaiveDateTime,
) -> Result<Enqueued> {
    enqueue_job(conn, job, run_at, IfRunning::Join)
}

/// Queues `job` like [`enqueue`], except that a job of the same kind and
/// key that is *running* now does not satisfy the request: it is marked to
/// run once more when it ends (pending again, attempts from 0). For a
/// request made because of what that run already did, such as an operator
/// retrying a delivery whose job has recorded it dead but not yet ended:
/// joining the running job would lose the retry.
pub fn enqueue_again<J: Job>(conn: &mut ControlConnection, job: &J) -> Result<Enqueued> {
    enqueue_job(conn, job, Utc::now().naive_utc(), IfRunning::Rerun)
}

/// What a request does when the open job of its key is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfRunning {
    /// The running job satisfies it.
    Join,
    /// The running job runs again after it ends.
    Rerun,
}

fn enqueue_job<J: Job>(
    conn: &mut ControlConnection,
    job: &J,
    run_at: NaiveDateTime,
    if_running: IfRunning,
) -> Result<Enqueued> {
    // A derived `Serialize` only fails on values JSON cannot hold (maps with
    // non-string keys): a bug in the job type, reported with serde's words.
    let payload = serde_json::to_string(job)
        .map_err(|e| Error::invalid(format!("job {}: payload is not JSON: {e}", J::KIND)))?;
    let key = job.dedup_key();
    let row = Queued {
        kind: J::KIND,
        payload: &payload,
        key: key.as_deref(),
        max_attempts: J::MAX_ATTEMPTS,
        run_at,
    };
    insert_open(conn, &row, if_running)
}

/// [`enqueue_at`] for a kind named at run time (a schedule's job) with its
/// payload already JSON.
pub(crate) fn enqueue_raw(
    conn: &mut ControlConnection,
    kind: &str,
    payload: &str,
    key: Option<&str>,
    max_attempts: i32,
    run_at: NaiveDateTime,
) -> Result<Enqueued> {
    let row = Queued {
        kind,
        payload,
        key,
        max_attempts,
        run_at,
    };
    insert_open(conn, &row, IfRunning::Join)
}

/// A job to queue, its payload already JSON.
struct Queued<'a> {
    kind: &'a str,
    payload: &'a str,
    key: Option<&'a str>,
    max_attempts: i32,
    run_at: NaiveDateTime,
}

fn insert_open(
    conn: &mut ControlConnection,
    queued: &Queued<'_>,
    if_running: IfRunning,
) -> Result<Enqueued> {
    let Queued {
        kind,
        payload,
        key,
        max_attempts,
        run_at,
    } = *queued;
    // PostgreSQL keeps microseconds: store the same instant on both backends.
    let run_at = run_at.trunc_subsecs(6);
    let now = Utc::now().naive_utc();
    let row = NewJob {
        kind,
        payload,
        dedup_key: key,
        state: JobState::Pending.as_str(),
        attempts: 0,
        max_attempts: max_attempts.max(1),
        run_at,
        created_at: now,
        updated_at: now,
    };
    // The open job that blocked the insert can finish before we look it up;
    // then the key is free and the insert is tried again.
    for _ in 0..3 {
        let insert = diesel::insert_into(jobs::table)
            .values(&row)
            .on_conflict_do_nothing()
            .returning(jobs::id);
        let inserted: Option<i64> = match conn {
            ControlConnection::Postgres(c) => insert.get_result(c).optional()?,
            ControlConnection::Sqlite(c) => insert.get_result(c).optional()?,
        };
        if let Some(id) = inserted {
            tracing::debug!(job_id = id, kind, %run_at, "job queued");
            return Ok(Enqueued::New(id));
        }
        let Some(key) = key else {
            return Err(Error::control(
                format!("queueing a {kind} job"),
                DbError::State("the insert wrote no row and no dedup key explains it".into()),
            ));
        };
        let Some((id, running)) = open_job(conn, kind, key)? else {
            continue;
        };
        if if_running == IfRunning::Rerun && running {
            // Marked only while still running: a job that ended since has
            // freed the key (try the insert again) or was retried to pending
            // (it runs anew anyway), and `end_rerun` cannot miss the mark,
            // which it reads under the row lock of the job's last update.
            let marked = diesel::update(
                jobs::table
                    .filter(jobs::id.eq(id))
                    .filter(jobs::state.eq(JobState::Running.as_str())),
            )
            .set(jobs::rerun.eq(true))
            .execute(conn)?;
            if marked == 0 {
                continue;
            }
            tracing::debug!(
                job_id = id,
                kind,
                dedup_key = key,
                "running job will run again"
            );
        } else {
            tracing::debug!(job_id = id, kind, dedup_key = key, "job already queued");
        }
        return Ok(Enqueued::Existing(id));
    }
    Err(Error::Conflict(format!(
        "job {kind} with dedup key {key:?}: the open job kept changing; try again"
    )))
}

/// States in which a job holds its dedup key (the partial unique index).
const OPEN: [&str; 2] = [JobState::Pending.as_str(), JobState::Running.as_str()];

/// The open (pending or running) job of `kind` with dedup key `key`: its id
/// and whether it is running.
pub fn open_job(
    conn: &mut ControlConnection,
    kind: &str,
    key: &str,
) -> Result<Option<(i64, bool)>> {
    let open: Option<(i64, String)> = jobs::table
        .filter(jobs::kind.eq(kind))
        .filter(jobs::dedup_key.eq(key))
        .filter(jobs::state.eq_any(OPEN))
        .select((jobs::id, jobs::state))
        .first(conn)
        .optional()?;
    Ok(open.map(|(id, state)| (id, state == JobState::Running.as_str())))
}

/// A job a worker holds the lease of.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedJob {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// This attempt's number, from 1.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
}

/// `$1` worker, `$2` lease expiry, `$3` now, `$4…` the kinds. `{lock}` is
/// `FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent claims pass over
/// each other's rows instead of queueing behind them; SQLite needs nothing,
/// `write_tx` holds its write lock.
const CLAIM: &str = "
UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2,
       attempts = attempts + 1, updated_at = $3{note}
 WHERE id = (
   SELECT id FROM jobs
    WHERE {due} AND kind IN ({kinds})
    ORDER BY {order}
    LIMIT 1 {lock})
RETURNING id, kind, payload, attempts, max_attempts";

/// A running job whose lease ran out on its last attempt: its worker died
/// (or the job kills whoever runs it), so it is given up instead of being
/// claimed again. `$1` now.
const BURY: &str = "
UPDATE jobs SET state = 'dead', finished_at = $1, updated_at = $1,
       last_error = 'lease of worker ' || lease_owner || ' expired on the last attempt',
       lease_owner = NULL, lease_expires_at = NULL
 WHERE state = 'running' AND lease_expires_at < $1 AND attempts >= max_attempts
RETURNING id";

#[derive(QueryableByName)]
struct JobId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The claim's passes, in order: a job whose worker died first (its lease
/// expired; the old owner is named in `last_error`), then the next due one.
/// Both walk `jobs_claim_idx`, the first only over running jobs, which are
/// as many as the workers hold, so looking before every claim is cheap.
const PASSES: [(&str, &str, &str); 2] = [
    (
        "state = 'running' AND lease_expires_at < $3 AND attempts < max_attempts",
        "lease_expires_at, id",
        ", last_error = 'lease of worker ' || lease_owner || ' expired'",
    ),
    ("state = 'pending' AND run_at <= $3", "run_at, id", ""),
];

/// Claims the next job of one of `kinds` for `worker` for `lease`: first a
/// job whose lease expired, then the pending job that has been due longest.
/// Only kinds the caller can run are claimed; with none, nothing is.
pub fn claim(
    db: &ControlDb,
    worker: &str,
    lease: Duration,
    kinds: &[&str],
) -> Result<Option<ClaimedJob>> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    let expires = lease_expiry(now, lease);
    let placeholders: Vec<String> = (4..4 + kinds.len()).map(|n| format!("${n}")).collect();
    let placeholders = placeholders.join(", ");
    write_tx(&mut conn, None, |conn| {
        let buried: Vec<JobId> = match conn {
            ControlConnection::Postgres(pg) => {
                diesel::sql_query(BURY).bind::<Timestamp, _>(now).load(pg)?
            }
            ControlConnection::Sqlite(lite) => diesel::sql_query(BURY.replace('$', "?"))
                .bind::<Timestamp, _>(now)
                .load(lite)?,
        };
        if !buried.is_empty() {
            tracing::warn!(
                jobs = buried.len(),
                "jobs dead: their lease expired on the last attempt"
            );
            let ids: Vec<i64> = buried.iter().map(|j| j.id).collect();
            end_rerun(conn, &ids, now)?;
        }
        for (due, order, note) in PASSES {
            let sql = CLAIM
                .replace("{due}", due)
                .replace("{order}", order)
                .replace("{note}", note)
                .replace("{kinds}", &placeholders);
            let rows: Vec<ClaimedJob> = match conn {
                ControlConnection::Postgres(pg) => claim_query(
                    &sql.replace("{lock}", "FOR UPDATE SKIP LOCKED"),
                    worker,
                    expires,
                    now,
                    kinds,
                )
                .load(pg)?,
                ControlConnection::Sqlite(lite) => claim_query(
                    &sql.replace("{lock}", "").replace('$', "?"),
                    worker,
                    expires,
                    now,
                    kinds,
                )
                .load(lite)?,
            };
            if let Some(job) = rows.into_iter().next() {
                return Ok(Some(job));
            }
        }
        Ok(None)
    })
}

/// The claim statement with its parameters bound, for either backend.
fn claim_query<'a, DB>(
    sql: &str,
    worker: &'a str,
    expires: NaiveDateTime,
    now: NaiveDateTime,
    kinds: &'a [&'a str],
) -> BoxedSqlQuery<'a, DB, SqlQuery>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    str: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    let mut query = diesel::sql_query(sql)
        .into_boxed::<DB>()
        .bind::<Text, _>(worker)
        .bind::<Timestamp, _>(expires)
        .bind::<Timestamp, _>(now);
    for kind in kinds {
        query = query.bind::<Text, _>(*kind);
    }
    query
}

/// Extends the leases of the jobs `worker` is running; returns how many it
/// still holds.
pub fn heartbeat(db: &ControlDb, worker: &str, ids: &[i64], lease: Duration) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let now = Utc::now().naive_utc();
    let mut conn = db.conn()?;
    Ok(diesel::update(
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::lease_owner.eq(worker))
            .filter(jobs::state.eq(JobState::Running.as_str())),
    )
    .set((
        jobs::lease_expires_at.eq(lease_expiry(now, lease)),
        jobs::updated_at.eq(now),
    ))
    .execute(&mut conn)?)
}

/// Moves a job that has not started yet to `run_at`. A guard job whose
/// owner is alive keeps it in the future this way (see the restore guard in
/// the backup crate). `false`: the job already started or is gone.
pub fn postpone(conn: &mut ControlConnection, id: i64, run_at: NaiveDateTime) -> Result<bool> {
    let n = diesel::update(
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::state.eq(JobState::Pending.as_str())),
    )
    .set((
        jobs::run_at.eq(run_at.trunc_subsecs(6)),
        jobs::updated_at.eq(Utc::now().naive_utc()),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Deletes a job that has not started yet: the work it stood by for was
/// done by its owner (in the caller's transaction, with that work's
/// record). `false`: it already started or is gone.
pub fn withdraw(conn: &mut ControlConnection, id: i64) -> Result<bool> {
    let n = diesel::delete(
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::state.eq(JobState::Pending.as_str())),
    )
    .execute(conn)?;
    Ok(n == 1)
}

/// Hands back jobs this worker holds but will not finish (it is shutting
/// down): `pending`, due now, unowned, the attempt not counted, so another
/// worker claims them at once instead of after the lease. Jobs are
/// idempotent, so one still running here until the process exits does no
/// harm. Returns how many were handed back.
pub fn release(db: &ControlDb, worker: &str, ids: &[i64]) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let now = Utc::now().naive_utc();
    let mut conn = db.conn()?;
    Ok(diesel::update(
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::lease_owner.eq(worker))
            .filter(jobs::state.eq(JobState::Running.as_str())),
    )
    .set((
        jobs::state.eq(JobState::Pending.as_str()),
        jobs::rerun.eq(false),
        jobs::lease_owner.eq(None::<String>),
        jobs::lease_expires_at.eq(None::<NaiveDateTime>),
        jobs::run_at.eq(now.trunc_subsecs(6)),
        jobs::attempts.eq(jobs::attempts - 1),
        jobs::updated_at.eq(now),
    ))
    .execute(&mut conn)?)
}

/// Marks a job `worker` holds as succeeded. `false`: the lease was lost
/// (another worker took the job over) and nothing was written.
pub fn complete(db: &ControlDb, worker: &str, id: i64) -> Result<bool> {
    let mut conn = db.conn()?;
    let n = write_tx(&mut conn, None, |conn| {
        let now = Utc::now().naive_utc();
        let n = diesel::update(held(id, worker))
            .set((
                jobs::state.eq(JobState::Succeeded.as_str()),
                jobs::finished_at.eq(Some(now)),
                jobs::updated_at.eq(now),
                jobs::lease_owner.eq(None::<String>),
                jobs::lease_expires_at.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)?;
        if n == 1 {
            end_rerun(conn, &[id], now)?;
        }
        Ok(n)
    })?;
    if n == 0 {
        tracing::warn!(
            job_id = id,
            worker,
            "lease lost before completion; leaving the job to its new owner"
        );
    }
    Ok(n == 1)
}

/// Sends the jobs among `ids` that ended (succeeded or dead) with a rerun
/// requested ([`enqueue_again`]) back to pending, due now, attempts from 0.
/// Called in the transaction that ended them, after the update that did:
/// on PostgreSQL that update's row lock makes a concurrent `enqueue_again`
/// wait and then find the job no longer running, so a mark is either seen
/// here or never set.
fn end_rerun(conn: &mut ControlConnection, ids: &[i64], now: NaiveDateTime) -> Result<usize> {
    let ended = [JobState::Succeeded.as_str(), JobState::Dead.as_str()];
    let n = diesel::update(
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::rerun.eq(true))
            .filter(jobs::state.eq_any(ended)),
    )
    .set((
        jobs::state.eq(JobState::Pending.as_str()),
        jobs::rerun.eq(false),
        jobs::attempts.eq(0),
        jobs::run_at.eq(now.trunc_subsecs(6)),
        jobs::finished_at.eq(None::<NaiveDateTime>),
        jobs::updated_at.eq(now),
    ))
    .execute(conn)?;
    if n > 0 {
        tracing::info!(jobs = ?ids, "job asked to run again while running: pending again");
    }
    Ok(n)
}

/// The row of job `id` while `worker` holds its lease.
#[diesel::dsl::auto_type(no_type_alias)]
fn held<'a>(id: i64, worker: &'a str) -> _ {
    let running: &'static str = JobState::Running.as_str();
    jobs::table
        .filter(jobs::id.eq(id))
        .filter(jobs::lease_owner.eq(worker))
        .filter(jobs::state.eq(running))
}

/// What a failed attempt leads to: another attempt later (`Pending`) or
/// none (`Dead`). A permanent error is never retried; a transient one is
/// until the job's attempts are spent.
pub fn after_failure(attempts: i32, max_attempts: i32, permanent: bool) -> JobState {
    if permanent || attempts >= max_attempts.max(1) {
        JobState::Dead
    } else {
        JobState::Pending
    }
}

/// `last_error` holds at most this many bytes: an error chain can carry a
/// whole response body, and the operator view lists these rows.
pub const LAST_ERROR_MAX: usize = 8 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Records a failed attempt of a job `worker` holds: back to `pending` with
/// the next `run_at` after an exponential backoff with full jitter, or `dead`
/// when the error is permanent or the attempts are spent. The error's whole
/// chain is kept in `last_error`. Returns the state the job moved to; `None`
/// when the lease was lost and nothing was written.
pub fn fail(
    db: &ControlDb,
    worker: &str,
    id: i64,
    error: &JobError,
    policy: BackoffPolicy,
) -> Result<Option<JobState>> {
    let message = clip(&report(error), LAST_ERROR_MAX);
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let attempts: Option<(i32, i32)> = held(id, worker)
            .select((jobs::attempts, jobs::max_attempts))
            .first(conn)
            .optional()?;
        let Some((attempts, max_attempts)) = attempts else {
            tracing::warn!(
                job_id = id,
                worker,
                "lease lost before the failure was recorded; leaving the job to its new owner"
            );
            return Ok(None);
        };
        let now = Utc::now().naive_utc();
        let next = after_failure(attempts, max_attempts, error.is_permanent());
        // The update repeats the lease check: on PostgreSQL the read above
        // locks nothing, and an expired lease may have been claimed since.
        let n = match next {
            JobState::Dead => diesel::update(held(id, worker))
                .set((
                    jobs::state.eq(JobState::Dead.as_str()),
                    jobs::finished_at.eq(Some(now)),
                    jobs::updated_at.eq(now),
                    jobs::lease_owner.eq(None::<String>),
                    jobs::lease_expires_at.eq(None::<NaiveDateTime>),
                    jobs::last_error.eq(Some(&message)),
                ))
                .execute(conn)?,
            // Pending again anyway: the rerun asked for is this retry.
            _ => {
                let delay = error
                    .delay()
                    .unwrap_or_else(|| backoff(attempts, policy.base_ms, policy.max_ms));
                let run_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                diesel::update(held(id, worker))
                    .set((
                        jobs::state.eq(JobState::Pending.as_str()),
                        jobs::rerun.eq(false),
                        jobs::run_at.eq(run_at),
                        jobs::updated_at.eq(now),
                        jobs::lease_owner.eq(None::<String>),
                        jobs::lease_expires_at.eq(None::<NaiveDateTime>),
                        jobs::last_error.eq(Some(&message)),
                    ))
                    .execute(conn)?
            }
        };
        if n == 1 && next == JobState::Dead && end_rerun(conn, &[id], now)? == 1 {
            return Ok(Some(JobState::Pending));
        }
        Ok((n == 1).then_some(next))
    })
}

/// A job as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    /// The job's JSON.
    pub payload: String,
    pub dedup_key: Option<String>,
    pub state: JobState,
    /// Attempts started so far (a retried dead job counts from 0 again).
    pub attempts: i32,
    pub max_attempts: i32,
    /// When a pending job becomes due.
    pub run_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    /// The latest failed attempt's error chain; kept after a later success
    /// so jobs that needed retries stay visible.
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = jobs)]
struct JobRow {
    id: i64,
    kind: String,
    payload: String,
    dedup_key: Option<String>,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_at: NaiveDateTime,
    lease_owner: Option<String>,
    lease_expires_at: Option<NaiveDateTime>,
    last_error: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    finished_at: Option<NaiveDateTime>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = Error;

    fn try_from(r: JobRow) -> Result<Self> {
        let state = r.state.parse::<JobState>().map_err(|_| {
            Error::control(
                format!("reading job {}", r.id),
                DbError::State(format!("unknown job state {:?}", r.state)),
            )
        })?;
        Ok(JobRecord {
            id: r.id,
            kind: r.kind,
            payload: r.payload,
            dedup_key: r.dedup_key,
            state,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        })
    }
}

/// Which jobs `list` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    /// Only jobs with a smaller id: the next page after the last id seen.
    pub before_id: Option<i64>,
    /// Clamped to 1..=1000.
    pub limit: i64,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            state: None,
            kind: None,
            before_id: None,
            limit: 100,
        }
    }
}

/// Jobs matching `filter`, newest first.
pub fn list(db: &ControlDb, filter: &JobFilter) -> Result<Vec<JobRecord>> {
    let mut conn = db.conn()?;
    let mut query = jobs::table
        .select(JobRow::as_select())
        .order(jobs::id.desc())
        .limit(filter.limit.clamp(1, 1000))
        .into_boxed();
    if let Some(state) = filter.state {
        query = query.filter(jobs::state.eq(state.as_str()));
    }
    if let Some(kind) = &filter.kind {
        query = query.filter(jobs::kind.eq(kind.clone()));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(jobs::id.lt(before));
    }
    let rows: Vec<JobRow> = query.load(&mut conn)?;
    rows.into_iter().map(JobRecord::try_from).collect()
}

/// One job.
pub fn get(db: &ControlDb, id: i64) -> Result<JobRecord> {
    let mut conn = db.conn()?;
    find(&mut conn, id)
}

fn find(conn: &mut ControlConnection, id: i64) -> Result<JobRecord> {
    let row: Option<JobRow> = jobs::table
        .find(id)
        .select(JobRow::as_select())
        .first(conn)
        .optional()?;
    row.ok_or_else(|| Error::not_found("job", id.to_string()))?
        .try_into()
}

/// Gives a dead job a fresh set of attempts, due now. Refused (a conflict)
/// unless the job is dead, or while another job of its kind holds its dedup
/// key: two open jobs with one key are what the key exists to prevent.
pub fn retry_dead(db: &ControlDb, id: i64) -> Result<JobRecord> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let job = find(conn, id)?;
        if job.state != JobState::Dead {
            return Err(Error::Conflict(format!(
                "job {id} is {}; only dead jobs can be retried",
                job.state
            )));
        }
        if let Some(key) = &job.dedup_key {
            if let Some((other, _)) = open_job(conn, &job.kind, key)? {
                return Err(Error::Conflict(format!(
                    "job {id}: job {other} of kind {} with dedup key {key:?} is still open",
                    job.kind
                )));
            }
        }
        let now = Utc::now().naive_utc();
        diesel::update(jobs::table.find(id))
            .set((
                jobs::state.eq(JobState::Pending.as_str()),
                jobs::attempts.eq(0),
                jobs::run_at.eq(now),
                jobs::updated_at.eq(now),
                jobs::finished_at.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)?;
        tracing::info!(job_id = id, kind = %job.kind, "dead job queued again");
        find(conn, id)
    })
}

/// Deletes succeeded jobs that finished before `finished_before`; dead jobs
/// stay for the operator. Returns how many rows went.
pub fn prune_succeeded(db: &ControlDb, finished_before: NaiveDateTime) -> Result<usize> {
    let mut conn = db.conn()?;
    Ok(diesel::delete(
        jobs::table
            .filter(jobs::state.eq(JobState::Succeeded.as_str()))
            .filter(jobs::finished_at.lt(finished_before)),
    )
    .execute(&mut conn)?)
}
