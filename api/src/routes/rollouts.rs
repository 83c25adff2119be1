//! `/v1/rollouts`: fleet migrations, their tasks, controls and live progress.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tenantplane_rollout::rollouts::{
    self, Control, Created, Rollout, RolloutPlan, RolloutRequest, TaskPage,
};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// Starts a rollout, or returns its plan with `dry_run: true`.
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat a request safely: the same key and request replay the first answer")),
    request_body(content = RolloutRequest,
        example = json!({"target": "head", "selector": {"all": true}, "concurrency": 4})),
    responses((status = 201, body = Rollout), (status = 200, body = RolloutPlan, description = "dry run: the plan, nothing changed"),
        (status = 400, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/rollouts")]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    op: Operator,
    body: web::Json<RolloutRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let scope = op.0.id.clone();
    crate::idempotent::once(&state, &req, &scope, &body.clone(), || async {
        let db = state.db.clone();
        match blocking(move || rollouts::create(&db, &op.0, body)).await? {
            Created::Rollout(r) => Ok(HttpResponse::Created().json(r)),
            Created::Plan(p) => Ok(HttpResponse::Ok().json(p)),
        }
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// running, paused, halted, succeeded, failed or cancelled
    #[param(pattern = "^(running|paused|halted|succeeded|failed|cancelled)$")]
    pub state: Option<String>,
    /// 1 to 500, default 50
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Rollouts, newest first.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = [Rollout])))]
#[get("/v1/rollouts")]
pub async fn list(
    state: web::Data<AppState>,
    _op: Operator,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let q = q.into_inner();
    Ok(HttpResponse::Ok().json(
        blocking(move || rollouts::list(&db, q.state.as_deref(), q.limit.unwrap_or(50))).await?,
    ))
}

/// A rollout with its counts by state, tenants per second and ETA.
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Rollout), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/rollouts/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || rollouts::get(&db, &id)).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TasksQuery {
    /// pending, running, succeeded, failed, skipped or cancelled
    #[param(pattern = "^(pending|running|succeeded|failed|skipped|cancelled)$")]
    pub state: Option<String>,
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// A page of the rollout's tasks.
#[utoipa::path(get, path = "/v1/rollouts/{id}/tasks", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path), TasksQuery), responses((status = 200, body = TaskPage), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/rollouts/{id}/tasks")]
pub async fn tasks(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
    q: web::Query<TasksQuery>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let q = q.into_inner();
    let page = blocking(move || {
        rollouts::tasks_page(
            &db,
            &id,
            q.state.as_deref(),
            q.limit.unwrap_or(100),
            q.cursor.as_deref(),
        )
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn control(
    state: web::Data<AppState>,
    op: Operator,
    id: String,
    what: Control,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || rollouts::control(&db, &op.0, &id, what)).await?))
}

/// Stops claiming new tenants; running ones finish.
#[utoipa::path(post, path = "/v1/rollouts/{id}/pause", tag = "rollouts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = crate::error::ErrorBody)))]
#[post("/v1/rollouts/{id}/pause")]
pub async fn pause(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(state, op, id.into_inner(), Control::Pause).await
}

/// Continues a paused or halted rollout (a halted one's budget counts afresh).
#[utoipa::path(post, path = "/v1/rollouts/{id}/resume", tag = "rollouts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = crate::error::ErrorBody)))]
#[post("/v1/rollouts/{id}/resume")]
pub async fn resume(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(state, op, id.into_inner(), Control::Resume).await
}

/// Cancels the pending tenants; running ones finish.
#[utoipa::path(post, path = "/v1/rollouts/{id}/cancel", tag = "rollouts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = crate::error::ErrorBody)))]
#[post("/v1/rollouts/{id}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(state, op, id.into_inner(), Control::Cancel).await
}

/// Queues the failed tenants again.
#[utoipa::path(post, path = "/v1/rollouts/{id}/retry", tag = "rollouts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = crate::error::ErrorBody)))]
#[post("/v1/rollouts/{id}/retry")]
pub async fn retry(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(state, op, id.into_inner(), Control::Retry).await
}

/// Opens the next wave now: ends the hold of a finished wave (`manual` or
/// `hold_s`). 409 while the current wave still has open tasks.
#[utoipa::path(post, path = "/v1/rollouts/{id}/promote", tag = "rollouts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Rollout), (status = 409, body = crate::error::ErrorBody)))]
#[post("/v1/rollouts/{id}/promote")]
pub async fn promote(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    control(state, op, id.into_inner(), Control::Promote).await
}

const FINISHED: &[&str] = &["succeeded", "failed", "cancelled"];

/// Server-sent events: `progress` with the rollout whenever it changes, then
/// `done` when it finishes; `shutdown` (with `retry: 1000`) when the server
/// stops, after which a client reconnects.
#[utoipa::path(get, path = "/v1/rollouts/{id}/events", tag = "rollouts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "progress events"), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/rollouts/{id}/events")]
pub async fn events(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let id = id.into_inner();
    // Fail with a proper 404 before the stream starts.
    {
        let (db, id) = (db.clone(), id.clone());
        blocking(move || rollouts::get(&db, &id)).await?;
    }
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (db, id, None::<String>, false),
        move |(db, id, last, done)| {
            let shutdown = shutdown.clone();
            async move {
                if done {
                    return None;
                }
                // One read per interval per watcher, changed or not: while a
                // rollout runs its counts change on nearly every read, and reading
                // back to back kept the control database busy for each watcher.
                let mut wait = last.is_some();
                loop {
                    if wait {
                        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
                    }
                    wait = true;
                    if shutdown.is_begun() {
                        // The server is stopping: say so and when to come back
                        // (another replica, or this one restarted), then end,
                        // so the graceful stop need not wait for the stream.
                        return Some((
                            Ok(Bytes::from(format!(
                                "retry: 1000\nevent: shutdown\ndata: {}\n\n",
                                serde_json::json!({"message": "the server is stopping; reconnect"})
                            ))),
                            (db, id, last, true),
                        ));
                    }
                    let (db2, id2) = (db.clone(), id.clone());
                    let event = match blocking(move || rollouts::get(&db2, &id2)).await {
                        Ok(r) => {
                            let data = serde_json::to_string(&r).unwrap_or_default();
                            let finished = FINISHED.contains(&r.state.as_str());
                            if last.as_deref() != Some(data.as_str()) || finished {
                                let kind = if finished { "done" } else { "progress" };
                                Some((format!("event: {kind}\ndata: {data}\n\n"), data, finished))
                            } else {
                                None
                            }
                        }
                        Err(e) => Some((
                            format!(
                                "event: error\ndata: {}\n\n",
                                serde_json::json!({"message": e.to_string()})
                            ),
                            String::new(),
                            true,
                        )),
                    };
                    if let Some((text, data, finished)) = event {
                        return Some((
                            Ok::<_, actix_web::Error>(Bytes::from(text)),
                            (db, id, Some(data), finished),
                        ));
                    }
                }
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream))
}
