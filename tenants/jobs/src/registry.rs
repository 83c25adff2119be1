//! The job types a runner can run, by kind.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::job::{BackoffPolicy, Job, JobContext, JobError};
use crate::queue::ClaimedJob;

/// Deserializes a payload into its job type and runs it.
type RunFn = fn(&str, &JobContext) -> Result<(), JobError>;

#[derive(Clone, Copy)]
struct Handler {
    type_id: TypeId,
    run: RunFn,
    backoff: BackoffPolicy,
}

/// The job types a runner runs. A runner claims only these kinds, so workers
/// of different releases (or with different job sets) can share one queue:
/// a job waits for a worker that knows its kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<&'static str, Handler>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

/// The payload in the row does not fit the job type: no attempt can fix it.
#[derive(Debug, thiserror::Error)]
#[error("job {kind}: the payload does not fit the job type")]
struct BadPayload {
    kind: &'static str,
    #[source]
    source: serde_json::Error,
}

/// The job panicked; the runner's thread survived it.
#[derive(Debug, thiserror::Error)]
#[error("job panicked: {0}")]
struct Panicked(String);

/// Claimed a kind it has no handler for (cannot happen through a runner,
/// whose claims are filtered by its kinds); another worker may know it.
#[derive(Debug, thiserror::Error)]
#[error("no job type registered for kind {0:?}")]
struct UnknownKind(String);

fn run_as<J: Job>(payload: &str, ctx: &JobContext) -> Result<(), JobError> {
    let job: J = serde_json::from_str(payload).map_err(|source| {
        JobError::permanent(BadPayload {
            kind: J::KIND,
            source,
        })
    })?;
    job.run(ctx)
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds job type `J`. Registering it again changes nothing. Two types
    /// with one `KIND` are a bug: the first stays, the second is reported
    /// (and fails debug builds), since rows cannot tell them apart.
    pub fn register<J: Job>(&mut self) -> &mut Self {
        let handler = Handler {
            type_id: TypeId::of::<J>(),
            run: run_as::<J>,
            backoff: J::BACKOFF,
        };
        let existing = *self.handlers.entry(J::KIND).or_insert(handler);
        if existing.type_id != handler.type_id {
            tracing::error!(
                kind = J::KIND,
                ignored = std::any::type_name::<J>(),
                "two job types share one kind; keeping the first"
            );
            debug_assert!(false, "two job types share the kind {:?}", J::KIND);
        }
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    pub fn contains(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    /// The backoff of `kind` (the default for an unknown kind).
    pub fn backoff(&self, kind: &str) -> BackoffPolicy {
        self.handlers
            .get(kind)
            .map_or(BackoffPolicy::DEFAULT, |h| h.backoff)
    }

    /// Runs a claimed job with its type's code. A panic becomes a transient
    /// error: it may come from the environment, and the attempts bound how
    /// often a job that always panics is tried.
    pub fn run(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<(), JobError> {
        let Some(handler) = self.handlers.get(job.kind.as_str()) else {
            return Err(JobError::transient(UnknownKind(job.kind.clone())));
        };
        match catch_unwind(AssertUnwindSafe(|| (handler.run)(&job.payload, ctx))) {
            Ok(result) => result,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                Err(JobError::transient(Panicked(text)))
            }
        }
    }
}
