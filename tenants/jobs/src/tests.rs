//! The queue and the runner against real databases: every scenario runs on
//! SQLite (a temp dir) and on PostgreSQL (a fresh database from the testkit;
//! skipped when PostgreSQL is unreachable, unless `CI` is set).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_control_db::schema::jobs;
use tenantplane_control_db::states::JobState;
use tenantplane_control_db::{write_tx, ControlDb, Error};
use tenantplane_testkit::TestPg;

use crate::queue::clip;
use crate::*;

/// A control database for one test, removed afterwards.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestPg>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("control.db").display());
        TestDb::prepared(url, Some(dir), None)
    }

    fn postgres() -> Option<TestDb> {
        let pg = TestPg::new()?;
        Some(TestDb::prepared(pg.url(), None, Some(pg)))
    }

    /// Migrates the database and adds `job_runs`, where test jobs record
    /// each execution (no key: a job that ran twice shows up twice).
    fn prepared(url: String, dir: Option<tempfile::TempDir>, pg: Option<TestPg>) -> TestDb {
        let t = TestDb {
            url,
            _dir: dir,
            _pg: pg,
        };
        let db = t.open();
        db.conn()
            .unwrap()
            .batch_execute("CREATE TABLE job_runs (job_id BIGINT NOT NULL, worker TEXT NOT NULL)")
            .unwrap();
        t
    }

    /// A new pool on the database: another "process".
    fn open(&self) -> ControlDb {
        ControlDb::open(&self.url).unwrap()
    }
}

/// Runs each scenario once per backend.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::TestDb::sqlite());
            }

            #[test]
            fn postgres() {
                let Some(t) = super::TestDb::postgres() else { return };
                super::$name(&t);
            }
        }
    )+};
}

on_both_backends!(
    enqueue_dedups_while_open_and_joins_the_callers_transaction,
    claims_skip_future_jobs_and_unknown_kinds,
    a_dead_workers_job_is_reclaimed_and_runs_once_more,
    a_stopping_runner_hands_back_what_it_cannot_finish,
    a_lease_that_expires_on_the_last_attempt_buries_the_job,
    failures_back_off_then_the_job_is_dead_with_its_error,
    the_runner_retries_transient_errors_and_buries_permanent_ones,
    two_runners_run_every_job_exactly_once,
    operators_list_get_retry_and_prune,
    registry_runs_by_kind_and_contains_failures,
    a_job_may_choose_its_next_run,
    a_request_to_run_again_while_running_is_kept_until_the_job_ends,
);

