//! Draining a server: it is marked `draining` (no new tenants), then a
//! durable job ([`DrainJob`]) moves its live tenants one by one to other
//! active servers ([`crate::moving::move_tenant`]), preferring servers of
//! the same kind, then any compatible one, with the most free room first.
//!
//! Progress is the server itself: the live tenants left on it, against how
//! many there were when the drain started ([`drain_status`]). A tenant
//! that cannot move (no room anywhere, a failed copy) is skipped for the
//! pass and the job fails transiently at its end, so the queue retries it
//! with backoff. Setting the server `active` again stops the drain after
//! the tenant in hand.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::schema::{database_servers, jobs, tenants};
use tenantplane_control_db::states::ServerStatus;
use tenantplane_fleet::servers::{self, DatabaseServer};
use tenantplane_jobs::{Job, JobContext, JobError};

use crate::manifest::ServerKind;
use crate::moving::{move_tenant, Moved};
use crate::store::ArtifactStore;

/// The job that empties one server. At most one is queued per server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainJob {
    pub server_id: String,
    /// Live tenants on the server when the drain started.
    pub total: i64,
    /// Who asked (recorded in the audit log of every move).
    pub actor: String,
}

/// Some tenants could not be moved in this pass.
#[derive(Debug, thiserror::Error)]
#[error("{failed} tenant(s) could not be moved off the server this pass; last: {last}")]
struct Unfinished {
    failed: usize,
    last: String,
}

impl Job for DrainJob {
    const KIND: &'static str = "server.drain";
    const MAX_ATTEMPTS: i32 = 20;

    fn dedup_key(&self) -> Option<String> {
        Some(self.server_id.clone())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let store = crate::jobs::job_store()?;
        let actor = Actor {
            id: self.actor.clone(),
            ..Actor::default()
        };
        drain(ctx, store.as_ref(), &actor, &self.server_id)
    }
}

/// One pass over the server's live tenants.
fn drain(
    ctx: &JobContext,
    store: &dyn ArtifactStore,
    actor: &Actor,
    server_id: &str,
) -> Result<(), JobError> {
    let db = ctx.db();
    let mut failed = 0usize;
    let mut last = String::new();
    let mut moved = 0usize;
    let mut skipped: Vec<String> = Vec::new();
    loop {
        let mut conn = db.conn()?;
        let server = servers::find(&mut conn, server_id)?;
        if server.status != ServerStatus::Draining.as_str() {
            tracing::info!(server = %server.name, status = %server.status, "drain stopped: the server is no longer draining");
            return Ok(());
        }
        if ctx.stopping() {
            return Err(JobError::transient(Unfinished {
                failed,
                last: "the worker is stopping".into(),
            }));
        }
        // The next live tenant not skipped in this pass.
        let next: Option<String> = tenants::table
            .filter(tenants::server_id.eq(&server.id))
            .filter(tenants::deleted_at.is_null())
            .filter(tenants::id.ne_all(skipped.clone()))
            .order((tenants::created_at.asc(), tenants::id.asc()))
            .select(tenants::id)
            .first(&mut conn)
            .optional()
            .map_err(Error::from)?;
        let Some(tenant_id) = next else { break };
        let outcome = not_moving(&mut conn, &tenant_id)
            .and_then(|()| target_for(&mut conn, &server))
            .and_then(|target| {
                drop(conn);
                move_tenant(db, store, actor, &tenant_id, &server.id, &target.id)
            });
        match outcome {
            Ok(Moved::Moved) => moved += 1,
            Ok(Moved::Superseded) => {}
            Err(e) => {
                tracing::warn!(tenant_id, server = %server.name, error = %report(&e), "drain: tenant not moved");
                failed += 1;
                last = format!("{tenant_id}: {e}");
                skipped.push(tenant_id);
            }
        }
    }
    tracing::info!(server_id, moved, failed, "drain pass done");
    if failed > 0 {
        return Err(JobError::transient(Unfinished { failed, last }));
    }
    Ok(())
}

/// A tenant whose own move job is still open (asked for before the drain,
/// perhaps still dropping its old copy) is left to it for this pass: two
/// moves of one tenant at once could drop the copy the other just made.
fn not_moving(conn: &mut ControlConnection, tenant_id: &str) -> Result<()> {
    match tenantplane_jobs::open_job(conn, crate::moving::MoveJob::KIND, tenant_id)? {
        Some((job, _)) => Err(Error::Conflict(format!(
            "its move (job {job}) has not ended yet"
        ))),
        None => Ok(()),
    }
}

