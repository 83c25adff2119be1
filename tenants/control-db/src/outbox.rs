//! The outbox: one row per event, written by [`record`] inside the write
//! transaction of the change that causes it, so an event exists if and only
//! if its change committed. The notify crate's relay fans the rows out into
//! deliveries; nothing here sends anything, so every domain crate can record
//! events without depending on the senders.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::db::ControlConnection;
use crate::error::{Error, Result};
use crate::schema::outbox;
pub use crate::states::EventKind;

/// Records an event of `kind` about `tenant_id` with `body` (one of the
/// `tenantplane_api_types::notify::*Event` types). Call it with the
/// connection of the transaction that makes the change. Returns the event's
/// id, a new uuid: the idempotency key of every delivery of it.
pub fn record<B: Serialize>(
    conn: &mut ControlConnection,
    kind: EventKind,
    tenant_id: Option<&str>,
    body: &B,
) -> Result<String> {
    insert(conn, kind, tenant_id, body, None).map(|id| id.unwrap_or_default())
}

/// [`record`] for an event that must exist once per fact (a trial ending):
/// when an event with `dedup_key` exists already nothing is written and
/// `None` comes back.
pub fn record_once<B: Serialize>(
    conn: &mut ControlConnection,
    kind: EventKind,
    tenant_id: Option<&str>,
    body: &B,
    dedup_key: &str,
) -> Result<Option<String>> {
    insert(conn, kind, tenant_id, body, Some(dedup_key))
}

fn insert<B: Serialize>(
    conn: &mut ControlConnection,
    kind: EventKind,
    tenant_id: Option<&str>,
    body: &B,
    dedup_key: Option<&str>,
) -> Result<Option<String>> {
    let body = serde_json::to_string(body)
        .map_err(|e| Error::invalid(format!("event {kind}: body is not JSON: {e}")))?;
    let id = uuid::Uuid::new_v4().to_string();
    // PostgreSQL keeps microseconds: the same instant on both backends.
    let now: NaiveDateTime = Utc::now().naive_utc().trunc_subsecs(6);
    let insert = diesel::insert_into(outbox::table)
        .values((
            outbox::id.eq(&id),
            outbox::kind.eq(kind.as_str()),
            outbox::tenant_id.eq(tenant_id),
            outbox::body.eq(&body),
            outbox::dedup_key.eq(dedup_key),
            outbox::created_at.eq(now),
        ))
        .on_conflict_do_nothing();
    // `ON CONFLICT DO NOTHING`: on PostgreSQL a caught unique violation
    // would abort the caller's whole transaction.
    let n = match conn {
        ControlConnection::Postgres(c) => insert.execute(c)?,
        ControlConnection::Sqlite(c) => insert.execute(c)?,
    };
    if n == 0 {
        return Ok(None);
    }
    tracing::debug!(event_id = %id, kind = %kind, "event recorded");
    Ok(Some(id))
}