/// `enqueue_again` while the job of its key runs: the job runs once more
/// after it ends, whether it succeeded, died or its lease ran out on the
/// last attempt; `enqueue` joins the running job instead; a pending job
/// needs no mark.
fn a_request_to_run_again_while_running_is_kept_until_the_job_ends(t: &TestDb) {
    let db = t.open();
    let rerun = |job: &dyn Fn(&mut tenantplane_control_db::ControlConnection) -> Enqueued| {
        job(&mut db.conn().unwrap())
    };
    // Succeeded, then pending again, attempts from 0; once.
    let id = queue(&db, &Record::keyed("again"));
    let again = |c: &mut _| enqueue_again(c, &Record::keyed("again")).unwrap();
    assert_eq!(rerun(&again), Enqueued::Existing(id), "pending: joined");
    assert!(!rerun_mark(&db, id));
    claim(&db, "w", LEASE, &[Record::KIND]).unwrap().unwrap();
    let joined = |c: &mut _| enqueue(c, &Record::keyed("again")).unwrap();
    assert_eq!(rerun(&joined), Enqueued::Existing(id));
    assert!(!rerun_mark(&db, id), "enqueue joins a running job");
    assert_eq!(rerun(&again), Enqueued::Existing(id));
    assert!(rerun_mark(&db, id));
    assert!(complete(&db, "w", id).unwrap());
    let rec = get(&db, id).unwrap();
    assert_eq!(
        (
            rec.state,
            rec.attempts,
            rec.finished_at,
            rerun_mark(&db, id)
        ),
        (JobState::Pending, 0, None, false)
    );
    assert!(rec.run_at <= now());
    claim(&db, "w", LEASE, &[Record::KIND]).unwrap().unwrap();
    assert!(complete(&db, "w", id).unwrap());
    assert_eq!(get(&db, id).unwrap().state, JobState::Succeeded);

    // Dead on a permanent error, then pending again: `fail` says so.
    let key = Some("dies".to_string());
    let id = queue(&db, &Refuses { key: key.clone() });
    claim(&db, "w", LEASE, &[Refuses::KIND]).unwrap().unwrap();
    let again = |c: &mut _| enqueue_again(c, &Refuses { key: key.clone() }).unwrap();
    assert_eq!(rerun(&again), Enqueued::Existing(id));
    let refused = JobError::permanent("refused");
    let next = fail(&db, "w", id, &refused, Refuses::BACKOFF).unwrap();
    assert_eq!(next, Some(JobState::Pending));
    let rec = get(&db, id).unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Pending, 0));
    assert_eq!(rec.last_error.as_deref(), Some("refused"));
    // Without a mark it stays dead.
    claim(&db, "w", LEASE, &[Refuses::KIND]).unwrap().unwrap();
    let next = fail(&db, "w", id, &refused, Refuses::BACKOFF).unwrap();
    assert_eq!(next, Some(JobState::Dead));

    // Buried (the lease ran out on the last attempt), then pending again.
    let key = Some("buried".to_string());
    let id = queue(&db, &Refuses { key: key.clone() });
    claim(&db, "doomed", Duration::from_millis(1), &[Refuses::KIND])
        .unwrap()
        .unwrap();
    let again = |c: &mut _| enqueue_again(c, &Refuses { key: key.clone() }).unwrap();
    assert_eq!(rerun(&again), Enqueued::Existing(id));
    wait_for("the lease to expire", || {
        get(&db, id).unwrap().lease_expires_at.unwrap() < now()
    });
    let next = claim(&db, "w", LEASE, &[Refuses::KIND]).unwrap().unwrap();
    assert_eq!(
        (next.id, next.attempts),
        (id, 1),
        "buried, revived, claimed"
    );
    assert!(!rerun_mark(&db, id));

    // A request after the job ended is a new job.
    let id = queue(&db, &Record::keyed("ended"));
    claim(&db, "w", LEASE, &[Record::KIND]).unwrap().unwrap();
    assert!(complete(&db, "w", id).unwrap());
    let again = |c: &mut _| enqueue_again(c, &Record::keyed("ended")).unwrap();
    assert!(rerun(&again).is_new());
    assert_eq!(get(&db, id).unwrap().state, JobState::Succeeded);
}

fn rerun_mark(db: &ControlDb, id: i64) -> bool {
    jobs::table
        .find(id)
        .select(jobs::rerun)
        .first(&mut db.conn().unwrap())
        .unwrap()
}

/// `JobError::retry_after`: the job's own delay replaces the kind's backoff
/// (a delivery's retry schedule, a receiver's `Retry-After`); the attempts
/// still bound it.
fn a_job_may_choose_its_next_run(t: &TestDb) {
    let db = t.open();
    let id = queue(&db, &Flaky);
    let instant = BackoffPolicy {
        base_ms: 1,
        max_ms: 1,
    };
    claim(&db, "w", LEASE, &[Flaky::KIND]).unwrap().unwrap();
    let later = JobError::retry_after("busy", std::time::Duration::from_secs(3600));
    assert!(!later.is_permanent());
    assert_eq!(later.to_string(), "busy");
    let before = now();
    assert_eq!(
        fail(&db, "w", id, &later, instant).unwrap(),
        Some(JobState::Pending)
    );
    let rec = get(&db, id).unwrap();
    assert!(
        rec.run_at >= before + chrono::Duration::seconds(3599),
        "the job's delay, not the 1 ms backoff: {}",
        rec.run_at
    );
    assert_eq!(rec.last_error.as_deref(), Some("busy"));
    assert!(claim(&db, "w", LEASE, &[Flaky::KIND]).unwrap().is_none());
}

diesel::table! {
    job_runs (job_id, worker) {
        job_id -> BigInt,
        worker -> Text,
    }
}

fn record_run(ctx: &JobContext) -> Result<(), JobError> {
    let mut conn = ctx.db().conn()?;
    diesel::insert_into(job_runs::table)
        .values((
            job_runs::job_id.eq(ctx.job_id()),
            job_runs::worker.eq(ctx.worker_id()),
        ))
        .execute(&mut conn)
        .map_err(Error::from)?;
    Ok(())
}

