//! `/v1/outbox`: the deliveries of the outbox's events (e-mails and
//! webhooks), their attempts, and retries of dead ones.

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use tenantplane_api_types::notify::{Delivery, DeliveryPage};
use tenantplane_control_db::outbox::EventKind;
use tenantplane_control_db::states::{Channel, DeliveryState};
use tenantplane_notify::deliveries::{self, Filter};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    /// pending, retrying, delivered, dead or skipped
    #[param(pattern = "^(pending|retrying|delivered|dead|skipped)$")]
    pub state: Option<String>,
    /// An event kind, e.g. `plan.changed`.
    #[param(
        pattern = "^(tenant\\.(created|suspended|deleted)|plan\\.changed|trial\\.(ending|expired)|rollout\\.(succeeded|failed|halted)|backup\\.failed|restore\\.completed|export\\.ready|webhook\\.endpoint_failing)$"
    )]
    pub kind: Option<String>,
    /// email or webhook
    #[param(pattern = "^(email|webhook)$")]
    pub channel: Option<String>,
    /// One event's deliveries.
    #[param(format = Uuid)]
    pub event_id: Option<String>,
    /// Deliveries older than this id (the next page).
    #[param(minimum = 1)]
    pub before_id: Option<i64>,
    /// 1 to 1000, default 100
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Deliveries, newest first.
#[utoipa::path(get, path = "/v1/outbox", tag = "outbox",
    security(("bearer" = [])), params(OutboxQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "unknown state, kind or channel")))]
#[get("/v1/outbox")]
pub async fn list(
    state: web::Data<AppState>,
    _op: Operator,
    q: web::Query<OutboxQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let filter = Filter {
        state: q
            .state
            .as_deref()
            .map(str::parse::<DeliveryState>)
            .transpose()?,
        kind: q
            .kind
            .as_deref()
            .map(|k| {
                k.parse::<EventKind>().map_err(|_| {
                    ApiError::from(tenantplane_control_db::Error::invalid(format!(
                        "unknown event kind {k:?}: one of {:?}",
                        EventKind::names()
                    )))
                })
            })
            .transpose()?,
        channel: q
            .channel
            .as_deref()
            .map(|c| c.parse::<Channel>().map(|c| c.as_str().to_string()))
            .transpose()?,
        event_id: match q.event_id {
            Some(e) if uuid::Uuid::parse_str(&e).is_err() => {
                return Err(tenantplane_control_db::Error::invalid(format!(
                    "event_id {e:?} is not an event id (a UUID)"
                ))
                .into())
            }
            e => e,
        },
        before_id: match q.before_id {
            Some(b) if b < 1 => {
                return Err(tenantplane_control_db::Error::invalid(format!(
                    "before_id must be a delivery id (1 or more), not {b}"
                ))
                .into())
            }
            b => b,
        },
        limit: super::limit(q.limit, 100, 1000)?,
    };
    let db = state.db.clone();
    Ok(HttpResponse::Ok().json(blocking(move || deliveries::list(&db, &filter)).await?))
}

/// One delivery with its attempts (status, latency, answer excerpt).
#[utoipa::path(get, path = "/v1/outbox/{id}", tag = "outbox",
    security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Delivery), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/outbox/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let id = id.into_inner();
    Ok(HttpResponse::Ok().json(blocking(move || deliveries::get(&db, id)).await?))
}

/// Queues a dead or skipped delivery again, with a fresh set of attempts.
#[utoipa::path(post, path = "/v1/outbox/{id}/retry", tag = "outbox",
    security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = Delivery), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the delivery is not dead or skipped")))]
#[post("/v1/outbox/{id}/retry")]
pub async fn retry(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let id = id.into_inner();
    Ok(HttpResponse::Ok().json(blocking(move || deliveries::retry(&db, &op.0, id)).await?))
}
