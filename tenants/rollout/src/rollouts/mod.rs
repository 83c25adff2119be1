//! Rollouts, the operator's side: a target schema for a selection of
//! tenants, expanded into one task per tenant, in waves, with a retry and
//! failure policy. Requests are checked in `request`, the wave and budget
//! decisions are pure functions in `waves`, `create` writes a rollout and its
//! tasks, `read` shows them, `control` pauses, resumes, cancels and retries.
//! Workers execute the tasks (the `tasks` module).

mod advance;
mod control;
mod counters;
mod create;
mod groups;
mod read;
mod request;
pub mod waves;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tenantplane_control_db::schema::rollouts;

pub use advance::{advance, advance_all};
pub(crate) use control::set_state;
pub use control::{control, Control};
pub use counters::Progress;
pub use create::{create, Created};
pub use groups::{failure_groups, normalise, retry_group, FailureGroup};
pub use read::{
    counts, find_row, get, list, tasks_page, tasks_page_where, wave_counts, TaskFilter,
};
pub use tenantplane_api_types::rollouts::{
    Backoff, FailureBudget, PlannedTask, Rollout, RolloutPlan, RolloutRequest, Selector,
    TaskAttempt, TaskCounts, TaskPage, TaskView, Wave, WaveHold, WaveSpec,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = rollouts)]
pub struct RolloutRow {
    pub id: String,
    pub target: String,
    pub target_version: Option<String>,
    pub selector: String,
    pub waves: String,
    pub state: String,
    pub current_wave: i32,
    pub wave_count: i32,
    pub concurrency: i32,
    pub per_server_concurrency: i32,
    pub max_attempts: i32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub timeout_s: i32,
    pub max_failed: Option<i32>,
    pub max_failed_percent: Option<i32>,
    pub failures_forgiven: i32,
    pub verify: bool,
    pub priority: i32,
    pub total: i32,
    pub halt_reason: Option<String>,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub backup: bool,
    pub restore_on_failure: bool,
    pub wave_done_at: Option<NaiveDateTime>,
}