/// Who ran job `id`, once per execution.
fn runs_of(db: &ControlDb, id: i64) -> Vec<String> {
    job_runs::table
        .filter(job_runs::job_id.eq(id))
        .select(job_runs::worker)
        .load(&mut db.conn().unwrap())
        .unwrap()
}

/// Succeeds; recorded in `job_runs`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    n: u32,
    key: Option<String>,
    sleep_ms: u64,
}

impl Record {
    fn new(n: u32) -> Self {
        Record {
            n,
            key: None,
            sleep_ms: 0,
        }
    }

    fn keyed(key: &str) -> Self {
        Record {
            key: Some(key.to_string()),
            ..Record::new(0)
        }
    }
}

impl Job for Record {
    const KIND: &'static str = "test.record";

    fn dedup_key(&self) -> Option<String> {
        self.key.clone()
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        record_run(ctx)?;
        std::thread::sleep(Duration::from_millis(self.sleep_ms));
        Ok(())
    }
}

/// Another kind, to show dedup keys are per kind.
#[derive(Debug, Serialize, Deserialize)]
struct Other {
    key: String,
}

impl Job for Other {
    const KIND: &'static str = "test.other";

    fn dedup_key(&self) -> Option<String> {
        Some(self.key.clone())
    }

    fn run(&self, _: &JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("calling the webhook")]
struct Outer(#[source] std::io::Error);

fn webhook_error() -> JobError {
    JobError::transient(Outer(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset (simulated)",
    )))
}

const WEBHOOK_CHAIN: &str = "calling the webhook: connection reset (simulated)";

/// Always fails transiently, with a two-level error chain.
#[derive(Debug, Serialize, Deserialize)]
struct Flaky;

impl Job for Flaky {
    const KIND: &'static str = "test.flaky";
    const MAX_ATTEMPTS: i32 = 3;
    const BACKOFF: BackoffPolicy = BackoffPolicy {
        base_ms: 1,
        max_ms: 5,
    };

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        record_run(ctx)?;
        Err(webhook_error())
    }
}

/// Fails permanently.
#[derive(Debug, Serialize, Deserialize)]
struct Refuses {
    key: Option<String>,
}

impl Job for Refuses {
    const KIND: &'static str = "test.refuses";
    const MAX_ATTEMPTS: i32 = 1;

    fn dedup_key(&self) -> Option<String> {
        self.key.clone()
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        record_run(ctx)?;
        Err(JobError::permanent("tenant t-1 does not exist"))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Panics;

impl Job for Panics {
    const KIND: &'static str = "test.panics";
    const MAX_ATTEMPTS: i32 = 2;
    const BACKOFF: BackoffPolicy = BackoffPolicy {
        base_ms: 1,
        max_ms: 5,
    };

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        record_run(ctx)?;
        panic!("index out of bounds (simulated)");
    }
}

/// Never registered with a runner.
#[derive(Debug, Serialize, Deserialize)]
struct Unregistered;

impl Job for Unregistered {
    const KIND: &'static str = "test.unregistered";

