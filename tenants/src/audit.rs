//! The control plane's audit log: who changed what, with before/after JSON.

use chrono::Utc;
use diesel::prelude::*;
use serde::Serialize;

use crate::db::ControlConnection;
use crate::error::Result;
use crate::schema::audit_log;

/// Who is making a change, and from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// `operator`, `operator:<token id>`, `tenant-key:<key id>`, `system`, …
    pub id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    pub fn system(what: &str) -> Self {
        Actor {
            id: format!("system:{what}"),
            ..Actor::default()
        }
    }
}

/// One change to record.
pub struct Change<'a> {
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Records a change; call it inside the transaction that makes the change so
/// the log never shows a change that did not happen.
pub fn record(conn: &mut ControlConnection, actor: &Actor, change: Change<'_>) -> Result<()> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor.eq(&actor.id),
            audit_log::action.eq(change.action),
            audit_log::resource_type.eq(change.resource_type),
            audit_log::resource_id.eq(change.resource_id),
            audit_log::tenant_id.eq(change.tenant_id),
            audit_log::before_state.eq(change.before.map(|v| v.to_string())),
            audit_log::after_state.eq(change.after.map(|v| v.to_string())),
            audit_log::ip_address.eq(actor.ip.as_deref()),
            audit_log::user_agent.eq(actor.user_agent.as_deref()),
            audit_log::created_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Serialises a view for the log (never fails for our plain structs).
pub fn snapshot<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

/// One row of the audit log as the API shows it.
#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = audit_log)]
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

/// Newest first, optionally for one tenant.
pub fn list(
    conn: &mut ControlConnection,
    tenant_id: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let mut q = audit_log::table
        .select(AuditEntry::as_select())
        .into_boxed();
    if let Some(t) = tenant_id {
        q = q.filter(audit_log::tenant_id.eq(t.to_string()));
    }
    Ok(q.order(audit_log::id.desc()).limit(limit).load(conn)?)
}
