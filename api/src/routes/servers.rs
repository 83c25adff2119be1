//! `/v1/servers`: database servers that hold tenant databases.

use actix_web::{get, patch, post, web, HttpResponse};
use tenantplane_api_types::servers::DrainView;
use tenantplane_backup::drain as drains;
use tenantplane_fleet::servers::{self, NewServer, ServerPatch, ServerView};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Lists the database servers with their tenant counts.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", security(("bearer" = [])),
    responses((status = 200, body = [ServerView]), (status = 401, body = crate::error::ErrorBody)))]
#[get("/v1/servers")]
pub async fn list(state: web::Data<AppState>, _op: Operator) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || servers::list(&db)).await?))
}

/// Registers a database server after checking it can be reached.
#[utoipa::path(post, path = "/v1/servers", tag = "servers", security(("bearer" = [])),
    request_body = NewServer,
    responses((status = 201, body = ServerView), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/servers")]
pub async fn create(
    state: web::Data<AppState>,
    op: Operator,
    body: web::Json<NewServer>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let server = blocking(move || servers::register(&db, &op.0, body.into_inner())).await?;
    Ok(HttpResponse::Created().json(server))
}

/// One database server by id or name.
#[utoipa::path(get, path = "/v1/servers/{id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "server id or name")),
    responses((status = 200, body = ServerView), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/servers/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || servers::get(&db, &id)).await?))
}

/// Changes a server's capacity or status: `active`, `draining` (takes no
/// new tenants) or `retired` (refused with 409 while live tenants are left
/// on it). Audited.
#[utoipa::path(patch, path = "/v1/servers/{id}", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "server id or name")),
    request_body = ServerPatch,
    responses((status = 200, body = ServerView),
        (status = 400, body = crate::error::ErrorBody, description = "the body is not JSON of this shape"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "retiring a server that still holds live tenants"),
        (status = 422, body = crate::error::ErrorBody, description = "an unknown status or a capacity below 1")))]
#[patch("/v1/servers/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Json<ServerPatch>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let server = blocking(move || servers::patch(&db, &op.0, &id, body.into_inner())).await?;
    Ok(HttpResponse::Ok().json(server))
}

fn drain_view(d: drains::DrainStatus) -> DrainView {
    DrainView {
        server_id: d.server_id,
        job_id: d.job_id,
        state: d.state,
        total: d.total,
        moved: d.moved,
        remaining: d.remaining,
        last_error: d.last_error,
    }
}

/// Drains a server: marks it `draining` (no new tenants) and queues a job
/// that moves every live tenant to other active servers with room (same
/// kind first). Answers at once with the drain's progress; a drain already
/// under way is returned as it is.
#[utoipa::path(post, path = "/v1/servers/{id}/drain", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "server id or name")),
    responses((status = 202, body = DrainView),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the server is retired")))]
#[post("/v1/servers/{id}/drain")]
pub async fn drain(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let d = blocking(move || drains::start_drain(&db, &op.0, &id)).await?;
    Ok(HttpResponse::Accepted().json(drain_view(d)))
}

/// The server's latest drain: its job's state, and the tenants moved off
/// and still left.
#[utoipa::path(get, path = "/v1/servers/{id}/drain", tag = "servers", security(("bearer" = [])),
    params(("id" = String, Path, description = "server id or name")),
    responses((status = 200, body = DrainView),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "no such server, or it was never drained")))]
#[get("/v1/servers/{id}/drain")]
pub async fn drain_status(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let d = blocking(move || drains::drain_status(&db, &id)).await?;
    Ok(HttpResponse::Ok().json(drain_view(d)))
}