    fn run(&self, _: &JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Record>()
        .register::<Flaky>()
        .register::<Refuses>()
        .register::<Panics>();
    r
}

fn quick_runner(db: &ControlDb, worker: &str, threads: usize, lease: Duration) -> Runner {
    let config = RunnerConfig {
        threads,
        lease,
        poll: Duration::from_millis(10),
        max_idle: Duration::from_millis(100),
        ..RunnerConfig::new(worker)
    };
    Runner::start(db.clone(), registry(), config).unwrap()
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn queue<J: Job>(db: &ControlDb, job: &J) -> i64 {
    enqueue(&mut db.conn().unwrap(), job).unwrap().id()
}

/// Polls `done` until it holds; the deadline only bounds a broken run.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_state(db: &ControlDb, id: i64, state: JobState) -> JobRecord {
    wait_for(&format!("job {id} to be {state}"), || {
        get(db, id).unwrap().state == state
    });
    get(db, id).unwrap()
}

/// Makes a pending job due now, as if its backoff had passed.
fn make_due(db: &ControlDb, id: i64) {
    diesel::update(jobs::table.find(id))
        .set(jobs::run_at.eq(now()))
        .execute(&mut db.conn().unwrap())
        .unwrap();
}

const LEASE: Duration = Duration::from_secs(30);

fn enqueue_dedups_while_open_and_joins_the_callers_transaction(t: &TestDb) {
    let db = t.open();
    let mut conn = db.conn().unwrap();
    let first = enqueue(&mut conn, &Record::keyed("k")).unwrap();
    assert!(first.is_new());
    assert_eq!(
        enqueue(&mut conn, &Record::keyed("k")).unwrap(),
        Enqueued::Existing(first.id())
    );
    // Keys are per kind; jobs without a key never collide.
    assert!(enqueue(&mut conn, &Other { key: "k".into() })
        .unwrap()
        .is_new());
    let a = enqueue(&mut conn, &Record::new(1)).unwrap();
    let b = enqueue(&mut conn, &Record::new(1)).unwrap();
    assert!(a.is_new() && b.is_new() && a.id() != b.id());

    // Inside the caller's transaction a duplicate neither fails nor poisons
    // it (PostgreSQL aborts a transaction after any failed statement)…
    let in_tx = write_tx(&mut conn, None, |c| {
        let dup = enqueue(c, &Record::keyed("k"))?;
        let fresh = enqueue(c, &Record::keyed("k2"))?;
        Ok((dup, fresh))
    })
    .unwrap();
    assert_eq!(in_tx.0, Enqueued::Existing(first.id()));
    assert_eq!(get(&db, in_tx.1.id()).unwrap().state, JobState::Pending);
    // …and a rolled-back transaction leaves no job behind.
    let mut rolled_back = None;
    let err = write_tx(&mut conn, None, |c| {
        rolled_back = Some(enqueue(c, &Record::keyed("k3"))?.id());
        Err::<(), _>(Error::invalid("the change failed"))
    });
    assert!(err.is_err());
    assert!(matches!(
        get(&db, rolled_back.unwrap()),
        Err(Error::NotFound { .. })
    ));

    let stored = get(&db, first.id()).unwrap();
    assert_eq!(stored.kind, "test.record");
    assert_eq!(stored.dedup_key.as_deref(), Some("k"));
    assert_eq!(stored.max_attempts, 5);
    assert_eq!(stored.attempts, 0);
    let payload: serde_json::Value = serde_json::from_str(&stored.payload).unwrap();
    assert_eq!(payload["key"], "k");

    // Running still holds the key; finishing frees it.
    let claimed = claim(&db, "w", LEASE, &[Record::KIND]).unwrap().unwrap();
    assert_eq!(claimed.id, first.id());
    assert_eq!(
        enqueue(&mut conn, &Record::keyed("k")).unwrap(),
        Enqueued::Existing(first.id())
    );
    assert!(complete(&db, "w", first.id()).unwrap());
    let again = enqueue(&mut conn, &Record::keyed("k")).unwrap();
    assert!(again.is_new());
    assert_ne!(again.id(), first.id());
}

fn claims_skip_future_jobs_and_unknown_kinds(t: &TestDb) {
    let db = t.open();
    let later = now() + chrono::Duration::hours(1);
    let future = enqueue_at(&mut db.conn().unwrap(), &Record::new(1), later)
        .unwrap()
        .id();
    let other = queue(&db, &Unregistered);
    assert!(claim(&db, "w", LEASE, &[Record::KIND]).unwrap().is_none());
    assert!(claim(&db, "w", LEASE, &[]).unwrap().is_none());
    let got = claim(&db, "w", LEASE, &[Record::KIND, Unregistered::KIND])
        .unwrap()
        .unwrap();
    assert_eq!((got.id, got.kind.as_str()), (other, Unregistered::KIND));
    assert_eq!(got.attempts, 1);
    let rec = get(&db, other).unwrap();
    assert_eq!(rec.state, JobState::Running);
    assert_eq!(rec.lease_owner.as_deref(), Some("w"));
    assert!(rec.lease_expires_at.unwrap() > rec.updated_at);
    let untouched = get(&db, future).unwrap();
    assert_eq!(
        (untouched.state, untouched.attempts),
        (JobState::Pending, 0)
    );
    assert_eq!(untouched.run_at, later.trunc_subsecs(6));
}

fn a_dead_workers_job_is_reclaimed_and_runs_once_more(t: &TestDb) {
    let db = t.open();
    let id = queue(&db, &Record::new(7));
    // "doomed" claims the job and dies: no heartbeat, no outcome.
    let doomed = claim(&db, "doomed", Duration::from_millis(300), &[Record::KIND])
        .unwrap()
        .unwrap();
    assert_eq!(doomed.id, id);

    let rescuer_db = t.open();
    let runner = quick_runner(&rescuer_db, "rescuer", 2, LEASE);
    let done = wait_for_state(&db, id, JobState::Succeeded);
    runner.stop();

    assert_eq!(done.attempts, 2);
    assert_eq!(runs_of(&db, id), ["rescuer"]);
    assert_eq!(
        done.last_error.as_deref(),
        Some("lease of worker doomed expired")
    );
    assert!(done.lease_owner.is_none() && done.lease_expires_at.is_none());
    assert!(done.finished_at.is_some());
    // Should the doomed worker come back, it cannot touch the job any more.
    assert_eq!(
        heartbeat(&db, "doomed", &[id], LEASE).unwrap(),
        0,
        "a lost lease is not extended"
    );
    assert!(!complete(&db, "doomed", id).unwrap());
    assert_eq!(
        fail(&db, "doomed", id, &webhook_error(), BackoffPolicy::DEFAULT).unwrap(),
        None
    );
    assert_eq!(get(&db, id).unwrap(), done);
}

fn a_stopping_runner_hands_back_what_it_cannot_finish(t: &TestDb) {
    let db = t.open();
    // Far longer than the grace, however late this thread gets to stop it.
    let slow = queue(
        &db,
        &Record {
            sleep_ms: 30_000,
            ..Record::new(1)
        },
    );
    let runner = quick_runner(&db, "leaving", 1, LEASE);
    wait_for("the slow job to start", || {
        get(&db, slow).unwrap().state == JobState::Running
    });
    // The grace ends before the job does: it is handed back, due now, the
    // attempt not counted, no lease left to wait for.
    let released = runner.stop_by(Instant::now() + Duration::from_millis(100));
    assert_eq!(released, 1);
    let back = get(&db, slow).unwrap();
    assert_eq!(back.state, JobState::Pending);
    assert_eq!(back.attempts, 0);
    assert!(back.lease_owner.is_none() && back.lease_expires_at.is_none());
    assert!(back.run_at <= now());
    // Another worker claims it at once.
    let next = claim(&db, "staying", LEASE, &[Record::KIND])
        .unwrap()
        .unwrap();
    assert_eq!(next.id, slow);
    // Once handed back it is no longer the leaver's: nothing to release.
    assert_eq!(release(&db, "leaving", &[slow]).unwrap(), 0);

    // A runner whose jobs finish within the grace hands back nothing.
    let quick = queue(&db, &Record::new(2));
    let runner = quick_runner(&db, "tidy", 1, LEASE);
    wait_for_state(&db, quick, JobState::Succeeded);
    assert_eq!(runner.stop_by(Instant::now() + Duration::from_secs(5)), 0);
}

fn a_lease_that_expires_on_the_last_attempt_buries_the_job(t: &TestDb) {
    let db = t.open();
    let id = queue(&db, &Refuses { key: None });
    let held = claim(&db, "doomed", Duration::from_millis(1), &[Refuses::KIND])
        .unwrap()
        .unwrap();
    assert_eq!((held.attempts, held.max_attempts), (1, 1));
    wait_for("the lease to expire", || {
        get(&db, id).unwrap().lease_expires_at.unwrap() < now()
    });
    // Any claim, of any kinds, gives the job up instead of running it again.
    assert!(claim(&db, "w", LEASE, &[Record::KIND]).unwrap().is_none());
    let dead = get(&db, id).unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 1);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("lease of worker doomed expired on the last attempt")
    );
    assert!(dead.finished_at.is_some() && dead.lease_owner.is_none());
    assert!(claim(&db, "w", LEASE, &[Refuses::KIND]).unwrap().is_none());
}

