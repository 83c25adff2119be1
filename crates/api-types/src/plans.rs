//! Plans and plan changes.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// A plan as the API shows and takes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", example = "pro")]
    pub slug: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Price in minor units (cents).
    #[schema(minimum = 0)]
    pub price_cents: i64,
    /// ISO 4217, e.g. `USD`.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    pub currency: String,
    /// Catalogue feature names.
    pub features: Vec<String>,
    /// Plan an expired trial falls back to (slug).
    #[serde(default)]
    pub fallback: Option<String>,
    /// Inactive plans keep their tenants but take no new ones.
    #[serde(default = "yes")]
    pub active: bool,
}

/// What changing to a plan would do.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanPreview {
    pub from: Option<String>,
    pub to: String,
    /// Features the tenant would gain (on now or once migrated).
    pub gained: Vec<String>,
    /// Features the tenant would lose at once (no data is dropped).
    pub lost: Vec<String>,
    pub migration_needed: bool,
    /// The schema version the new plan's features need.
    pub target_version: Option<String>,
    /// Gained features that wait for that migration.
    pub waiting_for_migration: Vec<String>,
}

/// The result of a plan change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PlanChange {
    pub tenant: String,
    pub plan: String,
    pub previous_plan: Option<String>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub trial_ends_at: Option<NaiveDateTime>,
    /// The one-tenant rollout that brings the schema the new features need.
    pub rollout: Option<String>,
    /// Features that turn on once that rollout succeeds.
    pub waiting_for_migration: Vec<String>,
}
