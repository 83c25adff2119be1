//! `notify.deliver`: one job per delivery, run by the worker's job runner.
//! Each run makes one attempt, logs it in `delivery_attempts` and moves the
//! delivery on in one transaction; a failed attempt asks the runner to come
//! back after the delivery's own schedule (or the receiver's `Retry-After`).
//! A worker killed mid-attempt loses its lease and another worker makes the
//! attempt again with the same event id, which receivers deduplicate.

use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_api_types::notify::{EndpointFailingEvent, WebhookPayload};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{
    deliveries, delivery_attempts, outbox as ob, webhook_endpoints as ep,
};
use tenantplane_control_db::states::{AttemptOutcome, Channel, DeliveryState};
use tenantplane_control_db::{write_tx, ControlConnection, Error};
use tenantplane_jobs::{Job, JobContext, JobError};

use crate::config::{self, NotifyConfig};
use crate::rows::{self, EndpointRow};
use crate::send::{self, Outcome};

/// Delivers one delivery row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliver {
    pub delivery_id: i64,
}

/// The delivery gave up (dead): recorded as the job's error too.
#[derive(Debug, thiserror::Error)]
#[error("delivery {id} is dead after attempt {attempt}: {error}")]
struct Dead {
    id: i64,
    attempt: i32,
    error: String,
}

/// A failed attempt that will be tried again.
#[derive(Debug, thiserror::Error)]
#[error("delivery {id}, attempt {attempt}: {error}")]
struct Failed {
    id: i64,
    attempt: i32,
    error: String,
}

impl Job for Deliver {
    const KIND: &'static str = "notify.deliver";
    /// The delivery counts its own attempts (ten, over about three days) and
    /// goes `dead` itself; this only bounds runs lost to dying workers.
    const MAX_ATTEMPTS: i32 = 25;

    fn dedup_key(&self) -> Option<String> {
        Some(self.delivery_id.to_string())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let config = config::installed();
        deliver(ctx, &config, self.delivery_id)
    }
}

type DeliveryRow = (String, String, String, String, i32);

