//! `/metrics`: Prometheus text, from the control database.

use actix_web::{get, web, HttpResponse};
use tenantplane_control_db::metrics as snapshot;

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Tasks by state, rollouts by state, tenants by status, queue depth,
/// retries, and the migration duration histogram.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(("bearer" = [])),
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
#[get("/metrics")]
pub async fn prometheus(
    state: web::Data<AppState>,
    _op: Operator,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let numbers = blocking(move || snapshot::snapshot(&db)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(snapshot::render(&numbers)))
}
