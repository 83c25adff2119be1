//! `/v1/audit`: who changed what, newest first.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use tenantplane_control_db::audit::{self, AuditEntry};
use tenantplane_control_db::Error;
use tenantplane_fleet::registry;

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Tenant id or slug.
    pub tenant: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The audit log: actor, action, resource, before/after, ip, user agent.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = [AuditEntry]), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/audit")]
pub async fn list(
    state: web::Data<AppState>,
    _op: Operator,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Domain(Error::invalid("limit must be 1 to 1000")));
    }
    let entries = blocking(move || {
        let mut conn = db.conn()?;
        // Deleted tenants keep their history: look them up including deleted.
        let tenant_id = match &q.tenant {
            Some(t) => Some(registry::find_any(&mut conn, t)?.id),
            None => None,
        };
        audit::list(&mut conn, tenant_id.as_deref(), limit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(entries))
}
