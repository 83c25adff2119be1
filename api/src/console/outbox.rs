//! Webhooks and the outbox: the endpoints, the recent deliveries (by
//! state, paged), the dead ones with a retry button, and one delivery's
//! attempt history. Retrying is `deliveries::retry`, as
//! `POST /v1/outbox/{id}/retry` (audited with the session as actor).

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use tenantplane_api_types::notify::Delivery;
use tenantplane_control_db::states::DeliveryState;
use tenantplane_control_db::Error;
use tenantplane_notify::deliveries::{self, Filter};
use tenantplane_notify::endpoints;

use super::backups::clip;
use super::page::{html, see_other, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub struct EndpointLine {
    id: String,
    url: String,
    events: String,
    enabled: bool,
    note: String,
}

pub struct DeliveryLine {
    id: i64,
    kind: String,
    tenant_id: String,
    channel: String,
    target: String,
    state: String,
    attempts: i32,
    created: String,
    next: String,
    error: String,
    /// Dead or skipped: it can be queued again.
    retryable: bool,
}

impl From<Delivery> for DeliveryLine {
    fn from(d: Delivery) -> Self {
        DeliveryLine {
            retryable: d.state == DeliveryState::Dead.as_str()
                || d.state == DeliveryState::Skipped.as_str(),
            id: d.id,
            kind: d.kind,
            tenant_id: d.tenant_id.unwrap_or_default(),
            channel: d.channel,
            target: d.target,
            state: d.state,
            attempts: d.attempts,
            created: when(d.created_at),
            next: d.next_attempt_at.map(when).unwrap_or_default(),
            error: d
                .last_error
                .as_deref()
                .map(|e| clip(e, 200))
                .unwrap_or_default(),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct Query {
    /// A delivery state, empty for all.
    #[serde(default)]
    state: String,
    /// Deliveries older than this id.
    #[serde(default)]
    before: String,
}

#[derive(Template)]
#[template(path = "console/outbox.html")]
struct OutboxPage {
    layout: Layout,
    endpoints: Vec<EndpointLine>,
    dead: Vec<DeliveryLine>,
    recent: Vec<DeliveryLine>,
    state: String,
    next: Option<i64>,
}

const PAGE: i64 = 50;

#[get("/outbox")]
pub async fn page(
    state: web::Data<AppState>,
    s: ConsoleSession,
    q: web::Query<Query>,
) -> Result<HttpResponse, ConsoleError> {
    let q = q.into_inner();
    let wanted = match q.state.trim() {
        "" => None,
        st => Some(st.parse::<DeliveryState>()?),
    };
    let before_id = match q.before.trim() {
        "" => None,
        b => Some(
            b.parse::<i64>()
                .map_err(|_| Error::invalid(format!("before must be a delivery id, not {b:?}")))?,
        ),
    };
    let db = state.db.clone();
    let (eps, dead, recent) = blocking(move || {
        let eps = endpoints::list(&db)?;
        let dead = deliveries::list(
            &db,
            &Filter {
                state: Some(DeliveryState::Dead),
                limit: PAGE,
                ..Filter::default()
            },
        )?;
        let recent = deliveries::list(
            &db,
            &Filter {
                state: wanted,
                before_id,
                limit: PAGE,
                ..Filter::default()
            },
        )?;
        Ok((eps, dead, recent))
    })
    .await?;
    let next = (recent.items.len() as i64 == PAGE)
        .then(|| recent.items.last().map(|d| d.id))
        .flatten();
    html(&OutboxPage {
        layout: Layout::new("Webhooks and outbox", Some(s.csrf()), "outbox"),
        endpoints: eps
            .into_iter()
            .map(|w| EndpointLine {
                events: if w.events.is_empty() {
                    "every kind".into()
                } else {
                    w.events.join(", ")
                },
                note: match (&w.disabled_reason, &w.failing_since) {
                    (Some(r), _) => format!("disabled: {r}"),
                    (None, Some(t)) => format!("failing since {}", when(*t)),
                    (None, None) => String::new(),
                },
                enabled: w.enabled,
                id: w.id,
                url: w.url,
            })
            .collect(),
        dead: dead.items.into_iter().map(DeliveryLine::from).collect(),
        recent: recent.items.into_iter().map(DeliveryLine::from).collect(),
        state: q.state,
        next,
    })
}

pub struct AttemptLine {
    attempt: i32,
    started: String,
    status: String,
    latency: String,
    outcome: String,
    error: String,
    excerpt: String,
}

#[derive(Template)]
#[template(path = "console/delivery.html")]
struct DeliveryPage {
    layout: Layout,
    d: DeliveryLine,
    event_id: String,
    attempts: Vec<AttemptLine>,
}

/// One delivery with every attempt (status, latency, answer excerpt).
#[get("/outbox/{id}")]
pub async fn show(
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<i64>,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let id = id.into_inner();
    let mut d = blocking(move || deliveries::get(&db, id)).await?;
    let attempts = d
        .attempt_log
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|a| AttemptLine {
            attempt: a.attempt,
            started: when(a.started_at),
            status: a
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            latency: format!("{} ms", a.latency_ms),
            outcome: a.outcome,
            error: a.error.unwrap_or_default(),
            excerpt: a
                .response_excerpt
                .as_deref()
                .map(|e| clip(e, 300))
                .unwrap_or_default(),
        })
        .collect();
    html(&DeliveryPage {
        layout: Layout::new(format!("Delivery {}", d.id), Some(s.csrf()), "outbox"),
        event_id: d.event_id.clone(),
        d: d.into(),
        attempts,
    })
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Queues a dead (or skipped) delivery again with a fresh set of attempts.
#[post("/outbox/{id}/retry")]
pub async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let db = state.db.clone();
    let actor = s.actor.clone();
    let id = id.into_inner();
    blocking(move || deliveries::retry(&db, &actor, id)).await?;
    Ok(see_other(&format!("/console/outbox/{id}")))
}
