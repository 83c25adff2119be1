//! The audit log: newest first, filtered by tenant (id or slug) and action
//! (a prefix: `plan.` finds every plan change), paged by the last id seen;
//! filters and cursor live in the URL.

use actix_web::{get, web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use tenantplane_control_db::audit::{self, AuditFilter};
use tenantplane_control_db::Error;
use tenantplane_fleet::registry;

use super::backups::clip;
use super::page::{html, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

#[derive(Deserialize, Default, Clone)]
pub struct Query {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    action: String,
    /// Entries older than this id (the next page).
    #[serde(default)]
    before: String,
}

impl Query {
    /// The filters as a query string, without the cursor.
    fn query(&self) -> String {
        serde_urlencoded::to_string([("tenant", &self.tenant), ("action", &self.action)])
            .unwrap_or_default()
    }
}

pub struct EntryLine {
    id: i64,
    when: String,
    actor: String,
    action: String,
    resource: String,
    tenant_id: String,
    before: String,
    after: String,
    from: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    layout: Layout,
    q: Query,
    query: String,
    entries: Vec<EntryLine>,
    next: Option<i64>,
}

const PAGE: i64 = 50;

#[get("/audit")]
pub async fn page(
    state: web::Data<AppState>,
    s: ConsoleSession,
    q: web::Query<Query>,
) -> Result<HttpResponse, ConsoleError> {
    let q = q.into_inner();
    let before_id = match q.before.trim() {
        "" => None,
        b => Some(
            b.parse::<i64>()
                .map_err(|_| Error::invalid(format!("before must be an entry id, not {b:?}")))?,
        ),
    };
    let tenant = Some(q.tenant.trim().to_string()).filter(|t| !t.is_empty());
    let action = Some(q.action.trim().to_string()).filter(|a| !a.is_empty());
    if action.as_ref().is_some_and(|a| a.len() > 100) {
        return Err(Error::invalid("the action filter is at most 100 characters").into());
    }
    let db = state.db.clone();
    let (entries, next) = blocking(move || {
        let mut conn = db.conn()?;
        // Deleted tenants keep their history: looked up including deleted.
        let tenant_id = match &tenant {
            Some(t) => Some(registry::find_any(&mut conn, t)?.id),
            None => None,
        };
        audit::page(
            &mut conn,
            &AuditFilter {
                tenant_id,
                action_prefix: action,
                before_id,
                limit: PAGE,
            },
        )
    })
    .await?;
    html(&AuditPage {
        layout: Layout::new("Audit log", Some(s.csrf()), "audit"),
        query: q.query(),
        q,
        entries: entries
            .into_iter()
            .map(|e| EntryLine {
                id: e.id,
                when: e.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                actor: e.actor,
                action: e.action,
                resource: match e.resource_id {
                    Some(id) => format!("{} {id}", e.resource_type),
                    None => e.resource_type,
                },
                tenant_id: e.tenant_id.unwrap_or_default(),
                before: e
                    .before_state
                    .as_deref()
                    .map(|b| clip(b, 300))
                    .unwrap_or_default(),
                after: e
                    .after_state
                    .as_deref()
                    .map(|a| clip(a, 300))
                    .unwrap_or_default(),
                from: e.ip_address.unwrap_or_default(),
            })
            .collect(),
        next,
    })
}
