//! `/v1/webhooks`: the operators' webhook endpoints (Standard Webhooks
//! signing), their secrets, and replays.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::Deserialize;
use tenantplane_api_types::notify::{
    NewWebhook, ReplayResult, RotateSecret, Webhook, WebhookPatch, WebhookWithSecret,
};
use tenantplane_notify::endpoints;

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Every endpoint, oldest first (never with secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    security(("bearer" = [])),
    responses((status = 200, body = [Webhook]), (status = 401, body = crate::error::ErrorBody)))]
#[get("/v1/webhooks")]
pub async fn list(state: web::Data<AppState>, _op: Operator) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || endpoints::list(&db)).await?))
}

/// Registers an endpoint; the answer carries its `whsec_` secret, shown
/// this once. The URL must be http(s) and, unless
/// `TENANTPLANE_WEBHOOK_ALLOW_PRIVATE=true`, resolve to public addresses.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    security(("bearer" = [])), request_body = NewWebhook,
    responses((status = 201, body = WebhookWithSecret), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody,
            description = "not an http(s) URL, an unknown event kind, a private address")))]
#[post("/v1/webhooks")]
pub async fn create(
    state: web::Data<AppState>,
    op: Operator,
    body: web::Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let allow = state.webhook_allow_private;
    let new = body.into_inner();
    let created = blocking(move || endpoints::create(&db, &op.0, new, allow)).await?;
    Ok(HttpResponse::Created().json(created))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/webhooks/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || endpoints::get(&db, &id)).await?))
}

/// Changes url, events, description or enabled (enabling clears the
/// failure streak).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])), params(("id" = String, Path)), request_body = WebhookPatch,
    responses((status = 200, body = Webhook), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[patch("/v1/webhooks/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Json<WebhookPatch>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let allow = state.webhook_allow_private;
    let patch = body.into_inner();
    let w = blocking(move || endpoints::update(&db, &op.0, &id, patch, allow)).await?;
    Ok(HttpResponse::Ok().json(w))
}

/// Deletes an endpoint; its pending deliveries end `skipped`.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
#[delete("/v1/webhooks/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    blocking(move || endpoints::delete(&db, &op.0, &id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new secret (shown once); the old one keeps signing next to it for
/// `grace_s` seconds (default a day).
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    security(("bearer" = [])), params(("id" = String, Path)),
    request_body(content = Option<RotateSecret>),
    responses((status = 200, body = WebhookWithSecret), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/webhooks/{id}/rotate-secret")]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: Option<web::Json<RotateSecret>>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let req = body.map(web::Json::into_inner).unwrap_or_default();
    let w = blocking(move || endpoints::rotate_secret(&db, &op.0, &id, req)).await?;
    Ok(HttpResponse::Ok().json(w))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    /// RFC 3339 time: every event since then is sent again.
    #[param(format = DateTime)]
    pub since: String,
}

/// Queues every event since `since` of the kinds the endpoint wants again
/// (same event ids: receivers deduplicate what they already have).
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks",
    security(("bearer" = [])), params(("id" = String, Path), ReplayQuery),
    responses((status = 200, body = ReplayResult), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the endpoint is disabled")))]
#[post("/v1/webhooks/{id}/replay")]
pub async fn replay(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    q: web::Query<ReplayQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = chrono::DateTime::parse_from_rfc3339(&q.since)
        .map_err(|e| ApiError::BadRequest(format!("since: not an RFC 3339 time ({e})")))?
        .naive_utc();
    let db = state.db.clone();
    let r = blocking(move || endpoints::replay(&db, &op.0, &id, since)).await?;
    Ok(HttpResponse::Ok().json(r))
}
