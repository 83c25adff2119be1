//! Per-tenant features, overrides and API keys (operator routes).

use actix_web::{delete, get, post, put, web, HttpResponse};
use tenantplane_access::keys::{self, IssuedKey, KeyRequest};
use tenantplane_control_db::Error;
use tenantplane_flags::overrides::{self, Override, OverrideRequest};
use tenantplane_flags::snapshot::TenantFeatures;

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// A tenant's effective features, with the reason for each.
#[utoipa::path(get, path = "/v1/tenants/{id}/features", tag = "features", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = TenantFeatures), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/tenants/{id}/features")]
pub async fn tenant_features(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let features = state
        .flags
        .evaluate(&id)
        .ok_or_else(|| ApiError::Domain(Error::not_found("tenant", id.as_str())))?;
    Ok(HttpResponse::Ok().json(features))
}

/// Turns a feature on or off for a tenant regardless of its plan.
#[utoipa::path(put, path = "/v1/tenants/{id}/features/{feature}", tag = "features", security(("bearer" = [])),
    params(("id" = String, Path), ("feature" = String, Path)), request_body = OverrideRequest,
    responses((status = 200, body = Override), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[put("/v1/tenants/{id}/features/{feature}")]
pub async fn set_override(
    state: web::Data<AppState>,
    op: Operator,
    path: web::Path<(String, String)>,
    body: web::Json<OverrideRequest>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let (id, feature) = path.into_inner();
    let o = blocking(move || overrides::set(&db, &op.0, &id, &feature, body.into_inner())).await?;
    state.changed().await?;
    Ok(HttpResponse::Ok().json(o))
}

/// Removes an override: the plan decides again.
#[utoipa::path(delete, path = "/v1/tenants/{id}/features/{feature}", tag = "features", security(("bearer" = [])),
    params(("id" = String, Path), ("feature" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
#[delete("/v1/tenants/{id}/features/{feature}")]
pub async fn clear_override(
    state: web::Data<AppState>,
    op: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let (id, feature) = path.into_inner();
    blocking(move || overrides::clear(&db, &op.0, &id, &feature)).await?;
    state.changed().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Issues a tenant API key; the key is shown in this answer only.
#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "features", security(("bearer" = [])), params(("id" = String, Path)),
    request_body(content = Option<KeyRequest>, description = "optional"),
    responses((status = 201, body = IssuedKey), (status = 404, body = crate::error::ErrorBody)))]
#[post("/v1/tenants/{id}/keys")]
pub async fn issue_key(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    // The body is optional, but one that is there must parse: an
    // `Option<Json<_>>` would take garbage for "no body".
    let req: KeyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KeyRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let key = blocking(move || keys::issue(&db, &op.0, &id, req)).await?;
    state.changed().await?;
    Ok(HttpResponse::Created().json(key))
}

/// Revokes a tenant API key at once.
#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key_id}", tag = "features", security(("bearer" = [])),
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
#[delete("/v1/tenants/{id}/keys/{key_id}")]
pub async fn revoke_key(
    state: web::Data<AppState>,
    op: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let (id, key_id) = path.into_inner();
    blocking(move || keys::revoke(&db, &op.0, &id, &key_id)).await?;
    state.changed().await?;
    Ok(HttpResponse::NoContent().finish())
}
