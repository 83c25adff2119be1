//! What a job is: the [`Job`] trait a job type implements, the error it
//! returns, and the context it runs with.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tenantplane_control_db::ControlDb;

/// An error with its sources, as a job returns it.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A kind of durable job. The value itself is the payload: it is stored as
/// JSON when enqueued and deserialized by the worker that claims it, so a
/// job type must stay readable from rows written by the previous release
/// (add fields with `#[serde(default)]`, never rename `KIND`).
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// Stored in `jobs.kind`; picks the type that runs a row.
    const KIND: &'static str;
    /// Attempts before a job that keeps failing transiently is `dead`.
    const MAX_ATTEMPTS: i32 = 5;
    /// Delay between attempts (exponential with full jitter).
    const BACKOFF: BackoffPolicy = BackoffPolicy::DEFAULT;

    /// While a job of this kind with the same key is pending or running,
    /// enqueueing another is a no-op. A running job may already have read
    /// what a new request wanted it to see, so a job that must observe every
    /// change should put a version into its key or have none.
    fn dedup_key(&self) -> Option<String> {
        None
    }

    /// Does the work. A job may run more than once (a worker can die after
    /// the work but before recording it), so it must be idempotent.
    fn run(&self, ctx: &JobContext) -> Result<(), JobError>;
}

/// The bounds of the exponential backoff between attempts
/// ([`crate::backoff::backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the delay after the first failure.
    pub base_ms: i64,
    /// The ceiling never grows past this.
    pub max_ms: i64,
}

impl BackoffPolicy {
    /// 5 s, doubling up to 30 min: with the default 5 attempts a job gives up
    /// after at most ~75 s of waiting, long enough to ride out a restart of
    /// the database or of a remote service.
    pub const DEFAULT: BackoffPolicy = BackoffPolicy {
        base_ms: 5_000,
        max_ms: 30 * 60 * 1_000,
    };
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy::DEFAULT
    }
}

/// Why a job attempt failed, and whether another attempt may succeed.
///
/// Displays as the error it wraps (its sources follow through
/// `std::error::Error::source`), so the stored `last_error` reads as the
/// failure itself; the job's state tells whether it was retried.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying after a backoff, until the job's attempts run out.
    #[error(transparent)]
    Transient(BoxError),
    /// Retrying cannot help (bad payload, a missing tenant, a refused
    /// request): the job goes to `dead` at once.
    #[error(transparent)]
    Permanent(BoxError),
    /// Worth retrying, after the delay the job chose itself (its own retry
    /// schedule, a server's `Retry-After`) instead of the kind's backoff.
    #[error(transparent)]
    RetryAfter(Delayed),
}

/// A transient failure with the delay before the next attempt.
#[derive(Debug)]
pub struct Delayed {
    pub after: std::time::Duration,
    pub error: BoxError,
}

impl std::fmt::Display for Delayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl StdError for Delayed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

impl JobError {
    pub fn transient(e: impl Into<BoxError>) -> Self {
        JobError::Transient(e.into())
    }

    pub fn permanent(e: impl Into<BoxError>) -> Self {
        JobError::Permanent(e.into())
    }

    /// A transient failure retried after `after` (not the kind's backoff).
    pub fn retry_after(e: impl Into<BoxError>, after: std::time::Duration) -> Self {
        JobError::RetryAfter(Delayed {
            after,
            error: e.into(),
        })
    }

    /// The delay the job asked for, if it chose one.
    pub fn delay(&self) -> Option<std::time::Duration> {
        match self {
            JobError::RetryAfter(d) => Some(d.after),
            _ => None,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }
}

/// Domain errors are retried when their kind says a retry may cure them
/// (a lost connection, a busy pool), so a job can use `?` on them.
impl From<tenantplane_control_db::Error> for JobError {
    fn from(e: tenantplane_control_db::Error) -> Self {
        if e.is_transient() {
            JobError::Transient(Box::new(e))
        } else {
            JobError::Permanent(Box::new(e))
        }
    }
}

/// What a running job may use.
#[derive(Debug, Clone)]
pub struct JobContext {
    db: ControlDb,
    worker_id: Arc<str>,
    job_id: i64,
    attempt: i32,
    stop: Arc<AtomicBool>,
}

impl JobContext {
    /// A context outside a runner (tests of job types, one-off runs).
    pub fn new(db: ControlDb, worker_id: &str, job_id: i64, attempt: i32) -> Self {
        JobContext {
            db,
            worker_id: Arc::from(worker_id),
            job_id,
            attempt,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn in_runner(
        db: ControlDb,
        worker_id: Arc<str>,
        job_id: i64,
        attempt: i32,
        stop: Arc<AtomicBool>,
    ) -> Self {
        JobContext {
            db,
            worker_id,
            job_id,
            attempt,
            stop,
        }
    }

    pub fn db(&self) -> &ControlDb {
        &self.db
    }

    /// The worker holding the job's lease.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The job's row id: stable across attempts, so it serves as the
    /// idempotency key of whatever the job sends out.
    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    /// The runner is stopping. A long job may return a transient error here
    /// to be picked up again later instead of holding up the shutdown.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
