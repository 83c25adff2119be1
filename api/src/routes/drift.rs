//! Drift: `GET /v1/tenants/{id}/drift` checks one tenant now;
//! `POST /v1/drift` queues the checks of a selection (a `drift` job);
//! `GET /v1/drift` lists the last check of each tenant.

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use tenantplane_api_types::drift::{DriftPage, DriftQueued, DriftReport, DriftRequest};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Compares the tenant's schema now with the reference schema of the
/// version the control database records for it, records the result (which
/// flags a drifted tenant in its JSON) and answers with the differences.
#[utoipa::path(get, path = "/v1/tenants/{id}/drift", tag = "drift", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = DriftReport),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the tenant is still being provisioned"),
        (status = 503, body = crate::error::ErrorBody, description = "the tenant database could not be read")))]
#[get("/v1/tenants/{id}/drift")]
pub async fn check(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let report = blocking(move || tenantplane_drift::check_tenant(&db, &id)).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Queues a drift check of every selected tenant: one `drift` job, which
/// queues a `drift.tenant` job per tenant; their results land in
/// `GET /v1/drift` and in each tenant's `drift`.
#[utoipa::path(post, path = "/v1/drift", tag = "drift", security(("bearer" = [])),
    request_body = DriftRequest,
    responses((status = 202, body = DriftQueued),
        (status = 400, body = crate::error::ErrorBody, description = "malformed body"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "an empty selector, unknown names, or no tenant matched")))]
#[post("/v1/drift")]
pub async fn queue(
    state: web::Data<AppState>,
    _op: Operator,
    body: web::Json<DriftRequest>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let req = body.into_inner();
    let queued = blocking(move || tenantplane_drift::queue(&db, &req.selector)).await?;
    Ok(HttpResponse::Accepted().json(queued))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    /// Only tenants whose last check found differences.
    pub drifted: Option<bool>,
}

/// The last drift check of every tenant checked so far, by slug.
#[utoipa::path(get, path = "/v1/drift", tag = "drift", security(("bearer" = [])),
    params(DriftQuery),
    responses((status = 200, body = DriftPage),
        (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody)))]
#[get("/v1/drift")]
pub async fn list(
    state: web::Data<AppState>,
    _op: Operator,
    q: web::Query<DriftQuery>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let drifted = q.drifted.unwrap_or(false);
    let items = blocking(move || tenantplane_drift::store::list(&db, drifted)).await?;
    Ok(HttpResponse::Ok().json(DriftPage { items }))
}
