//! Rollouts: requests, plans, progress and tasks.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// Which tenants a rollout covers; several keys are ANDed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// `true` selects every tenant (other keys still narrow it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Tenant ids or slugs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// Plan slugs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plans: Option<Vec<String>>,
    /// Labels that must all match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Server ids or names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
}

/// One wave: a fixed number of tenants or a percentage of the selection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    #[schema(max_length = 64)]
    pub name: Option<String>,
    #[schema(minimum = 1)]
    pub count: Option<u32>,
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub percent: Option<f64>,
    /// After this wave finishes, the next one waits this many seconds
    /// (at most a week) before it opens: time to watch the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 604800)]
    pub hold_s: Option<u32>,
    /// After this wave finishes, the next one waits for
    /// `POST /v1/rollouts/{id}/promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureBudget {
    /// Halt once more than this many tenants failed.
    pub max_failed: Option<u32>,
    /// Halt once more than this percentage of the tenants finished so far
    /// failed (checked from 10 finished tenants on, and at every wave's end).
    pub max_failed_percent: Option<u32>,
}

/// A rollout's `verify`: a boolean, or `"changed"` / `"full"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Verify {
    Flag(bool),
    Mode(VerifyMode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// The probes of what each run changed.
    Changed,
    /// Every probe of the target, for every tenant.
    Full,
}

impl Verify {
    /// Every probe for every tenant (`true` or `"full"`).
    pub fn is_full(self) -> bool {
        matches!(self, Verify::Flag(true) | Verify::Mode(VerifyMode::Full))
    }
}

