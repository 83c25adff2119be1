//! Cron schedules: the jobs the control plane starts on its own (backups,
//! restore drills, retention, sweeps) and the record of every fire time.

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer, Serialize};

use crate::rollouts::Selector;

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Schedule {
    pub name: String,
    /// The cron expression as given: 5 fields (`m h dom mon dow`, crontab
    /// numbering: Sunday = 0 or 7) or 6/7 fields with seconds first (the
    /// `cron` crate's numbering: Sunday = 1).
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// The job kind each fire time starts.
    pub job: String,
    pub selector: Option<Selector>,
    /// Job-specific settings, passed to the job as they are.
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Value>,
    pub enabled: bool,
    /// After downtime: `skip` (a fire time more than 60 s late is recorded
    /// `missed`) or `run_once` (the newest missed fire time still runs).
    pub missed: String,
    /// The next fire time after now (`null`: disabled, or never again).
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_fire_at: Option<NaiveDateTime>,
    /// The newest fire time decided (started, missed or skipped).
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_fired_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// Body of `POST /v1/schedules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`, unique
    pub name: String,
    /// `0 2 * * *` (crontab), `0 0 2 * * *` (with seconds) or `@daily`
    pub cron: String,
    /// IANA name, default `UTC`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `backup`, `verify`, `retention`, `export-cleanup`,
    /// `sweep.provisioning` or `sweep.trials`
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// A JSON object of job-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Value>,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `skip` (default) or `run_once`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
}

/// Body of `PATCH /v1/schedules/{name}`: fields left out stay as they are;
/// `selector` and `params` are removed with `null`. A new `cron` or
/// `timezone`, or enabling a disabled schedule, starts counting from now:
/// fire times before the change are never caught up.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Selector>)]
    pub selector: Option<Option<Selector>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Option<serde_json::Value>>,
}

/// A field that is present (even as `null`) is `Some`; a missing one stays
/// `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One fire time of a schedule and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ScheduleRun {
    pub id: i64,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub fire_at: NaiveDateTime,
    /// `started`, `missed` or `skipped_overlap`
    pub state: String,
    /// The job a started run queued (`null` once finished jobs were pruned).
    pub job_id: Option<i64>,
    /// That job's state: `pending`, `running`, `succeeded` or `dead`.
    pub job_state: Option<String>,
    /// That job's latest error.
    pub job_error: Option<String>,
    /// Set on a catch-up summary: fire times missed but not listed one by one.
    pub note: Option<String>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub decided_at: NaiveDateTime,
}
