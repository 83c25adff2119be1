//! Durable background jobs in the control database, and the lease and
//! backoff rules that rollout tasks share with them.
//!
//! A job is a row in `jobs` (kind, JSON payload, dedup key, lease, attempts,
//! `run_at`, a visible `dead` state). Code that causes work enqueues it in
//! its own transaction ([`enqueue`]); a [`Runner`] in any worker process
//! claims due jobs of the kinds its [`Registry`] knows, runs them, and
//! records the outcome; transient failures back off with jitter until the
//! job's attempts are spent. [`schedules`] starts jobs from cron
//! expressions, each fire time exactly once however many processes run it.

pub mod backoff;
mod job;
pub mod queue;
mod registry;
mod runner;
pub mod schedules;

pub use job::{BackoffPolicy, BoxError, Delayed, Job, JobContext, JobError};
pub use queue::{
    claim, complete, enqueue, enqueue_again, enqueue_at, fail, get, heartbeat, list, open_job,
    prune_succeeded, release, retry_dead, ClaimedJob, Enqueued, JobFilter, JobRecord,
};
pub use registry::Registry;
pub use runner::{Runner, RunnerConfig};

#[cfg(test)]
mod tests;