/// By hand rather than `untagged`, whose error ("did not match any
/// variant") does not say what would.
impl<'de> Deserialize<'de> for Verify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Verify;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"true, false, "changed" or "full""#)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Verify, E> {
                Ok(Verify::Flag(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Verify, E> {
                match v {
                    "changed" => Ok(Verify::Mode(VerifyMode::Changed)),
                    "full" => Ok(Verify::Mode(VerifyMode::Full)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Body of `POST /v1/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"target": "head", "selector": {"all": true}, "concurrency": 4}))]
pub struct RolloutRequest {
    /// `head`, `phase:N` or `version:V`; older than a tenant's version = rollback.
    #[schema(
        pattern = "^(head|none|phase:[0-9]{1,3}|version:[0-9]{1,20})$",
        example = "head"
    )]
    pub target: String,
    pub selector: Selector,
    /// Waves in order; tenants left over form a last wave `rest`.
    pub waves: Option<Vec<WaveSpec>>,
    /// Tenants migrated at once across all workers (default 8).
    #[schema(minimum = 1, maximum = 1024)]
    pub concurrency: Option<u32>,
    /// Tenants migrated at once per database server (default: `concurrency`).
    #[schema(minimum = 1, maximum = 1024)]
    pub per_server_concurrency: Option<u32>,
    /// Attempts per tenant for transient errors (default 5).
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Exponential backoff with full jitter (default 500 ms .. 30 s).
    pub backoff: Option<Backoff>,
    /// Statement timeout per tenant, seconds (default 300).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_s: Option<u32>,
    /// Default: halt above 10 % failed.
    pub failure_budget: Option<FailureBudget>,
    /// Which probes prove the migration (default `false`, the same as
    /// `"changed"`: each migrated tenant runs the probes of what its run
    /// changed). `true` or `"full"`: every tenant, migrated or already at
    /// the target, runs every probe of the target.
    pub verify: Option<Verify>,
    /// Return the plan and change nothing.
    pub dry_run: Option<bool>,
    /// Higher runs first (plan upgrades use 100; default 0).
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// Back each tenant up (a `pre_migration` backup) inside its task just
    /// before migrating it. A tenant whose backup cannot be taken is not
    /// migrated: the attempt fails as transient and is retried. Tenants
    /// already at the target get none; retries of a task reuse its backup.
    /// Default false.
    pub backup: Option<bool>,
    /// Only with `backup: true` (refused otherwise): a tenant whose migration
    /// failed for good is restored in place from its pre-migration backup
    /// (after a `pre_restore` safety backup of the failed state). The task
    /// still counts as failed in the failure budget. Default false.
    pub restore_on_failure: Option<bool>,
    /// Migrate tenants whose schema drifted from the reference of their
    /// version. By default a task first checks its tenant for drift and
    /// fails, with the differences as its error, when it finds any.
    /// Default false.
    pub allow_drift: Option<bool>,
}

/// Counts of tasks by state.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TaskCounts {
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cancelled: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Wave {
    pub name: String,
    pub size: i64,
    /// The next wave opens this many seconds after this one finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_s: Option<u32>,
    /// The next wave opens on `POST /v1/rollouts/{id}/promote`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

/// Why the next wave of a running rollout is not open yet although the
/// current one finished: its hold.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaveHold {
    /// The finished wave that holds.
    pub wave: String,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: NaiveDateTime,
    /// When the next wave opens by itself; `None` for a manual hold (it
    /// waits for promote).
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub opens_at: Option<NaiveDateTime>,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rollout {
    pub id: String,
    pub target: String,
    pub target_version: Option<String>,
    pub selector: Selector,
    pub waves: Vec<Wave>,
    /// `running`, `paused`, `halted`, `succeeded`, `failed` or `cancelled`
    pub state: String,
    pub current_wave: i32,
    pub concurrency: i32,
    pub per_server_concurrency: i32,
    pub max_attempts: i32,
    pub backoff: Backoff,
    pub timeout_s: i32,
    pub failure_budget: FailureBudget,
    /// `true`: every tenant runs every probe of the target (the request's
    /// `true` or `"full"`); `false`: each migrated tenant runs the probes
    /// of what its run changed.
    pub verify: bool,
    pub priority: i32,
    /// Each tenant is backed up just before it is migrated.
    pub backup: bool,
    /// A tenant whose migration failed for good is restored from that backup.
    pub restore_on_failure: bool,
    /// Tenants whose schema drifted are migrated anyway.
    pub allow_drift: bool,
    pub total: i32,
    pub counts: TaskCounts,
    /// Tenants finished per second so far.
    pub tenants_per_second: Option<f64>,
    /// Seconds left at the current rate.
    pub eta_seconds: Option<f64>,
    pub halt_reason: Option<String>,
    /// Set while the next wave waits for a finished wave's hold.
    pub hold: Option<WaveHold>,
    pub created_by: String,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<NaiveDateTime>,
}

/// One tenant's part of a dry-run plan.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlannedTask {
    pub tenant_id: String,
    pub slug: String,
    pub wave: i32,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `migrate`, `rollback`, `skip` (already at the target) or `verify`
    pub action: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<tenantplane_migrations::Step>,
}

/// The answer to a dry run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RolloutPlan {
    pub dry_run: bool,
    pub target: String,
    pub target_version: Option<String>,
    pub waves: Vec<Wave>,
    pub total: usize,
    pub to_migrate: usize,
    pub tasks: Vec<PlannedTask>,
}

/// One task as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: i64,
    pub tenant_id: String,
    pub slug: String,
    pub wave: i32,
    pub state: String,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub reached_version: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub error_version: Option<String>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<NaiveDateTime>,
    pub duration_ms: Option<i64>,
    /// The `pre_migration` backup taken of the tenant for this task (rollouts
    /// with `backup`; the task's retries reuse it). Null when none was taken:
    /// no backup asked for, the tenant was skipped, or the backup failed.
    pub backup_id: Option<String>,
    /// The migration failed for good and the tenant was restored in place
    /// from `backup_id` (`restore_on_failure`). False with a failed task
    /// means no restore happened; `last_error` then says why when one was
    /// asked for (nothing to undo, or the restore itself failed).
    pub restored: bool,
    /// Every finished attempt, oldest first.
    pub history: Vec<TaskAttempt>,
}

/// One finished attempt of a task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskAttempt {
    pub attempt: i32,
    pub worker: String,
    /// `succeeded`, `retry` (a transient error; the task went back to
    /// pending) or `failed`
    pub outcome: String,
    pub error: Option<String>,
    /// The migration version that failed, when one did.
    pub error_version: Option<String>,
    pub reached_version: Option<String>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: NaiveDateTime,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    pub items: Vec<TaskView>,
    pub next_cursor: Option<String>,
}