fn failures_back_off_then_the_job_is_dead_with_its_error(t: &TestDb) {
    let db = t.open();
    let id = queue(&db, &Flaky);
    let slow = BackoffPolicy {
        base_ms: 60_000,
        max_ms: 3_600_000,
    };
    for attempt in 1..=3 {
        let job = claim(&db, "w", LEASE, &[Flaky::KIND]).unwrap().unwrap();
        assert_eq!((job.id, job.attempts, job.max_attempts), (id, attempt, 3));
        // Only the lease holder records outcomes.
        assert_eq!(
            fail(&db, "intruder", id, &webhook_error(), slow).unwrap(),
            None
        );
        assert_eq!(get(&db, id).unwrap().state, JobState::Running);

        let before = now();
        let next = fail(&db, "w", id, &webhook_error(), slow).unwrap();
        let after = now();
        let rec = get(&db, id).unwrap();
        assert_eq!(rec.attempts, attempt);
        assert_eq!(rec.last_error.as_deref(), Some(WEBHOOK_CHAIN));
        assert!(rec.lease_owner.is_none() && rec.lease_expires_at.is_none());
        if attempt < 3 {
            assert_eq!(next, Some(JobState::Pending));
            assert_eq!(rec.state, JobState::Pending);
            // Full jitter: anywhere from now up to the attempt's ceiling.
            let ceiling = crate::backoff::ceiling_ms(attempt, slow.base_ms, slow.max_ms);
            assert!(
                rec.run_at >= before.trunc_subsecs(6),
                "{} < {before}",
                rec.run_at
            );
            assert!(rec.run_at <= after + chrono::Duration::milliseconds(ceiling));
            assert!(rec.finished_at.is_none());
            make_due(&db, id);
        } else {
            assert_eq!(next, Some(JobState::Dead));
            assert_eq!(rec.state, JobState::Dead);
            assert!(rec.finished_at.is_some());
        }
    }
    assert!(claim(&db, "w", LEASE, &[Flaky::KIND]).unwrap().is_none());

    // A permanent error ends a job on its first attempt, however many it had.
    let id = queue(&db, &Record::new(1));
    claim(&db, "w", LEASE, &[Record::KIND]).unwrap().unwrap();
    let refused = JobError::permanent("payload names no tenant");
    assert_eq!(
        fail(&db, "w", id, &refused, slow).unwrap(),
        Some(JobState::Dead)
    );
    let rec = get(&db, id).unwrap();
    assert_eq!(
        (rec.state, rec.attempts, rec.max_attempts),
        (JobState::Dead, 1, 5)
    );
    assert_eq!(rec.last_error.as_deref(), Some("payload names no tenant"));
}

