//! `/v1/plans` and `/v1/features`: plans and the feature catalogue.

use actix_web::{get, post, put, web, HttpResponse};
use serde::Serialize;
use tenantplane_flags::plans::{self, Plan};
use tenantplane_migrations::catalogue;

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Every plan, cheapest first.
#[utoipa::path(get, path = "/v1/plans", tag = "plans", security(("bearer" = [])), responses((status = 200, body = [Plan])))]
#[get("/v1/plans")]
pub async fn list(state: web::Data<AppState>, _op: Operator) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || plans::list(&db)).await?))
}

/// Creates a plan.
#[utoipa::path(post, path = "/v1/plans", tag = "plans", security(("bearer" = [])), request_body = Plan,
    responses((status = 201, body = Plan), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/plans")]
pub async fn create(
    state: web::Data<AppState>,
    op: Operator,
    body: web::Json<Plan>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let plan = blocking(move || plans::create(&db, &op.0, body.into_inner())).await?;
    state.changed().await?;
    Ok(HttpResponse::Created().json(plan))
}

/// One plan.
#[utoipa::path(get, path = "/v1/plans/{slug}", tag = "plans", security(("bearer" = [])), params(("slug" = String, Path)),
    responses((status = 200, body = Plan), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/plans/{slug}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || plans::get(&db, &slug)).await?))
}

/// Replaces a plan: name, price, currency, features, fallback, active.
#[utoipa::path(put, path = "/v1/plans/{slug}", tag = "plans", security(("bearer" = [])), params(("slug" = String, Path)),
    request_body = Plan, responses((status = 200, body = Plan), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[put("/v1/plans/{slug}")]
pub async fn update(
    state: web::Data<AppState>,
    op: Operator,
    slug: web::Path<String>,
    body: web::Json<Plan>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let plan = blocking(move || plans::update(&db, &op.0, &slug, body.into_inner())).await?;
    state.changed().await?;
    Ok(HttpResponse::Ok().json(plan))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogueEntry {
    pub feature: &'static str,
    pub phase: u8,
    /// The tenant migration version the feature needs (`null`: none).
    pub requires: Option<&'static str>,
    pub description: &'static str,
}

/// The feature catalogue: each phase feature with the migration it needs.
#[utoipa::path(get, path = "/v1/features", tag = "plans", security(("bearer" = [])), responses((status = 200, body = [CatalogueEntry])))]
#[get("/v1/features")]
pub async fn feature_catalogue(_op: Operator) -> HttpResponse {
    let entries: Vec<CatalogueEntry> = catalogue::FEATURES
        .iter()
        .map(|f| CatalogueEntry {
            feature: f.name,
            phase: f.phase,
            requires: f.requires,
            description: f.description,
        })
        .collect();
    HttpResponse::Ok().json(entries)
}
