//! Feature overrides and tenant keys.

use chrono::{NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// Body of `PUT /v1/tenants/{id}/features/{feature}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    pub enabled: bool,
    pub reason: Option<String>,
    /// RFC 3339; the override stops applying then.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Override {
    pub tenant: String,
    pub feature: String,
    pub enabled: bool,
    pub reason: Option<String>,
    pub actor: String,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
}
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// A label for the key, e.g. `pos-terminal-1`.
    pub name: Option<String>,
}

/// The one time a key is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// Shown only now; stored as a hash.
    pub key: String,
}
