//! The control plane's audit log: who changed what, with before/after JSON.

use chrono::Utc;
use diesel::prelude::*;
use serde::Serialize;
pub use tenantplane_api_types::audit::AuditEntry;

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

type AuditRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    chrono::NaiveDateTime,
);

/// Which entries [`page`] returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant's entries (its id).
    pub tenant_id: Option<String>,
    /// Only actions starting with this (`plan.` finds `plan.create` and
    /// `plan.update`; a whole action name finds just it).
    pub action_prefix: Option<String>,
    /// Only entries older than this id: the next page after the last id seen.
    pub before_id: Option<i64>,
    /// 1 to 1000.
    pub limit: i64,
}

/// One page of the log, newest first, with the id to pass as `before_id`
/// for the next page (`None`: this was the last).
pub fn page(
    conn: &mut ControlConnection,
    filter: &AuditFilter,
) -> Result<(Vec<AuditEntry>, Option<i64>)> {
    if !(1..=1000).contains(&filter.limit) {
        return Err(crate::Error::invalid("limit must be 1 to 1000"));
    }
    let mut q = audit_log::table
        .select((
            audit_log::id,
            audit_log::actor,
            audit_log::action,
            audit_log::resource_type,
            audit_log::resource_id,
            audit_log::tenant_id,
            audit_log::before_state,
            audit_log::after_state,
            audit_log::ip_address,
            audit_log::user_agent,
            audit_log::created_at,
        ))
        .into_boxed();
    if let Some(t) = &filter.tenant_id {
        q = q.filter(audit_log::tenant_id.eq(t.clone()));
    }
    if let Some(a) = filter.action_prefix.as_deref().filter(|a| !a.is_empty()) {
        // LIKE's wildcards in the operator's text match themselves.
        let escaped = a
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q = q.filter(audit_log::action.like(format!("{escaped}%")).escape('\\'));
    }
    if let Some(b) = filter.before_id {
        q = q.filter(audit_log::id.lt(b));
    }
    let mut rows: Vec<AuditRow> = q
        .order(audit_log::id.desc())
        .limit(filter.limit + 1)
        .load(conn)?;
    let next = if rows.len() as i64 > filter.limit {
        rows.truncate(filter.limit as usize);
        rows.last().map(|r| r.0)
    } else {
        None
    };
    Ok((rows.into_iter().map(entry).collect(), next))
}

fn entry(
    (
        id,
        actor,
        action,
        resource_type,
        resource_id,
        tenant_id,
        before_state,
        after_state,
        ip_address,
        user_agent,
        created_at,
    ): AuditRow,
) -> AuditEntry {
    AuditEntry {
        id,
        actor,
        action,
        resource_type,
        resource_id,
        tenant_id,
        before_state,
        after_state,
        ip_address,
        user_agent,
        created_at,
    }
}

/// Newest first, optionally for one tenant.
pub fn list(
    conn: &mut ControlConnection,
    tenant_id: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let filter = AuditFilter {
        tenant_id: tenant_id.map(str::to_string),
        limit,
        ..AuditFilter::default()
    };
    Ok(page(conn, &filter)?.0)
}
