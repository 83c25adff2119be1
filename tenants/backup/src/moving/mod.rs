//! Moving a tenant to another database server: a backup of the tenant,
//! restored on the target as a new location, checked against the backup's
//! manifest, then the tenant's placement (`tenants.server_id`) switched in
//! one control-DB transaction; the source is dropped only after that.
//!
//! The control DB's `server_id` is the one place that says where a tenant
//! is served from, and it changes in one transaction, so a process killed
//! at any point leaves the tenant served from exactly one place: the
//! source before the switch, the target after it. What a kill can leave
//! behind is a copy that is not served: a half-made target (before the
//! switch) or the old source (after it). The move runs as a durable job
//! ([`MoveJob`]): a killed worker's lease expires, another claims it, and
//! [`move_tenant`] is idempotent, so the retry first removes whatever copy
//! is not the served one and then carries on.
//!
//! The tenant is held still for the whole copy: PostgreSQL tenants by their
//! advisory lock (the one migrations take), SQLite tenants by holding the
//! file's write lock (`BEGIN IMMEDIATE`; readers and the snapshot's read
//! transaction go on, migrations and other writers wait). So nothing is
//! written to the source between the snapshot and the switch.
//!
//! Modules: `request` (checking and queueing a move, its status), `place`
//! (where a tenant would be, the source's lock, dropping a leftover copy),
//! `copy` (restoring the backup on the target and checking it); this file
//! has the job, the idempotent run and the switch.

mod copy;
mod place;
mod request;

use chrono::Utc;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::schema::tenants;
use tenantplane_control_db::states::{ServerStatus, TenantStatus};
use tenantplane_fleet::servers::{self, DatabaseServer};
use tenantplane_jobs::{Job, JobContext, JobError};

use crate::backup::create_by;
use crate::manifest::Manifest;
use crate::rows::Reason;
use crate::store::ArtifactStore;
use copy::copy_to;
use place::{drop_copy, location_on, physical, SourceLock};
use request::migrating;

#[cfg(test)]
pub(crate) use place::hold_for_test;
pub use request::{check_move, latest_move, start_move, MoveStatus};

/// The job that moves one tenant. At most one is queued per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveJob {
    pub tenant_id: String,
    /// The server the tenant was on when the move was asked for.
    pub from_server: String,
    pub to_server: String,
    /// Who asked (recorded in the audit log).
    pub actor: String,
}

impl Job for MoveJob {
    const KIND: &'static str = "tenant.move";
    const MAX_ATTEMPTS: i32 = 10;

    fn dedup_key(&self) -> Option<String> {
        Some(self.tenant_id.clone())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let store = crate::jobs::job_store()?;
        let actor = Actor {
            id: self.actor.clone(),
            ..Actor::default()
        };
        match move_tenant(
            ctx.db(),
            store.as_ref(),
            &actor,
            &self.tenant_id,
            &self.from_server,
            &self.to_server,
        ) {
            Ok(_) => Ok(()),
            // The tenant busy (a migration, provisioning): later.
            Err(e @ Error::Conflict(_)) => Err(JobError::transient(e)),
            Err(e) => Err(e.into()),
        }
    }
}

/// What [`move_tenant`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// The tenant is now served from the target (this run switched it, or
    /// an earlier one did and this run removed the source's leftovers).
    Moved,
    /// The tenant is on neither server any more, or gone: nothing to do
    /// (any copy left on the target was removed).
    Superseded,
}

