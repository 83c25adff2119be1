//! Cron schedules on the durable job queue: each schedule starts a job of a
//! fixed kind at its fire times, and any number of processes may run the
//! scheduler: every fire time is decided once, whoever decides it.
//!
//! - [`cron`]: the expression (5-field crontab, or the `cron` crate's 6/7
//!   fields with seconds first) and the fire times in the schedule's IANA
//!   time zone, across DST changes;
//! - [`store`]: the `schedules` rows, their checks, create/get/list/patch/
//!   delete with audit, the default schedules, and the runs view;
//! - [`fire`]: the firing decision (missed policy, overlap) as pure
//!   functions, and [`tick`], which applies it to every enabled schedule;
//! - [`scheduler`]: the thread that calls [`tick`] every second.
//!
//! Exactly once: a fire time becomes one `schedule_runs` row, inserted with
//! `ON CONFLICT (schedule_id, fire_at) DO NOTHING`; a started run's job is
//! enqueued in the same transaction as its row, so a process that loses the
//! race for a fire time writes nothing, and a process that dies mid-way
//! leaves neither the row nor the job.
//!
//! The job a schedule starts gets a [`Fire`] as its payload. The kinds are a
//! fixed list ([`SCHEDULABLE_KINDS`]); a job of a kind no worker has
//! registered yet stays `pending`, visible in the job list and in the runs
//! of its schedule (whose later fire times are then `skipped_overlap`).

pub mod cron;
pub mod fire;
pub mod scheduler;
pub mod store;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
pub use tenantplane_api_types::rollouts::Selector;
pub use tenantplane_api_types::schedules::{NewSchedule, Schedule, SchedulePatch, ScheduleRun};

pub use self::fire::{tick, TickReport};
pub use self::scheduler::{run_scheduler, Scheduler, SchedulerConfig};
pub use self::store::{create, delete, ensure_defaults, get, list, list_runs, patch, prune_runs};

/// The payload of every job a schedule starts.
///
/// A job type that a schedule starts deserializes its payload as this (or as
/// a struct with these fields): `schedule` and `fire_at` name the fire time,
/// `run_id` is its `schedule_runs` row, stable across the job's attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fire {
    /// The schedule's name.
    pub schedule: String,
    /// The `schedule_runs` row of this fire time.
    pub run_id: i64,
    /// The fire time, UTC.
    pub fire_at: NaiveDateTime,
    /// Which tenants the job covers, when the schedule says.
    pub selector: Option<Selector>,
    /// The schedule's job-specific settings (e.g. retention counts).
    pub params: Option<serde_json::Value>,
}

/// The job kinds a schedule may start; checked when a schedule is created
/// or changed.
pub const SCHEDULABLE_KINDS: &[&str] = &[
    "backup",
    "verify",
    "retention",
    "export-cleanup",
    "sweep.provisioning",
    "sweep.trials",
    "drift",
];

#[cfg(test)]
mod tests;