fn the_runner_retries_transient_errors_and_buries_permanent_ones(t: &TestDb) {
    let db = t.open();
    let flaky = queue(&db, &Flaky);
    let refuses = queue(&db, &Refuses { key: None });
    let panics = queue(&db, &Panics);
    let unknown = queue(&db, &Unregistered);
    let runner = quick_runner(&db, "w1", 2, LEASE);

    let rec = wait_for_state(&db, flaky, JobState::Dead);
    assert_eq!(rec.attempts, 3);
    assert_eq!(runs_of(&db, flaky).len(), 3);
    assert_eq!(rec.last_error.as_deref(), Some(WEBHOOK_CHAIN));

    let rec = wait_for_state(&db, refuses, JobState::Dead);
    assert_eq!(rec.attempts, 1);
    assert_eq!(runs_of(&db, refuses).len(), 1);
    assert_eq!(rec.last_error.as_deref(), Some("tenant t-1 does not exist"));

    let rec = wait_for_state(&db, panics, JobState::Dead);
    assert_eq!(rec.attempts, 2);
    assert_eq!(runs_of(&db, panics).len(), 2);
    assert_eq!(
        rec.last_error.as_deref(),
        Some("job panicked: index out of bounds (simulated)")
    );

    // The panics did not take the runner's threads down.
    let after = queue(&db, &Record::new(2));
    wait_for_state(&db, after, JobState::Succeeded);
    runner.stop();

    // Nobody here can run the unregistered kind, so nobody claimed it.
    let rec = get(&db, unknown).unwrap();
    assert_eq!((rec.state, rec.attempts), (JobState::Pending, 0));
    assert!(rec.lease_owner.is_none());
}