/// Moves one tenant from `from` to `to` (server ids). Idempotent: run it
/// again after any failure or kill and it finishes the move or cleans up.
pub fn move_tenant(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    actor: &Actor,
    tenant_id: &str,
    from: &str,
    to: &str,
) -> Result<Moved> {
    let mut conn = db.conn()?;
    let row = match tenantplane_fleet::registry::find_any(&mut conn, tenant_id) {
        Ok(r) => r,
        Err(Error::NotFound { .. }) => return Ok(Moved::Superseded),
        Err(e) => return Err(e),
    };
    let slug = row.slug.clone();
    let source = servers::find(&mut conn, from)?;
    let target = servers::find(&mut conn, to)?;
    let src = location_on(&source, &row.id)?;
    let dst = location_on(&target, &row.id)?;
    if physical(&src) == physical(&dst) {
        return Err(Error::invalid(format!(
            "servers '{}' and '{}' put tenant '{slug}' in the same place",
            source.name, target.name
        )));
    }
    if row.server_id == target.id {
        // Switched by an earlier run that died before dropping the source.
        drop_copy(&src, &slug, "old source")?;
        return Ok(Moved::Moved);
    }
    if row.server_id != source.id || row.deleted_at.is_some() {
        drop_copy(&dst, &slug, "unfinished target")?;
        return Ok(Moved::Superseded);
    }
    if row.status == TenantStatus::Provisioning.as_str() {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is still being provisioned"
        )));
    }
    // The target was checked when the move was asked for; an operator may
    // have started draining or retired it since (a permanent refusal: the
    // job ends with this message, the tenant stays where it is).
    if target.status != ServerStatus::Active.as_str() {
        return Err(Error::invalid(format!(
            "server '{}' is {} and takes no new tenants; tenant '{slug}' stays on '{}'",
            target.name, target.status, source.name
        )));
    }
    migrating(&mut conn, &row.id, &slug)?;
    drop(conn);

    let lock = SourceLock::take(&src, &row.id, &slug)?;
    // Under the lock: the placement may have changed while we waited.
    let now_on: String = tenants::table
        .find(&row.id)
        .select(tenants::server_id)
        .first(&mut *db.conn()?)?;
    if now_on != source.id {
        drop(lock);
        return move_tenant(db, store, actor, tenant_id, from, to);
    }
    // A copy on the target now is an interrupted attempt's: never served.
    drop_copy(&dst, &slug, "unfinished target")?;
    tracing::info!(tenant_id = %row.id, slug, from = %source.name, to = %target.name, "moving tenant");
    let backup = create_by(db, store, &row.id, Reason::Manual, actor)?;
    let copied = copy_to(db, store, &backup.id, &dst, &row.id, &slug);
    if let Err(e) = &copied {
        tracing::warn!(tenant_id = %row.id, error = %report(e), "move: the copy failed; removing it");
        if let Err(e) = dst.drop_if_exists() {
            tracing::warn!(tenant_id = %row.id, error = %report(&e), "move: cannot remove the failed copy (the retry will)");
        }
    }
    let manifest = copied?;
    if let Err(e) = switch(db, actor, &row.id, &source, &target, &manifest) {
        // A conflict is known not to have switched: the copy goes. Any
        // other failure may have committed; the retry reads the placement
        // and cleans up the side that is not served.
        if matches!(e, Error::Conflict(_)) {
            if let Err(d) = dst.drop_if_exists() {
                tracing::warn!(tenant_id = %row.id, error = %report(&d), "move: cannot remove the unused copy (the retry will)");
            }
        }
        return Err(e);
    }
    drop(lock);
    // Served from the target now; the source goes. A failure here leaves
    // it for the retry (the tenant is already served from the target).
    drop_copy(&src, &slug, "old source")?;
    tracing::info!(tenant_id = %row.id, slug, to = %target.name, backup_id = %backup.id, "tenant moved");
    Ok(Moved::Moved)
}

/// The switch: the tenant's placement moves to the target in one control-DB
/// transaction, only if it is still on the source; audited, change counter
/// bumped (evaluation caches and connection routing follow it).
fn switch(
    db: &ControlDb,
    actor: &Actor,
    tenant_id: &str,
    source: &DatabaseServer,
    target: &DatabaseServer,
    manifest: &Manifest,
) -> Result<()> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        // A rollout task claimed since the move started located the tenant
        // on the source and will migrate it there once the lock is free:
        // switching now would lose that migration. Checked in the switch's
        // own transaction, which a claim (a control-DB write) cannot
        // overtake on SQLite; the move is retried after the task.
        let slug: String = tenants::table
            .find(tenant_id)
            .select(tenants::slug)
            .first(conn)?;
        migrating(conn, tenant_id, &slug)?;
        let n = diesel::update(
            tenants::table
                .find(tenant_id)
                .filter(tenants::server_id.eq(&source.id)),
        )
        .set((
            tenants::server_id.eq(&target.id),
            tenants::updated_at.eq(Utc::now().naive_utc()),
        ))
        .execute(conn)?;
        if n != 1 {
            return Err(Error::Conflict(format!(
                "tenant {tenant_id} left server '{}' during its move",
                source.name
            )));
        }
        changes::bump(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "tenant.move",
                resource_type: "tenant",
                resource_id: Some(tenant_id),
                tenant_id: Some(tenant_id),
                before: Some(serde_json::json!({ "server_id": source.id, "server": source.name })),
                after: Some(serde_json::json!({
                    "server_id": target.id,
                    "server": target.name,
                    "backup_id": manifest.backup_id,
                    "schema_version": manifest.schema_version,
                    "rows": manifest.tables.values().map(|t| t.rows).sum::<u64>(),
                })),
            },
        )
    })
}
