//! `Idempotency-Key`: a client that lost the answer to a POST and sends it
//! again with the same key gets the first answer back instead of a second
//! effect. Keys are per credential (`scope`), remembered for a day.
//!
//! [`begin`] claims the key with an insert that only one request can win
//! (the primary key), so two copies sent at once cannot both run; the winner
//! runs and [`finish`]es with its answer, or [`abandon`]s the key when it
//! failed, so a retry may run again.

use chrono::{Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use crate::db::{write_tx, ControlConnection, ControlDb};
use crate::error::{Error, Result};
use crate::schema::idempotency_keys;

/// How long a key is remembered.
pub const KEEP: Duration = Duration::hours(24);

/// What [`begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The key is ours: run the request, then `finish` or `abandon`.
    Run,
    /// The same request finished before: its answer.
    Replay { status: u16, response: String },
    /// The same request is running right now.
    InProgress,
}

/// A request's fingerprint: method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// A key is 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// Claims `key` for a request with fingerprint `hash`, or says what became
/// of the request that claimed it. The same key with another request is
/// `Invalid` (a client bug: keys are per request).
pub fn begin(db: &ControlDb, scope: &str, key: &str, hash: &str) -> Result<Begun> {
    check_key(key)?;
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    write_tx(&mut conn, None, |conn| {
        // A key from more than a day ago is forgotten.
        diesel::delete(
            idempotency_keys::table
                .filter(idempotency_keys::scope.eq(scope))
                .filter(idempotency_keys::key.eq(key))
                .filter(idempotency_keys::created_at.lt(now - KEEP)),
        )
        .execute(conn)?;
        let insert = diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::scope.eq(scope),
                idempotency_keys::key.eq(key),
                idempotency_keys::request_hash.eq(hash),
                idempotency_keys::created_at.eq(now),
            ))
            .on_conflict_do_nothing();
        // Not a caught unique violation: on PostgreSQL a failed statement
        // aborts the whole transaction.
        let inserted = match conn {
            ControlConnection::Postgres(c) => insert.execute(c)?,
            ControlConnection::Sqlite(c) => insert.execute(c)?,
        };
        if inserted == 1 {
            return Ok(Begun::Run);
        }
        let (first_hash, status, response): (String, Option<i32>, Option<String>) =
            idempotency_keys::table
                .find((scope, key))
                .select((
                    idempotency_keys::request_hash,
                    idempotency_keys::status,
                    idempotency_keys::response,
                ))
                .first(conn)?;
        if first_hash != hash {
            return Err(Error::invalid(format!(
                "Idempotency-Key {key:?} was used for another request; use a new key per request"
            )));
        }
        Ok(match (status, response) {
            (Some(s), Some(r)) => Begun::Replay {
                status: u16::try_from(s).unwrap_or(500),
                response: r,
            },
            _ => Begun::InProgress,
        })
    })
}

/// Records the answer of a request that ran under `key`.
pub fn finish(db: &ControlDb, scope: &str, key: &str, status: u16, response: &str) -> Result<()> {
    diesel::update(idempotency_keys::table.find((scope, key)))
        .set((
            idempotency_keys::status.eq(Some(i32::from(status))),
            idempotency_keys::response.eq(Some(response)),
        ))
        .execute(&mut *db.conn()?)?;
    Ok(())
}

/// Frees `key` after its request failed, so the client may retry it.
pub fn abandon(db: &ControlDb, scope: &str, key: &str) -> Result<()> {
    diesel::delete(
        idempotency_keys::table
            .find((scope, key))
            .filter(idempotency_keys::status.is_null()),
    )
    .execute(&mut *db.conn()?)?;
    Ok(())
}

/// Deletes keys older than [`KEEP`] (with the jobs' pruning).
pub fn prune(db: &ControlDb, now: NaiveDateTime) -> Result<usize> {
    Ok(
        diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(now - KEEP)))
            .execute(&mut *db.conn()?)?,
    )
}
