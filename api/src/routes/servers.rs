//! `/v1/servers`: database servers that hold tenant databases.

use actix_web::{get, post, web, HttpResponse};
use tenantplane_fleet::servers::{self, NewServer, ServerView};

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
