//! The tenants a fan-out job covers (backups, verifications, retention,
//! drift checks): a rollout selector resolved to tenant ids in one query.

use diesel::prelude::*;
use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::db::{ControlBackend, ControlConnection};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::{plans, tenants};
use tenantplane_control_db::states::TenantStatus;

use crate::registry::with_labels;
use crate::servers;

/// The ids of the live (not deleted, not provisioning) tenants a selector
/// picks; `None` or `{"all": true}` picks all. Names must exist (a typo
/// must not quietly back up fewer tenants).
///
/// The same rules as `tenantplane_rollout::selection`, as one query: the
/// rollout's version reads in pages and orders for waves, which a fan-out
/// (backups, verifications, drift checks) does not need.
pub fn select_tenants(
    conn: &mut ControlConnection,
    selector: Option<&Selector>,
) -> Result<Vec<String>> {
    let mut q = tenants::table
        .filter(tenants::deleted_at.is_null())
        .filter(tenants::status.ne(TenantStatus::Provisioning.as_str()))
        .select(tenants::id)
        .into_boxed::<ControlBackend>();
    let Some(s) = selector else {
        return Ok(q.order(tenants::id).load(conn)?);
    };
    if s.all == Some(false) {
        return Err(Error::invalid("selector.all must be true when given"));
    }
    if let Some(wanted) = &s.tenants {
        let found: Vec<(String, String)> = tenants::table
            .filter(tenants::deleted_at.is_null())
            .filter(tenants::id.eq_any(wanted).or(tenants::slug.eq_any(wanted)))
            .select((tenants::id, tenants::slug))
            .load(conn)?;
        let unknown: Vec<&String> = wanted
            .iter()
            .filter(|w| !found.iter().any(|(id, slug)| id == *w || slug == *w))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::invalid(format!(
                "unknown tenants in selector: {unknown:?}"
            )));
        }
        q = q.filter(tenants::id.eq_any(found.into_iter().map(|(id, _)| id).collect::<Vec<_>>()));
    }
    if let Some(wanted) = &s.plans {
        let ids: Vec<String> = plans::table
            .filter(plans::slug.eq_any(wanted).or(plans::id.eq_any(wanted)))
            .select(plans::id)
            .load(conn)?;
        q = q.filter(tenants::plan_id.eq_any(ids));
    }
    if let Some(labels) = &s.labels {
        q = with_labels(q, labels);
    }
    if let Some(wanted) = &s.servers {
        let mut ids = Vec::with_capacity(wanted.len());
        for w in wanted {
            let server = servers::find(conn, w)
                .map_err(|_| Error::invalid(format!("unknown server in selector: '{w}'")))?;
            ids.push(server.id);
        }
        q = q.filter(tenants::server_id.eq_any(ids));
    }
    Ok(q.order(tenants::id).load(conn)?)
}
