//! `/v1/tenants`: the tenant registry.

use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tenantplane_control_db::validate;
use tenantplane_flags::plans;
use tenantplane_fleet::registry::{self, NewTenant, Tenant, TenantFilter, TenantPage, TenantPatch};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `provisioning`, `active` or `suspended`
    #[param(pattern = "^(provisioning|active|suspended)$")]
    pub status: Option<String>,
    /// `key=value`; repeat the parameter to require several labels
    #[param(pattern = "^[A-Za-z0-9._/-]{1,63}=[A-Za-z0-9._/-]{1,63}$")]
    pub label: Option<String>,
    /// server id or name
    pub server: Option<String>,
    /// the highest phase the schema reached (0-7)
    #[param(minimum = 0, maximum = 7)]
    pub phase: Option<u8>,
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")]
    pub plan: Option<String>,
    /// 1 to 500, default 50
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page
    pub cursor: Option<String>,
}

/// Lists tenants, filtered, a page at a time, ordered by slug.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = TenantPage), (status = 400, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[get("/v1/tenants")]
pub async fn list(
    state: web::Data<AppState>,
    _op: Operator,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Parsed by hand: `label` may repeat, which serde_urlencoded's structs
    // cannot express.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
    let mut filter = TenantFilter::default();
    for (k, v) in pairs {
        let number = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("{k} must be a number, not {v:?}")))
        };
        match k.as_str() {
            "status" => filter.status = Some(v),
            "label" => filter.labels.push(validate::label_pair(&v)?),
            "server" => filter.server = Some(v),
            "plan" => filter.plan = Some(v),
            "cursor" => filter.cursor = Some(v),
            "limit" => filter.limit = Some(number(&v)?),
            "phase" => {
                let n = number(&v)?;
                filter.phase = Some(
                    u8::try_from(n)
                        .map_err(|_| ApiError::BadRequest(format!("phase out of range: {n}")))?,
                );
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {other:?}"
                )))
            }
        }
    }
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || registry::list(&db, &filter)).await?))
}

/// Creates a tenant, provisions its database and migrates it to `schema`.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat a request safely: the same key and request replay the first answer")),
    request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 400, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody, description = "the tenant database could not be provisioned; nothing was kept")))]
#[post("/v1/tenants")]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    op: Operator,
    body: web::Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let scope = op.0.id.clone();
    crate::idempotent::once(&state, &req, &scope, &body.clone(), || async {
        let db = state.db.clone();
        let tenant = blocking(move || registry::create(&db, &op.0, body)).await?;
        state.changed().await?;
        Ok(HttpResponse::Created().json(tenant))
    })
    .await
}

/// One tenant by id or slug.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/tenants/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || registry::get(&db, &id)).await?))
}

/// Changes name, labels, contact e-mail, status (`active`/`suspended`) or
/// plan, with a trial of it if `trial_days` is given (an operator may grant
/// a tenant a trial it already had).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[patch("/v1/tenants/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Json<TenantPatch>,
) -> Result<HttpResponse, ApiError> {
    let (db, snap) = (state.db.clone(), state.flags.snapshot());
    let mut patch = body.into_inner();
    let plan = patch.plan.take();
    let trial_days = patch.trial_days.take();
    let tenant = blocking(move || {
        if trial_days.is_some() && plan.is_none() {
            return Err(tenantplane_control_db::Error::invalid(
                "trial_days goes with plan: the trial is of that plan",
            ));
        }
        // Check the plan before changing anything, so bad input changes nothing.
        if let Some(p) = &plan {
            match snap.plan_by_slug(p) {
                Some(info) if info.active => {}
                Some(_) => {
                    return Err(tenantplane_control_db::Error::invalid(format!(
                        "plan '{p}' takes no new tenants"
                    )))
                }
                None => {
                    return Err(tenantplane_control_db::Error::invalid(format!(
                        "unknown plan '{p}'"
                    )))
                }
            }
        }
        let only_plan = patch.name.is_none()
            && patch.labels.is_none()
            && patch.contact_email.is_none()
            && patch.status.is_none();
        let tenant = if only_plan && plan.is_some() {
            registry::get(&db, &id)?
        } else {
            registry::patch(&db, &op.0, &id, patch)?
        };
        match plan {
            Some(p) => {
                plans::change(&db, &snap, &op.0, &tenant.id, &p, trial_days)?;
                registry::get(&db, &tenant.id)
            }
            None => Ok(tenant),
        }
    })
    .await?;
    state.changed().await?;
    Ok(HttpResponse::Ok().json(tenant))
}

/// Soft-deletes a tenant: hidden from the API, its database kept.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
#[delete("/v1/tenants/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    blocking(move || registry::delete(&db, &op.0, &id)).await?;
    state.changed().await?;
    Ok(HttpResponse::NoContent().finish())
}
