//! The relay: fans undispatched outbox events out into deliveries (one per
//! e-mail recipient and per webhook endpoint that wants the kind) and
//! queues a job for each, in one transaction with marking the events
//! dispatched, so an event is fanned out exactly once however many workers
//! run the relay (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the write
//! lock).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use tenantplane_control_db::error::report;
use tenantplane_control_db::outbox::EventKind;
use tenantplane_control_db::schema::{deliveries, outbox, webhook_endpoints as ep};
use tenantplane_control_db::states::{Channel, DeliveryState};
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb, Result};
use tenantplane_jobs::{enqueue, enqueue_again};

use crate::config::NotifyConfig;
use crate::job::Deliver;
use crate::rows::EndpointRow;
use crate::templates::{audience, Audience};

/// Events fanned out per transaction.
const BATCH: i64 = 100;

/// Inserts a delivery (a no-op when the event already has one for this
/// channel and target) and, when it is `pending`, queues its job. Returns
/// the new delivery's id.
pub(crate) fn insert_delivery(
    conn: &mut ControlConnection,
    event_id: &str,
    channel: Channel,
    target: &str,
    state: DeliveryState,
) -> Result<Option<i64>> {
    let now = Utc::now().naive_utc().trunc_subsecs(6);
    let insert = diesel::insert_into(deliveries::table)
        .values((
            deliveries::event_id.eq(event_id),
            deliveries::channel.eq(channel.as_str()),
            deliveries::target.eq(target),
            deliveries::state.eq(state.as_str()),
            deliveries::attempts.eq(0),
            deliveries::last_error.eq((state == DeliveryState::Skipped)
                .then_some("no SMTP server configured (TENANTPLANE_SMTP_URL)")),
            deliveries::created_at.eq(now),
            deliveries::updated_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .returning(deliveries::id);
    let id: Option<i64> = match conn {
        ControlConnection::Postgres(c) => insert.get_result(c).optional()?,
        ControlConnection::Sqlite(c) => insert.get_result(c).optional()?,
    };
    if let (Some(id), DeliveryState::Pending) = (id, state) {
        enqueue(conn, &Deliver { delivery_id: id })?;
    }
    Ok(id)
}

/// Puts a finished delivery back to `pending` with a fresh set of attempts
/// and queues its job (a no-op when its job is still open).
pub(crate) fn requeue(conn: &mut ControlConnection, delivery_id: i64) -> Result<()> {
    let now = Utc::now().naive_utc().trunc_subsecs(6);
    diesel::update(deliveries::table.find(delivery_id))
        .set((
            deliveries::state.eq(DeliveryState::Pending.as_str()),
            deliveries::attempts.eq(0),
            deliveries::next_attempt_at.eq(None::<NaiveDateTime>),
            deliveries::delivered_at.eq(None::<NaiveDateTime>),
            deliveries::updated_at.eq(now),
        ))
        .execute(conn)?;
    // The delivery's job may still be running, between recording the
    // delivery dead and ending itself: it must run again, not absorb this.
    enqueue_again(conn, &Deliver { delivery_id })?;
    Ok(())
}

#[derive(Queryable)]
struct Pending {
    id: String,
    kind: String,
    body: String,
}

/// The e-mail recipients of an event.
fn recipients(kind: EventKind, body: &serde_json::Value, config: &NotifyConfig) -> Vec<String> {
    let mut r: Vec<String> = match audience(kind) {
        Audience::Tenant => body["contact_email"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
        Audience::Operators => config.operator_emails.clone(),
        Audience::Nobody => Vec::new(),
    };
    r.sort();
    r.dedup();
    r
}

/// Fans out up to one batch of undispatched events. Returns how many.
pub fn dispatch(db: &ControlDb, config: &NotifyConfig) -> Result<usize> {
    let mut conn = db.conn()?;
    // Most polls find nothing: look (a read on the partial index) before
    // taking SQLite's write lock.
    let any: Option<String> = outbox::table
        .filter(outbox::dispatched_at.is_null())
        .select(outbox::id)
        .first(&mut conn)
        .optional()?;
    if any.is_none() {
        return Ok(0);
    }
    write_tx(&mut conn, None, |conn| {
        let query = outbox::table
            .filter(outbox::dispatched_at.is_null())
            .order((outbox::created_at, outbox::id))
            .limit(BATCH)
            .select((outbox::id, outbox::kind, outbox::body));
        let events: Vec<Pending> = match conn {
            ControlConnection::Postgres(c) => query.for_update().skip_locked().load(c)?,
            ControlConnection::Sqlite(c) => query.load(c)?,
        };
        if events.is_empty() {
            return Ok(0);
        }
        let endpoints: Vec<EndpointRow> = ep::table
            .filter(ep::deleted_at.is_null())
            .filter(ep::enabled.eq(true))
            .select(EndpointRow::as_select())
            .load(conn)?;
        let mail_state = if config.smtp.is_some() {
            DeliveryState::Pending
        } else {
            DeliveryState::Skipped
        };
        let now = Utc::now().naive_utc().trunc_subsecs(6);
        for e in &events {
            if let Ok(kind) = e.kind.parse::<EventKind>() {
                let body: serde_json::Value =
                    serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null);
                for to in recipients(kind, &body, config) {
                    insert_delivery(conn, &e.id, Channel::Email, &to, mail_state)?;
                }
                for endpoint in endpoints.iter().filter(|p| p.wants(kind)) {
                    insert_delivery(
                        conn,
                        &e.id,
                        Channel::Webhook,
                        &endpoint.id,
                        DeliveryState::Pending,
                    )?;
                }
            }
            diesel::update(outbox::table.find(&e.id))
                .set(outbox::dispatched_at.eq(Some(now)))
                .execute(conn)?;
        }
        tracing::debug!(events = events.len(), "events fanned out");
        Ok(events.len())
    })
}

/// A thread running [`dispatch`] until stopped: right away again after a
/// full batch, else every `poll`.
pub struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(
        db: ControlDb,
        config: Arc<NotifyConfig>,
        poll: Duration,
    ) -> std::io::Result<Relay> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("notify-relay".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    let wait = match dispatch(&db, &config) {
                        Ok(n) if n as i64 >= BATCH => Duration::ZERO,
                        Ok(_) => poll,
                        Err(e) => {
                            tracing::warn!(error = %report(&e), "fanning out events failed");
                            Duration::from_secs(1)
                        }
                    };
                    let until = Instant::now() + wait;
                    while !flag.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::sleep(
                            until
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(50)),
                        );
                    }
                }
            })?;
        Ok(Relay {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the notify relay thread panicked");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
