//! The audit log.

use serde::Serialize;

/// One row of the audit log as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub tenant_id: Option<String>,
    pub before_state: Option<String>,
    pub after_state: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
}
