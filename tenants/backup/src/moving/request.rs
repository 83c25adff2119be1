//! Asking for a move: the checks (bad input changes nothing), queueing the
//! job, and the move's status as the API shows it.

use diesel::prelude::*;
use tenantplane_control_db::audit::Actor;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::{jobs, tasks};
use tenantplane_control_db::states::{ServerStatus, TaskState, TenantStatus};
use tenantplane_fleet::servers::{self, DatabaseServer};
use tenantplane_jobs::Job;

use super::place::{compatible, location_on, physical};
use super::MoveJob;
use crate::backup::locate;
use crate::drain::DrainJob;
use crate::manifest::ServerKind;

/// Checks that `tenant` can move to `to` now: it exists, is not deleted or
/// provisioning, is not being migrated; the target is another server,
/// active, with room, of a compatible kind, and not the same physical
/// place. Returns the tenant's id and both servers.
pub fn check_move(
    conn: &mut ControlConnection,
    tenant: &str,
    to: &str,
) -> Result<(String, DatabaseServer, DatabaseServer)> {
    let at = locate(conn, tenant, false)?;
    let slug = &at.tenant.slug;
    if at.tenant.status == TenantStatus::Provisioning.as_str() {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is still being provisioned"
        )));
    }
    let target =
        servers::find(conn, to).map_err(|_| Error::invalid(format!("unknown server '{to}'")))?;
    if target.id == at.server.id {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is already on server '{}'",
            target.name
        )));
    }
    if target.status != ServerStatus::Active.as_str() {
        return Err(Error::Conflict(format!(
            "server '{}' is {} and takes no new tenants",
            target.name, target.status
        )));
    }
    let on_target = servers::databases_on(conn, &target.id)?;
    if on_target >= i64::from(target.capacity) {
        return Err(Error::Conflict(format!(
            "server '{}' is full ({} tenants)",
            target.name, target.capacity
        )));
    }
    let (from_kind, to_kind) = (at.kind, ServerKind::of(&target));
    if !compatible(from_kind, to_kind) {
        return Err(Error::invalid(format!(
            "tenant '{slug}' is on a {from_kind} server; it can move to a {} server, not to '{}' ({to_kind})",
            if from_kind == ServerKind::Sqlite { "sqlite" } else { "postgres" },
            target.name
        )));
    }
    if physical(&location_on(&target, &at.tenant.id)?) == physical(&at.location) {
        return Err(Error::invalid(format!(
            "server '{}' would put tenant '{slug}' in the place it already is ({}): same PostgreSQL cluster with database isolation",
            target.name,
            physical(&at.location)
        )));
    }
    migrating(conn, &at.tenant.id, slug)?;
    if let Some((job, _)) = tenantplane_jobs::open_job(conn, DrainJob::KIND, &at.server.id)? {
        // The drain moves this tenant itself; two moves of one tenant at
        // once could drop the copy the other one just made.
        return Err(Error::Conflict(format!(
            "server '{}' is being drained (job {job}), which moves tenant '{slug}'",
            at.server.name
        )));
    }
    Ok((at.tenant.id.clone(), at.server, target))
}

/// A rollout migrating the tenant right now: its run holds the source's
/// lock and writes to it, so the move waits (a conflict, retried).
pub(super) fn migrating(conn: &mut ControlConnection, tenant_id: &str, slug: &str) -> Result<()> {
    let running: i64 = tasks::table
        .filter(tasks::tenant_id.eq(tenant_id))
        .filter(tasks::state.eq(TaskState::Running.as_str()))
        .count()
        .get_result(conn)?;
    if running > 0 {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is being migrated by a rollout; it moves once that is done"
        )));
    }
    Ok(())
}

/// Queues the move of `tenant` to `to` (checked first: bad input changes
/// nothing). A move already queued for the tenant is returned instead.
pub fn start_move(db: &ControlDb, actor: &Actor, tenant: &str, to: &str) -> Result<MoveStatus> {
    let mut conn = db.conn()?;
    let job_id = write_tx(&mut conn, None, |conn| {
        let (tenant_id, from, target) = check_move(conn, tenant, to)?;
        let job = MoveJob {
            tenant_id,
            from_server: from.id,
            to_server: target.id,
            actor: actor.id.clone(),
        };
        let queued = tenantplane_jobs::enqueue(conn, &job)?;
        if !queued.is_new() {
            // The tenant's move still open: the same move is this request;
            // another one must wait for it to end.
            let open = move_status_of(conn, queued.id())?;
            if open.job.to_server != job.to_server {
                return Err(Error::Conflict(format!(
                    "tenant '{tenant}' is being moved to another server (job {}); ask again once it ends",
                    open.job_id
                )));
            }
        }
        Ok(queued.id())
    })?;
    move_status_of(&mut conn, job_id)
}

/// A move job as the API shows it.
#[derive(Debug, Clone)]
pub struct MoveStatus {
    pub job_id: i64,
    pub job: MoveJob,
    pub state: String,
    pub last_error: Option<String>,
}

fn move_status_of(conn: &mut ControlConnection, job_id: i64) -> Result<MoveStatus> {
    let (payload, state, last_error): (String, String, Option<String>) = jobs::table
        .find(job_id)
        .select((jobs::payload, jobs::state, jobs::last_error))
        .first(conn)?;
    let job: MoveJob = serde_json::from_str(&payload)
        .map_err(|e| Error::invalid(format!("job {job_id} is not a move: {e}")))?;
    Ok(MoveStatus {
        job_id,
        job,
        state,
        last_error,
    })
}

/// The tenant's latest move (404 when it never moved).
pub fn latest_move(db: &ControlDb, tenant: &str) -> Result<MoveStatus> {
    let mut conn = db.conn()?;
    let id = tenantplane_fleet::registry::find_any(&mut conn, tenant)?.id;
    let job_id: Option<i64> = jobs::table
        .filter(jobs::kind.eq(MoveJob::KIND))
        .filter(jobs::dedup_key.eq(&id))
        .order(jobs::id.desc())
        .select(jobs::id)
        .first(&mut conn)
        .optional()?;
    let job_id = job_id.ok_or_else(|| Error::not_found("move of tenant", tenant))?;
    move_status_of(&mut conn, job_id)
}