fn deliver(ctx: &JobContext, config: &NotifyConfig, id: i64) -> Result<(), JobError> {
    let mut conn = ctx.db().conn()?;
    let row: Option<DeliveryRow> = deliveries::table
        .find(id)
        .select((
            deliveries::event_id,
            deliveries::channel,
            deliveries::target,
            deliveries::state,
            deliveries::attempts,
        ))
        .first(&mut conn)
        .optional()
        .map_err(Error::from)?;
    let Some((event_id, channel, target, state, attempts)) = row else {
        return Err(JobError::permanent(Error::not_found(
            "delivery",
            id.to_string(),
        )));
    };
    if state != DeliveryState::Pending.as_str() && state != DeliveryState::Retrying.as_str() {
        // Finished by an earlier run whose job outcome was lost.
        return Ok(());
    }
    let (kind, body, created_at): (String, String, NaiveDateTime) = ob::table
        .find(&event_id)
        .select((ob::kind, ob::body, ob::created_at))
        .first(&mut conn)
        .map_err(Error::from)?;
    let kind: EventKind = kind.parse().map_err(JobError::permanent)?;
    let body: serde_json::Value = serde_json::from_str(&body).map_err(JobError::permanent)?;
    let attempt = attempts + 1;
    let endpoint = if channel == Channel::Webhook.as_str() {
        match rows::find(&mut conn, &target) {
            Ok(p) => Some(p),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    // No pooled connection is held while the network answers (or not).
    drop(conn);
    let started = Utc::now().naive_utc().trunc_subsecs(6);
    let clock = Instant::now();
    let outcome = match &endpoint {
        _ if channel == Channel::Email.as_str() => {
            send::email(config, kind, &event_id, &body, &target)
        }
        None => Outcome::Skipped("the endpoint was deleted".into()),
        Some(p) if !p.enabled => Outcome::Skipped(format!(
            "the endpoint is disabled{}",
            p.disabled_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        Some(p) => {
            let payload = WebhookPayload {
                id: event_id.clone(),
                kind: kind.as_str().to_string(),
                timestamp: created_at.and_utc(),
                data: body.clone(),
            };
            send::webhook(config, p, &payload, started)
        }
    };
    let latency_ms = clock.elapsed().as_millis() as i64;
    tracing::info!(delivery_id = id, event_id = %event_id, channel = %channel, attempt,
        outcome = ?outcome_word(&outcome), latency_ms, "delivery attempt");
    let mut conn = ctx.db().conn()?;
    let next = write_tx(&mut conn, None, |conn| {
        record(
            conn,
            config,
            id,
            attempt,
            started,
            latency_ms,
            &outcome,
            endpoint.as_ref(),
        )
    })?;
    match next {
        Next::Done => Ok(()),
        Next::Again(after, error) => {
            Err(JobError::retry_after(Failed { id, attempt, error }, after))
        }
        Next::Dead(error) => Err(JobError::permanent(Dead { id, attempt, error })),
    }
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::Failed { .. } => "failed",
        Outcome::Skipped(_) => "skipped",
    }
}

enum Next {
    Done,
    Again(Duration, String),
    Dead(String),
}

/// The longest a receiver's `Retry-After` may postpone the next attempt.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

#[allow(clippy::too_many_arguments)]
fn record(
    conn: &mut ControlConnection,
    config: &NotifyConfig,
    id: i64,
    attempt: i32,
    started: NaiveDateTime,
    latency_ms: i64,
    outcome: &Outcome,
    endpoint: Option<&EndpointRow>,
) -> tenantplane_control_db::Result<Next> {
    let now = Utc::now().naive_utc().trunc_subsecs(6);
    let (status, error, excerpt, word) = match outcome {
        Outcome::Delivered { status, excerpt } => {
            (*status, None, excerpt.clone(), AttemptOutcome::Delivered)
        }
        Outcome::Retry {
            status,
            error,
            excerpt,
            ..
        } => (
            *status,
            Some(error.clone()),
            excerpt.clone(),
            AttemptOutcome::Retry,
        ),
        Outcome::Failed {
            status,
            error,
            excerpt,
            ..
        } => (
            *status,
            Some(error.clone()),
            excerpt.clone(),
            AttemptOutcome::Failed,
        ),
        Outcome::Skipped(reason) => {
            diesel::update(deliveries::table.find(id))
                .set((
                    deliveries::state.eq(DeliveryState::Skipped.as_str()),
                    deliveries::last_error.eq(Some(reason)),
                    deliveries::next_attempt_at.eq(None::<NaiveDateTime>),
                    deliveries::updated_at.eq(now),
                ))
                .execute(conn)?;
            return Ok(Next::Done);
        }
    };
    // Decide what follows the attempt.
    let (state, next) = match outcome {
        Outcome::Delivered { .. } => (DeliveryState::Delivered, Next::Done),
        Outcome::Retry { after, error, .. } => {
            let delay = match (after, config.retry_delay(attempt + 1)) {
                (_, None) => None,
                (Some(a), Some(_)) => Some((*a).min(RETRY_AFTER_MAX)),
                (None, Some(d)) => Some(d),
            };
            match delay {
                Some(d) => (DeliveryState::Retrying, Next::Again(d, error.clone())),
                None => (
                    DeliveryState::Dead,
                    Next::Dead(format!("{error} (the last of {} attempts)", attempt)),
                ),
            }
        }
        Outcome::Failed { error, .. } => (DeliveryState::Dead, Next::Dead(error.clone())),
        Outcome::Skipped(_) => (DeliveryState::Skipped, Next::Done),
    };
    diesel::insert_into(delivery_attempts::table)
        .values((
            delivery_attempts::delivery_id.eq(id),
            delivery_attempts::attempt.eq(attempt),
            delivery_attempts::started_at.eq(started),
            delivery_attempts::status.eq(status),
            delivery_attempts::latency_ms.eq(latency_ms),
            delivery_attempts::outcome.eq(word.as_str()),
            delivery_attempts::error.eq(&error),
            delivery_attempts::response_excerpt.eq(&excerpt),
        ))
        .execute(conn)?;
    let next_at = match &next {
        Next::Again(d, _) => Some(now + chrono::Duration::from_std(*d).unwrap_or_default()),
        _ => None,
    };
    diesel::update(deliveries::table.find(id))
        .set((
            deliveries::state.eq(state.as_str()),
            deliveries::attempts.eq(attempt),
            deliveries::next_attempt_at.eq(next_at),
            deliveries::updated_at.eq(now),
        ))
        .execute(conn)?;
    match state {
        DeliveryState::Delivered => {
            diesel::update(deliveries::table.find(id))
                .set(deliveries::delivered_at.eq(Some(now)))
                .execute(conn)?;
        }
        _ => {
            diesel::update(deliveries::table.find(id))
                .set(deliveries::last_error.eq(&error))
                .execute(conn)?;
        }
    }
    if let Some(p) = endpoint {
        endpoint_health(conn, config, p, outcome, error.as_deref(), now)?;
    }
    Ok(next)
}

/// Keeps an endpoint's failure streak: a success ends it; `410 Gone`
/// disables the endpoint at once; a streak longer than `warn_after` mails
/// the operators once (`webhook.endpoint_failing`), one longer than
/// `disable_after` disables it.
fn endpoint_health(
    conn: &mut ControlConnection,
    config: &NotifyConfig,
    p: &EndpointRow,
    outcome: &Outcome,
    error: Option<&str>,
    now: NaiveDateTime,
) -> tenantplane_control_db::Result<()> {
    let disable = |conn: &mut ControlConnection, reason: String| {
        tracing::warn!(webhook_id = %p.id, %reason, "webhook endpoint disabled");
        diesel::update(ep::table.find(&p.id))
            .set((
                ep::enabled.eq(false),
                ep::disabled_reason.eq(Some(reason)),
                ep::updated_at.eq(now),
            ))
            .execute(conn)
    };
    match outcome {
        Outcome::Delivered { .. } => {
            diesel::update(
                ep::table
                    .find(&p.id)
                    .filter(ep::failing_since.is_not_null()),
            )
            .set((
                ep::failing_since.eq(None::<NaiveDateTime>),
                ep::warned_at.eq(None::<NaiveDateTime>),
            ))
            .execute(conn)?;
        }
        Outcome::Failed { gone: true, .. } => {
            disable(conn, "the endpoint answered 410 Gone".into())?;
        }
        Outcome::Failed { .. } | Outcome::Retry { .. } => {
            // Read again inside the transaction: another delivery to the
            // same endpoint may have moved the streak meanwhile. The
            // updates are conditional, so of two racing failures on
            // PostgreSQL one starts the streak and one warns.
            let p = match rows::find(conn, &p.id) {
                Ok(p) => p,
                // Deleted meanwhile: no streak to keep.
                Err(Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            let since = p.failing_since.unwrap_or(now);
            if p.failing_since.is_none() {
                diesel::update(ep::table.find(&p.id).filter(ep::failing_since.is_null()))
                    .set(ep::failing_since.eq(Some(now)))
                    .execute(conn)?;
            }
            let failing = (now - since).to_std().unwrap_or_default();
            if !p.enabled {
                // Disabled meanwhile (410, an operator): nothing to add.
                return Ok(());
            }
            if failing >= config.scaled(config.disable_after) && p.warned_at.is_some() {
                disable(
                    conn,
                    format!(
                        "every delivery failed since {}",
                        since.and_utc().to_rfc3339()
                    ),
                )?;
            } else if failing >= config.scaled(config.warn_after) && p.warned_at.is_none() {
                let won = diesel::update(ep::table.find(&p.id).filter(ep::warned_at.is_null()))
                    .set(ep::warned_at.eq(Some(now)))
                    .execute(conn)?;
                if won == 1 {
                    outbox::record(
                        conn,
                        EventKind::EndpointFailing,
                        None,
                        &EndpointFailingEvent {
                            endpoint_id: p.id.clone(),
                            url: p.url.clone(),
                            failing_since: since.and_utc(),
                            last_error: error.map(str::to_string),
                        },
                    )?;
                    tracing::warn!(webhook_id = %p.id, "webhook endpoint failing; operators warned");
                }
            }
        }
        Outcome::Skipped(_) => {}
    }
    Ok(())
}
