//! The outbox as operators see it: deliveries by state and kind, one
//! delivery with its attempts, and queueing a dead one again.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tenantplane_api_types::notify::{Delivery, DeliveryAttempt, DeliveryPage};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::outbox::EventKind;
use tenantplane_control_db::schema::{deliveries, delivery_attempts as att, outbox};
use tenantplane_control_db::states::DeliveryState;
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb, Error, Result};

use crate::relay::requeue;

type Row = (
    i64,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i32,
    Option<NaiveDateTime>,
    Option<String>,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

fn view(r: Row) -> Delivery {
    let (
        id,
        event_id,
        kind,
        tenant_id,
        channel,
        target,
        state,
        attempts,
        next_attempt_at,
        last_error,
        created_at,
        delivered_at,
    ) = r;
    Delivery {
        id,
        event_id,
        kind,
        tenant_id,
        channel,
        target,
        state,
        attempts,
        next_attempt_at: next_attempt_at.map(|t| t.and_utc()),
        last_error,
        created_at: created_at.and_utc(),
        delivered_at: delivered_at.map(|t| t.and_utc()),
        attempt_log: None,
    }
}

/// Which deliveries `list` returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub state: Option<DeliveryState>,
    pub kind: Option<EventKind>,
    pub channel: Option<String>,
    pub event_id: Option<String>,
    /// Only deliveries with a smaller id (the next page).
    pub before_id: Option<i64>,
    /// Clamped to 1..=1000; 0 = 100.
    pub limit: i64,
}

/// Deliveries matching `filter`, newest first.
pub fn list(db: &ControlDb, filter: &Filter) -> Result<DeliveryPage> {
    let mut conn = db.conn()?;
    let mut q = deliveries::table
        .inner_join(outbox::table)
        .select((
            deliveries::id,
            deliveries::event_id,
            outbox::kind,
            outbox::tenant_id,
            deliveries::channel,
            deliveries::target,
            deliveries::state,
            deliveries::attempts,
            deliveries::next_attempt_at,
            deliveries::last_error,
            deliveries::created_at,
            deliveries::delivered_at,
        ))
        .order(deliveries::id.desc())
        .limit(if filter.limit == 0 {
            100
        } else {
            filter.limit.clamp(1, 1000)
        })
        .into_boxed();
    if let Some(s) = filter.state {
        q = q.filter(deliveries::state.eq(s.as_str()));
    }
    if let Some(k) = filter.kind {
        q = q.filter(outbox::kind.eq(k.as_str()));
    }
    if let Some(c) = &filter.channel {
        q = q.filter(deliveries::channel.eq(c.clone()));
    }
    if let Some(e) = &filter.event_id {
        q = q.filter(deliveries::event_id.eq(e.clone()));
    }
    if let Some(b) = filter.before_id {
        q = q.filter(deliveries::id.lt(b));
    }
    let rows: Vec<Row> = q.load(&mut conn)?;
    Ok(DeliveryPage {
        items: rows.into_iter().map(view).collect(),
    })
}

fn find(conn: &mut ControlConnection, id: i64) -> Result<Delivery> {
    let row: Option<Row> = deliveries::table
        .inner_join(outbox::table)
        .filter(deliveries::id.eq(id))
        .select((
            deliveries::id,
            deliveries::event_id,
            outbox::kind,
            outbox::tenant_id,
            deliveries::channel,
            deliveries::target,
            deliveries::state,
            deliveries::attempts,
            deliveries::next_attempt_at,
            deliveries::last_error,
            deliveries::created_at,
            deliveries::delivered_at,
        ))
        .first(conn)
        .optional()?;
    row.map(view)
        .ok_or_else(|| Error::not_found("delivery", id.to_string()))
}

/// One delivery with every attempt, oldest first.
pub fn get(db: &ControlDb, id: i64) -> Result<Delivery> {
    let mut conn = db.conn()?;
    let mut d = find(&mut conn, id)?;
    type A = (
        i32,
        NaiveDateTime,
        Option<i32>,
        i64,
        String,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<A> = att::table
        .filter(att::delivery_id.eq(id))
        .order(att::id)
        .select((
            att::attempt,
            att::started_at,
            att::status,
            att::latency_ms,
            att::outcome,
            att::error,
            att::response_excerpt,
        ))
        .load(&mut conn)?;
    d.attempt_log = Some(
        rows.into_iter()
            .map(
                |(attempt, started_at, status, latency_ms, outcome, error, response_excerpt)| {
                    DeliveryAttempt {
                        attempt,
                        started_at: started_at.and_utc(),
                        status,
                        latency_ms,
                        outcome,
                        error,
                        response_excerpt,
                    }
                },
            )
            .collect(),
    );
    Ok(d)
}

/// Queues a dead (or skipped) delivery again with a fresh set of attempts.
/// A conflict for deliveries still open or already delivered.
pub fn retry(db: &ControlDb, actor: &Actor, id: i64) -> Result<Delivery> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let d = find(conn, id)?;
        if d.state != DeliveryState::Dead.as_str() && d.state != DeliveryState::Skipped.as_str() {
            return Err(Error::Conflict(format!(
                "delivery {id} is {}: only dead or skipped deliveries can be retried",
                d.state
            )));
        }
        requeue(conn, id)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "delivery.retry",
                resource_type: "delivery",
                resource_id: Some(&id.to_string()),
                tenant_id: d.tenant_id.as_deref(),
                before: Some(serde_json::json!({ "state": d.state })),
                after: Some(serde_json::json!({ "state": "pending" })),
            },
        )?;
        find(conn, id)
    })
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub deliveries: usize,
    pub attempts: usize,
}

/// Removes delivered and skipped deliveries (with their attempts) last
/// changed before `before`, and the dispatched events older than `before`
/// that have no delivery left. Dead deliveries, and so their events, stay
/// until an operator retries them. Replays reach back only as far as the
/// events kept.
pub fn prune(db: &ControlDb, before: NaiveDateTime) -> Result<Pruned> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let done = [
            DeliveryState::Delivered.as_str(),
            DeliveryState::Skipped.as_str(),
        ];
        let old = deliveries::table
            .filter(deliveries::state.eq_any(done))
            .filter(deliveries::updated_at.lt(before))
            .select(deliveries::id);
        let attempts =
            diesel::delete(att::table.filter(att::delivery_id.eq_any(old))).execute(conn)?;
        let removed = diesel::delete(
            deliveries::table
                .filter(deliveries::state.eq_any(done))
                .filter(deliveries::updated_at.lt(before)),
        )
        .execute(conn)?;
        let events = diesel::delete(
            outbox::table
                .filter(outbox::created_at.lt(before))
                .filter(outbox::dispatched_at.is_not_null())
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    deliveries::table.filter(deliveries::event_id.eq(outbox::id)),
                ))),
        )
        .execute(conn)?;
        Ok(Pruned {
            events,
            deliveries: removed,
            attempts,
        })
    })
}
