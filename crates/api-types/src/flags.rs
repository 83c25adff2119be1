//! Feature evaluation answers.

use chrono::NaiveDateTime;
use serde::Serialize;

/// Why a feature is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    OverrideOn,
    OverrideOff,
    Plan,
    NotInPlan,
    TrialExpired,
    PendingMigration,
    TenantSuspended,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FeatureState {
    pub feature: &'static str,
    pub enabled: bool,
    pub reason: Reason,
    pub phase: u8,
}

/// The answer of `GET /v1/tenants/{id}/features` and `GET /v1/tenant/features`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantFeatures {
    pub tenant: String,
    pub slug: String,
    /// The tenant's plan (slug).
    pub plan: Option<String>,
    /// The plan features come from: the fallback once a trial expired.
    pub effective_plan: Option<String>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub trial_ends_at: Option<NaiveDateTime>,
    pub schema_version: Option<String>,
    pub features: Vec<FeatureState>,
}