fn two_runners_run_every_job_exactly_once(t: &TestDb) {
    let db = t.open();
    let ids: Vec<i64> = write_tx(&mut db.conn().unwrap(), None, |c| {
        (0..200)
            .map(|n| {
                let job = Record {
                    sleep_ms: 10,
                    ..Record::new(n)
                };
                Ok(enqueue(c, &job)?.id())
            })
            .collect::<Result<_, Error>>()
    })
    .unwrap();
    // Two "processes": their own pools, their own worker ids.
    let (db_a, db_b) = (t.open(), t.open());
    let a = quick_runner(&db_a, "runner-a", 4, LEASE);
    let b = quick_runner(&db_b, "runner-b", 4, LEASE);
    wait_for("all 200 jobs to succeed", || {
        list(
            &db,
            &JobFilter {
                state: Some(JobState::Succeeded),
                limit: 1000,
                ..JobFilter::default()
            },
        )
        .unwrap()
        .len()
            == 200
    });
    a.stop();
    b.stop();

    let runs: Vec<(i64, String)> = job_runs::table
        .select((job_runs::job_id, job_runs::worker))
        .load(&mut db.conn().unwrap())
        .unwrap();
    let mut per_job: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (id, worker) in &runs {
        per_job.entry(*id).or_default().push(worker);
    }
    for id in &ids {
        let workers = per_job.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(workers.len(), 1, "job {id} ran {workers:?}");
    }
    assert_eq!(runs.len(), 200);
    let by_a = runs.iter().filter(|(_, w)| w == "runner-a").count();
    let by_b = runs.iter().filter(|(_, w)| w == "runner-b").count();
    assert_eq!(by_a + by_b, 200);
    assert!(by_a > 0 && by_b > 0, "both runners worked: {by_a} / {by_b}");
    for id in ids {
        let rec = get(&db, id).unwrap();
        assert_eq!((rec.state, rec.attempts), (JobState::Succeeded, 1));
        assert!(rec.last_error.is_none());
    }
}

