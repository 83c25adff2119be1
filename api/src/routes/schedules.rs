//! `/v1/schedules`: cron schedules that start jobs, and the record of their
//! fire times.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::Deserialize;
use tenantplane_jobs::schedules::{self, NewSchedule, Schedule, SchedulePatch, ScheduleRun};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Every schedule, by name.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", security(("bearer" = [])),
    responses((status = 200, body = [Schedule]), (status = 401, body = crate::error::ErrorBody)))]
#[get("/v1/schedules")]
pub async fn list(state: web::Data<AppState>, _op: Operator) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || schedules::list(&db)).await?))
}

/// Creates a schedule; its fire times count from now.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", security(("bearer" = [])),
    request_body = NewSchedule,
    responses((status = 201, body = Schedule), (status = 400, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/schedules")]
pub async fn create(
    state: web::Data<AppState>,
    op: Operator,
    body: web::Json<NewSchedule>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let new = body.into_inner();
    check_params(&new.job, new.params.as_ref())?;
    let schedule = blocking(move || schedules::create(&db, &op.0, new)).await?;
    Ok(HttpResponse::Created().json(schedule))
}

/// One schedule, with its next fire time.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = Schedule), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/schedules/{name}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || schedules::get(&db, &name)).await?))
}

/// Changes a schedule: cron, timezone, enabled, missed, selector, params.
/// A new cron or timezone, or enabling it, counts fire times from now.
#[utoipa::path(patch, path = "/v1/schedules/{name}", tag = "schedules", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = SchedulePatch,
    responses((status = 200, body = Schedule), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[patch("/v1/schedules/{name}")]
pub async fn update(
    state: web::Data<AppState>,
    op: Operator,
    name: web::Path<String>,
    body: web::Json<SchedulePatch>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let patch = body.into_inner();
    let schedule = blocking(move || {
        if let Some(params) = &patch.params {
            let job = schedules::get(&db, &name)?.job;
            check_params(&job, params.as_ref())?;
        }
        schedules::patch(&db, &op.0, &name, patch)
    })
    .await?;
    Ok(HttpResponse::Ok().json(schedule))
}

/// Deletes a schedule and its runs; jobs it queued stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody)))]
#[delete("/v1/schedules/{name}")]
pub async fn remove(
    state: web::Data<AppState>,
    op: Operator,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    blocking(move || schedules::delete(&db, &op.0, &name)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only runs with a smaller id: the next page after the last id seen.
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// The fire times of a schedule, newest first: `started` (with its job's
/// state and latest error), `missed` or `skipped_overlap`.
#[utoipa::path(get, path = "/v1/schedules/{name}/runs", tag = "schedules", security(("bearer" = [])),
    params(("name" = String, Path), RunsQuery),
    responses((status = 200, body = [ScheduleRun]), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/schedules/{name}/runs")]
pub async fn runs(
    state: web::Data<AppState>,
    _op: Operator,
    name: web::Path<String>,
    query: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let RunsQuery { limit, before } = query.into_inner();
    let limit = super::limit(limit, 100, 1000)?;
    if let Some(b) = before.filter(|b| *b < 1) {
        return Err(tenantplane_control_db::Error::invalid(format!(
            "before must be a run id (1 or more), not {b}"
        ))
        .into());
    }
    let runs = blocking(move || schedules::list_runs(&db, &name, limit, before)).await?;
    Ok(HttpResponse::Ok().json(runs))
}

/// The jobs crate cannot know each job's parameters; the kinds that take
/// some are checked here, so a bad policy is refused when saved instead of
/// killing the job at its first fire time.
fn check_params(
    job: &str,
    params: Option<&serde_json::Value>,
) -> Result<(), tenantplane_control_db::Error> {
    if job == "retention" {
        tenantplane_backup::retention::Policy::from_params(params)
            .map_err(tenantplane_control_db::Error::Invalid)?;
    }
    Ok(())
}
