//! `/v1/tenants/{id}/move`: moving a tenant to another database server
//! (a durable job; see `tenantplane_backup::moving`).

use actix_web::{get, post, web, HttpResponse};
use tenantplane_api_types::servers::{MoveRequest, MoveView};
use tenantplane_backup::moving;

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

fn view(m: moving::MoveStatus) -> MoveView {
    MoveView {
        job_id: m.job_id,
        tenant_id: m.job.tenant_id,
        from_server: m.job.from_server,
        to_server: m.job.to_server,
        state: m.state,
        last_error: m.last_error,
    }
}

/// Moves a tenant to another server: a backup of it is restored on the
/// target, checked against the backup's manifest, the tenant's placement
/// is switched in one transaction, then the source is dropped. Runs as a
/// job under the tenant's lock (no migration meanwhile) and survives a
/// crash; answers at once. A move already queued for the tenant is
/// returned as it is.
#[utoipa::path(post, path = "/v1/tenants/{id}/move", tag = "tenants", operation_id = "tenants_move", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    request_body = MoveRequest,
    responses((status = 202, body = MoveView),
        (status = 400, body = crate::error::ErrorBody, description = "the body is not JSON of this shape"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the tenant is provisioning or being migrated, already on that server, or the target takes no new tenants or is full"),
        (status = 422, body = crate::error::ErrorBody, description = "an unknown server, or one of another kind")))]
#[post("/v1/tenants/{id}/move")]
pub async fn start(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Json<MoveRequest>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let server = body.into_inner().server;
    let m = blocking(move || moving::start_move(&db, &op.0, &id, &server)).await?;
    Ok(HttpResponse::Accepted().json(view(m)))
}

/// The tenant's latest move and its job's state.
#[utoipa::path(get, path = "/v1/tenants/{id}/move", tag = "tenants", operation_id = "tenants_move_status", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = MoveView),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "no such tenant, or it never moved")))]
#[get("/v1/tenants/{id}/move")]
pub async fn status(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let m = blocking(move || moving::latest_move(&db, &id)).await?;
    Ok(HttpResponse::Ok().json(view(m)))
}