fn operators_list_get_retry_and_prune(t: &TestDb) {
    let db = t.open();
    let keyed = || Refuses {
        key: Some("tenant-1".into()),
    };
    let dead = queue(&db, &keyed());
    claim(&db, "w", LEASE, &[Refuses::KIND]).unwrap().unwrap();
    let refused = JobError::permanent("refused");
    assert_eq!(
        fail(&db, "w", dead, &refused, BackoffPolicy::DEFAULT).unwrap(),
        Some(JobState::Dead)
    );
    let pending = queue(&db, &Record::new(1));

    let only = |state, kind: Option<&str>| {
        let filter = JobFilter {
            state,
            kind: kind.map(str::to_string),
            ..JobFilter::default()
        };
        list(&db, &filter)
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(only(Some(JobState::Dead), None), [dead]);
    assert_eq!(only(Some(JobState::Pending), None), [pending]);
    assert_eq!(only(None, None), [pending, dead], "newest first");
    assert_eq!(only(None, Some(Refuses::KIND)), [dead]);
    let page = JobFilter {
        limit: 1,
        ..JobFilter::default()
    };
    assert_eq!(list(&db, &page).unwrap()[0].id, pending);
    let next = JobFilter {
        before_id: Some(pending),
        ..page
    };
    assert_eq!(list(&db, &next).unwrap()[0].id, dead);

    assert!(matches!(get(&db, 999_999), Err(Error::NotFound { .. })));
    assert!(matches!(
        retry_dead(&db, 999_999),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(retry_dead(&db, pending), Err(Error::Conflict(_))));

    // A dead job frees its key; while a new job holds it, the dead one
    // cannot come back.
    let successor = enqueue(&mut db.conn().unwrap(), &keyed()).unwrap();
    assert!(successor.is_new());
    let err = retry_dead(&db, dead).unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains(&successor.id().to_string())),
        "{err}"
    );
    assert_eq!(
        claim(&db, "w", LEASE, &[Refuses::KIND])
            .unwrap()
            .unwrap()
            .id,
        successor.id()
    );
    assert!(complete(&db, "w", successor.id()).unwrap());

    let retried = retry_dead(&db, dead).unwrap();
    assert_eq!((retried.state, retried.attempts), (JobState::Pending, 0));
    assert!(retried.finished_at.is_none());
    assert_eq!(retried.last_error.as_deref(), Some("refused"));
    let again = claim(&db, "w", LEASE, &[Refuses::KIND]).unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (dead, 1));

    // Pruning takes succeeded jobs only.
    let pruned = prune_succeeded(&db, now() + chrono::Duration::seconds(1)).unwrap();
    assert_eq!(pruned, 1);
    assert!(matches!(
        get(&db, successor.id()),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(get(&db, dead).unwrap().state, JobState::Running);
    assert_eq!(get(&db, pending).unwrap().state, JobState::Pending);
}

fn registry_runs_by_kind_and_contains_failures(t: &TestDb) {
    let db = t.open();
    let mut r = registry();
    r.register::<Record>();
    assert_eq!(
        r.kinds(),
        ["test.flaky", "test.panics", "test.record", "test.refuses"]
    );
    assert!(r.contains(Record::KIND) && !r.contains(Unregistered::KIND));
    assert_eq!(r.backoff(Flaky::KIND).base_ms, 1);
    assert_eq!(r.backoff(Record::KIND), BackoffPolicy::DEFAULT);

    let ctx = JobContext::new(db.clone(), "w", 42, 1);
    let claimed = |kind: &str, payload: &str| ClaimedJob {
        id: 42,
        kind: kind.into(),
        payload: payload.into(),
        attempts: 1,
        max_attempts: 5,
    };
    r.run(
        &claimed(Record::KIND, r#"{"n":1,"key":null,"sleep_ms":0}"#),
        &ctx,
    )
    .unwrap();
    assert_eq!(runs_of(&db, 42), ["w"]);

    let bad = r
        .run(&claimed(Record::KIND, r#"{"n":"one"}"#), &ctx)
        .unwrap_err();
    assert!(bad.is_permanent());
    let text = tenantplane_control_db::error::report(&bad);
    assert!(
        text.starts_with("job test.record: the payload does not fit the job type: "),
        "{text}"
    );

    let unknown = r.run(&claimed("test.nobody", "null"), &ctx).unwrap_err();
    assert!(!unknown.is_permanent());
    let panicked = r.run(&claimed(Panics::KIND, "null"), &ctx).unwrap_err();
    assert!(!panicked.is_permanent());
    assert_eq!(
        panicked.to_string(),
        "job panicked: index out of bounds (simulated)"
    );
}

#[test]
fn a_failure_is_retried_only_while_transient_and_attempts_remain() {
    assert_eq!(queue::after_failure(1, 5, false), JobState::Pending);
    assert_eq!(queue::after_failure(4, 5, false), JobState::Pending);
    assert_eq!(queue::after_failure(5, 5, false), JobState::Dead);
    assert_eq!(queue::after_failure(7, 5, false), JobState::Dead);
    assert_eq!(queue::after_failure(1, 5, true), JobState::Dead);
    // A nonsensical limit still allows exactly one attempt.
    assert_eq!(queue::after_failure(1, 0, false), JobState::Dead);
    assert_eq!(queue::after_failure(0, 0, false), JobState::Pending);
}

#[test]
fn errors_are_clipped_on_a_character_boundary() {
    assert_eq!(clip("short", 10), "short");
    assert_eq!(clip("exactly10!", 10), "exactly10!");
    let cut = clip("aaaaaaaaaaaa", 10);
    assert_eq!(cut, "aaaaaaa…");
    assert!(cut.len() <= 10);
    // 'é' is two bytes: the cut never splits it.
    assert_eq!(clip("éééééééé", 10), "ééé…");
    assert_eq!(clip("éééééééé", 9), "ééé…");
}

#[test]
fn domain_errors_are_retried_by_their_kind() {
    let lost = Error::control(
        "claiming",
        tenantplane_control_db::DbError::Connect(diesel::ConnectionError::BadConnection(
            "refused".into(),
        )),
    );
    assert!(!JobError::from(lost).is_permanent());
    assert!(JobError::from(Error::invalid("bad slug")).is_permanent());
    let chained = JobError::from(Error::control(
        "claiming",
        tenantplane_control_db::DbError::State("gone".into()),
    ));
    assert_eq!(
        tenantplane_control_db::error::report(&chained),
        "control database: claiming: gone"
    );
}
