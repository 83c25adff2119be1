//! Backup retention as the API takes and reports it: the policy, a run's
//! request, and what the run kept and deleted. The rules themselves live in
//! `tenantplane_backup::retention`.

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::rollouts::Selector;

/// The largest count a policy rule takes.
pub const MAX_COUNT: u32 = 1000;

/// How many backups of each tenant to keep, grandfather-father-son style.
/// Whatever the policy says, pinned backups, backups in progress and the
/// tenant's newest verified backup are kept, and a backup is deleted only
/// when a newer verified backup of that tenant exists.
///
/// As JSON (a schedule's `params`, an API request): any of the four fields,
/// the others take their defaults; unknown fields, negative, fractional or
/// non-numeric counts, counts above 1000, and all four 0 are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "RawPolicy")]
pub struct Policy {
    /// The newest N usable backups. Default 7.
    #[schema(minimum = 0, maximum = 1000, default = 7)]
    pub keep_last: u32,
    /// The newest backup of each of the newest N UTC days. Default 7.
    #[schema(minimum = 0, maximum = 1000, default = 7)]
    pub daily: u32,
    /// The newest backup of each of the newest N ISO weeks. Default 4.
    #[schema(minimum = 0, maximum = 1000, default = 4)]
    pub weekly: u32,
    /// The newest backup of each of the newest N months. Default 6.
    #[schema(minimum = 0, maximum = 1000, default = 6)]
    pub monthly: u32,
}

impl Policy {
    pub const DEFAULT: Policy = Policy {
        keep_last: 7,
        daily: 7,
        weekly: 4,
        monthly: 6,
    };

    /// Each count 0 to [`MAX_COUNT`], and not all of them 0; the error says
    /// which rule is broken.
    pub fn check(&self) -> Result<(), String> {
        for (name, n) in self.fields() {
            if n > MAX_COUNT {
                return Err(format!(
                    "retention {name} is {n}: at most {MAX_COUNT} (0 turns the rule off)"
                ));
            }
        }
        if self.fields().iter().all(|(_, n)| *n == 0) {
            return Err(
                "a retention policy that keeps nothing is refused: keep_last, daily, \
                 weekly and monthly are all 0; set at least one above 0"
                    .into(),
            );
        }
        Ok(())
    }

    fn fields(&self) -> [(&'static str, u32); 4] {
        [
            ("keep_last", self.keep_last),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
        ]
    }

    /// The policy in a schedule's `params`: absent or `null` → the
    /// defaults; otherwise a JSON object of [`Policy`] fields, checked.
    pub fn from_params(params: Option<&Value>) -> Result<Policy, String> {
        match params {
            None | Some(Value::Null) => Ok(Policy::default()),
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone())
                .map_err(|e| format!("invalid retention params: {e}")),
            Some(other) => Err(format!(
                "invalid retention params: a JSON object like \
                 {{\"keep_last\":7,\"daily\":7,\"weekly\":4,\"monthly\":6}} is expected, not {other}"
            )),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::DEFAULT
    }
}

/// A policy as written: each count any JSON value, so that a bad one is
/// refused with its name and the rule it breaks (serde's own message for
/// `-1` into a `u32` says only "expected u32").
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "retention policy")]
struct RawPolicy {
    #[serde(default, deserialize_with = "present")]
    keep_last: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    daily: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    weekly: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    monthly: Option<Value>,
}

/// A field that is there, `null` included (absent is `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn count(name: &str, value: Option<Value>, default: u32) -> Result<u32, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    let rule = format!("a whole number from 0 to {MAX_COUNT} (0 turns the rule off)");
    match &value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return u32::try_from(u)
                    .ok()
                    .filter(|u| *u <= MAX_COUNT)
                    .ok_or_else(|| format!("retention {name} is {u}: at most {MAX_COUNT}"));
            }
            // `128.0` is a whole number too (JSON Schema's `integer`).
            if let Some(f) = n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0) {
                return Some(f)
                    .filter(|f| *f <= f64::from(MAX_COUNT))
                    .map(|f| f as u32)
                    .ok_or_else(|| format!("retention {name} is {n}: at most {MAX_COUNT}"));
            }
            if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) {
                return Err(format!(
                    "retention {name} is {n}: a count cannot be negative; it is {rule}"
                ));
            }
            Err(format!("retention {name} is {n}: it must be {rule}"))
        }
        other => Err(format!("retention {name} is {other}: it must be {rule}")),
    }
}

impl TryFrom<RawPolicy> for Policy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Policy, String> {
        let d = Policy::DEFAULT;
        let p = Policy {
            keep_last: count("keep_last", raw.keep_last, d.keep_last)?,
            daily: count("daily", raw.daily, d.daily)?,
            weekly: count("weekly", raw.weekly, d.weekly)?,
            monthly: count("monthly", raw.monthly, d.monthly)?,
        };
        p.check()?;
        Ok(p)
    }
}

/// A retention run as the API asks for it (`POST /v1/backups/retention`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    /// Which live tenants (the rollout selector); with neither this nor
    /// `tenant`, all of them.
    #[serde(default)]
    pub selector: Option<Selector>,
    /// One tenant by id or slug (a deleted one too); not with `selector`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Absent: the defaults (keep_last 7, daily 7, weekly 4, monthly 6).
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Decide and report, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Keep,
    Delete,
}

/// What retention does with one backup, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub id: String,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    /// `pending`, `running`, `completed`, `verified` or `failed`
    pub state: String,
    pub action: Action,
    /// `in progress`, `pinned`, `newest verified`, `keep-last`,
    /// `daily 2026-11-28`, `weekly 2026-W48`, `monthly 2026-11`, `no newer
    /// verified backup` (kept); `failed`, `not kept by the policy` (deleted).
    pub reason: String,
}

impl Decision {
    pub fn is_delete(&self) -> bool {
        self.action == Action::Delete
    }
}

/// A deletion that failed; the backup stays and the next run tries again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Failure {
    pub id: String,
    /// Why it was to be deleted.
    pub reason: String,
    /// What went wrong (the whole error chain).
    pub error: String,
}

/// One tenant's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantReport {
    pub tenant_id: String,
    pub slug: String,
    /// Newest first.
    pub kept: Vec<Decision>,
    /// Deleted (in a dry run: would be deleted), newest first.
    pub deleted: Vec<Decision>,
    pub errors: Vec<Failure>,
}

/// What a retention run did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub dry_run: bool,
    pub policy: Policy,
    /// How many tenants the scope covered.
    pub tenants_checked: usize,
    /// The tenants that have backups, by tenant id.
    pub tenants: Vec<TenantReport>,
    pub kept: usize,
    pub deleted: usize,
    pub errors: usize,
}
