//! Operator console sessions: a random session token in an HttpOnly cookie,
//! stored as SHA-256, with an expiry, revocable; each carries its CSRF token.

use chrono::{Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::Result;
use tenantplane_control_db::schema::console_sessions;

use crate::tokens::{generate, hash};

/// How long a console session lasts after sign-in.
pub const LIFETIME_HOURS: i64 = 12;

/// `last_seen_at` is written at most this often per session, so browsing
/// costs a write a minute, not one per request (an SSE page polls often).
pub const TOUCH_EVERY_S: i64 = 60;

/// A session just created: the token goes into the cookie and is never
/// stored in clear.
pub struct NewSession {
    pub id: String,
    pub token: String,
    pub csrf_token: String,
    pub expires_at: NaiveDateTime,
}

/// A live session, as a request finds it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = console_sessions)]
pub struct Session {
    pub id: String,
    pub csrf_token: String,
    pub expires_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
}

impl Session {
    /// The audit actor id of this session: `console:<first 8 of the id>`.
    pub fn actor_id(&self) -> String {
        format!("console:{}", &self.id[..self.id.len().min(8)])
    }
}

/// Signs an operator in (the caller has checked the operator token): a new
/// session, audited as `console.login`.
pub fn create(db: &ControlDb, actor: &Actor) -> Result<NewSession> {
    let id = Uuid::new_v4().to_string();
    let token = generate("tp_cs_");
    let csrf_token = generate("");
    let now = Utc::now().naive_utc();
    let expires_at = now + Duration::hours(LIFETIME_HOURS);
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        sweep_expired(conn, now)?;
        diesel::insert_into(console_sessions::table)
            .values((
                console_sessions::id.eq(&id),
                console_sessions::token_hash.eq(hash(&token)),
                console_sessions::csrf_token.eq(&csrf_token),
                console_sessions::created_at.eq(now),
                console_sessions::expires_at.eq(expires_at),
                console_sessions::last_seen_at.eq(now),
                console_sessions::ip.eq(&actor.ip),
                console_sessions::user_agent.eq(&actor.user_agent),
            ))
            .execute(conn)?;
        let session_actor = Actor {
            id: format!("console:{}", &id[..8]),
            ..actor.clone()
        };
        audit::record(
            conn,
            &session_actor,
            Change {
                action: "console.login",
                resource_type: "console_session",
                resource_id: Some(&id),
                tenant_id: None,
                before: None,
                after: Some(serde_json::json!({ "expires_at": expires_at })),
            },
        )
    })?;
    Ok(NewSession {
        id,
        token,
        csrf_token,
        expires_at,
    })
}

/// The live (not revoked, not expired) session a cookie token names.
pub fn find(db: &ControlDb, token: &str) -> Result<Option<Session>> {
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    Ok(console_sessions::table
        .filter(console_sessions::token_hash.eq(hash(token)))
        .filter(console_sessions::revoked_at.is_null())
        .filter(console_sessions::expires_at.gt(now))
        .select(Session::as_select())
        .first(&mut conn)
        .optional()?)
}

/// Sessions past their expiry (signed out or not) are of no use: they are
/// deleted at each sign-in and each [`touch`] (the audit log keeps who
/// signed in and out). Uses the index on `expires_at`.
fn sweep_expired(conn: &mut ControlConnection, now: NaiveDateTime) -> Result<usize> {
    Ok(
        diesel::delete(console_sessions::table.filter(console_sessions::expires_at.lt(now)))
            .execute(conn)?,
    )
}

/// Records that the session was used: `last_seen_at` is written when it is
/// older than [`TOUCH_EVERY_S`] (else nothing happens and no write lock is
/// taken), and expired sessions are swept along with it. Returns whether it
/// wrote.
pub fn touch(db: &ControlDb, session: &Session) -> Result<bool> {
    let now = Utc::now().naive_utc();
    let stale_before = now - Duration::seconds(TOUCH_EVERY_S);
    if session.last_seen_at >= stale_before {
        return Ok(false);
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        // Another request of the session may have touched it meanwhile:
        // the condition makes this one a no-op then.
        let n = diesel::update(
            console_sessions::table
                .find(&session.id)
                .filter(console_sessions::last_seen_at.lt(stale_before)),
        )
        .set(console_sessions::last_seen_at.eq(now))
        .execute(conn)?;
        if n > 0 {
            sweep_expired(conn, now)?;
        }
        Ok(n > 0)
    })
}

/// Signs a session out: the cookie is useless from now on.
pub fn revoke(db: &ControlDb, actor: &Actor, id: &str) -> Result<()> {
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    write_tx(&mut conn, None, |conn| {
        diesel::update(console_sessions::table.find(id))
            .set(console_sessions::revoked_at.eq(now))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "console.logout",
                resource_type: "console_session",
                resource_id: Some(id),
                tenant_id: None,
                before: None,
                after: None,
            },
        )
    })
}