/// Where a tenant of `from` goes: an active server of the same kind with
/// room, else one of a compatible kind; the most free room first.
fn target_for(conn: &mut ControlConnection, from: &DatabaseServer) -> Result<DatabaseServer> {
    let kind = ServerKind::of(from);
    let sqlite = kind == ServerKind::Sqlite;
    let active: Vec<DatabaseServer> = database_servers::table
        .filter(database_servers::status.eq(ServerStatus::Active.as_str()))
        .filter(database_servers::id.ne(&from.id))
        .select(DatabaseServer::as_select())
        .order(database_servers::created_at.asc())
        .load(conn)?;
    let mut best: Option<(bool, i64, DatabaseServer)> = None;
    for s in active {
        let k = ServerKind::of(&s);
        if (k == ServerKind::Sqlite) != sqlite {
            continue;
        }
        let free = i64::from(s.capacity) - servers::databases_on(conn, &s.id)?;
        if free <= 0 {
            continue;
        }
        let rank = (k == kind, free);
        if best.as_ref().is_none_or(|(same, f, _)| rank > (*same, *f)) {
            best = Some((rank.0, rank.1, s));
        }
    }
    best.map(|(_, _, s)| s).ok_or_else(|| {
        Error::Conflict(format!(
            "no other active {} server has room for the tenants of '{}'",
            if sqlite { "sqlite" } else { "postgres" },
            from.name
        ))
    })
}

/// A drain as the API shows it.
#[derive(Debug, Clone)]
pub struct DrainStatus {
    pub server_id: String,
    pub job_id: i64,
    pub state: String,
    pub total: i64,
    pub moved: i64,
    pub remaining: i64,
    pub last_error: Option<String>,
}

/// Marks the server `draining` (audited) and queues its drain. A drain
/// already queued or running is returned as it is. A retired server has
/// nothing to drain (409).
pub fn start_drain(db: &ControlDb, actor: &Actor, server: &str) -> Result<DrainStatus> {
    let mut conn = db.conn()?;
    let (server_id, job_id) = write_tx(&mut conn, None, |conn| {
        let s = servers::find(conn, server)?;
        if s.status == ServerStatus::Retired.as_str() {
            return Err(Error::Conflict(format!(
                "server '{}' is retired: it holds no tenants to drain",
                s.name
            )));
        }
        if s.status != ServerStatus::Draining.as_str() {
            diesel::update(database_servers::table.find(&s.id))
                .set(database_servers::status.eq(ServerStatus::Draining.as_str()))
                .execute(conn)?;
            audit::record(
                conn,
                actor,
                Change {
                    action: "server.drain",
                    resource_type: "server",
                    resource_id: Some(&s.id),
                    tenant_id: None,
                    before: Some(serde_json::json!({ "status": s.status })),
                    after: Some(serde_json::json!({ "status": ServerStatus::Draining.as_str() })),
                },
            )?;
        }
        let job = DrainJob {
            server_id: s.id.clone(),
            total: servers::live_tenants(conn, &s.id)?,
            actor: actor.id.clone(),
        };
        Ok((s.id, tenantplane_jobs::enqueue(conn, &job)?.id()))
    })?;
    status_of(&mut conn, &server_id, job_id)
}

/// The server's latest drain and its progress (404 when it was never
/// drained).
pub fn drain_status(db: &ControlDb, server: &str) -> Result<DrainStatus> {
    let mut conn = db.conn()?;
    let s = servers::find(&mut conn, server)?;
    let job_id: Option<i64> = jobs::table
        .filter(jobs::kind.eq(DrainJob::KIND))
        .filter(jobs::dedup_key.eq(&s.id))
        .order(jobs::id.desc())
        .select(jobs::id)
        .first(&mut conn)
        .optional()?;
    let job_id = job_id.ok_or_else(|| Error::not_found("drain of server", server))?;
    status_of(&mut conn, &s.id, job_id)
}

fn status_of(conn: &mut ControlConnection, server_id: &str, job_id: i64) -> Result<DrainStatus> {
    let (payload, state, last_error): (String, String, Option<String>) = jobs::table
        .find(job_id)
        .select((jobs::payload, jobs::state, jobs::last_error))
        .first(conn)?;
    let job: DrainJob = serde_json::from_str(&payload)
        .map_err(|e| Error::invalid(format!("job {job_id} is not a drain: {e}")))?;
    let remaining = servers::live_tenants(conn, server_id)?;
    Ok(DrainStatus {
        server_id: server_id.to_string(),
        job_id,
        state,
        total: job.total,
        moved: (job.total - remaining).max(0),
        remaining,
        last_error,
    })
}
