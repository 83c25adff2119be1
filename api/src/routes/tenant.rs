//! `/v1/tenant…`: what a tenant key reaches — its own tenant only.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use tenantplane_control_db::states::TenantStatus;
use tenantplane_control_db::Error;
use tenantplane_flags::plans::{self, PlanChange, PlanPreview};
use tenantplane_flags::snapshot::TenantFeatures;
use tenantplane_fleet::registry::{self, Tenant};

use crate::auth::TenantKey;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// The tenant the key belongs to.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = Tenant), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
#[get("/v1/tenant")]
pub async fn me(state: web::Data<AppState>, key: TenantKey) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || registry::get(&db, &key.tenant_id)).await?))
}

/// The tenant's effective features, from memory.
#[utoipa::path(get, path = "/v1/tenant/features", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = TenantFeatures), (status = 401, body = crate::error::ErrorBody)))]
#[get("/v1/tenant/features")]
pub async fn features(
    state: web::Data<AppState>,
    key: TenantKey,
) -> Result<HttpResponse, ApiError> {
    let f = state
        .flags
        .evaluate(&key.tenant_id)
        .ok_or_else(|| ApiError::Domain(Error::not_found("tenant", key.tenant_id)))?;
    Ok(HttpResponse::Ok().json(f))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// The plan to preview (slug).
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")]
    pub plan: String,
}

/// What changing to a plan would do: features gained and lost, and whether a
/// migration is needed first.
#[utoipa::path(get, path = "/v1/tenant/plan/preview", tag = "tenant", security(("bearer" = [])), params(PreviewQuery),
    responses((status = 200, body = PlanPreview), (status = 422, body = crate::error::ErrorBody)))]
#[get("/v1/tenant/plan/preview")]
pub async fn preview(
    state: web::Data<AppState>,
    key: TenantKey,
    q: web::Query<PreviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let snap = state.flags.snapshot();
    Ok(HttpResponse::Ok().json(plans::preview(&snap, &key.tenant_id, &q.plan)?))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub plan: String,
    /// Start a trial of this many days (1 to 365); after it the plan's
    /// fallback applies.
    pub trial_days: Option<u32>,
}

/// Changes the tenant's plan. A downgrade applies at once and drops no data;
/// an upgrade whose features need a newer schema answers 202 and queues the
/// migration: those features turn on when it succeeds.
#[utoipa::path(post, path = "/v1/tenant/plan", tag = "tenant", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat a request safely: the same key and request replay the first answer")), request_body = PlanRequest,
    responses((status = 200, body = PlanChange, description = "changed, or already on that plan (nothing queued)"), (status = 202, body = PlanChange, description = "features wait for a migration"),
        (status = 403, body = crate::error::ErrorBody, description = "`tenant_suspended`: a suspended tenant's key reads only"),
        (status = 409, body = crate::error::ErrorBody, description = "the tenant already had a trial of that plan"),
        (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/tenant/plan")]
pub async fn change_plan(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: TenantKey,
    body: web::Json<PlanRequest>,
) -> Result<HttpResponse, ApiError> {
    writable(&state, &key.tenant_id).await?;
    let body = body.into_inner();
    let scope = key.actor.id.clone();
    let fingerprint = serde_json::json!({"plan": body.plan, "trial_days": body.trial_days});
    crate::idempotent::once(&state, &req, &scope, &fingerprint, || async {
        let (db, snap) = (state.db.clone(), state.flags.snapshot());
        let change = blocking(move || {
            plans::change(
                &db,
                &snap,
                &key.actor,
                &key.tenant_id,
                &body.plan,
                body.trial_days,
            )
        })
        .await?;
        state.changed().await?;
        Ok(if change.rollout.is_some() {
            HttpResponse::Accepted().json(change)
        } else {
            HttpResponse::Ok().json(change)
        })
    })
    .await
}

/// A tenant key writes only while its tenant is active: a suspended tenant
/// reads (its features all `TENANT_SUSPENDED`), every write is 403
/// `tenant_suspended`. Read from the control DB, not the in-memory
/// snapshot, so a suspension made by another process counts at once.
pub(crate) async fn writable(state: &AppState, tenant_id: &str) -> Result<(), ApiError> {
    let (db, id) = (state.db.clone(), tenant_id.to_string());
    let tenant = blocking(move || registry::get(&db, &id)).await?;
    if tenant.status == TenantStatus::Suspended.as_str() {
        return Err(ApiError::TenantSuspended(format!(
            "tenant '{}' is suspended: its key can read, not change anything",
            tenant.slug
        )));
    }
    Ok(())
}
