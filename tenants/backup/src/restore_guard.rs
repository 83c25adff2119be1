//! The restore guard: what makes a restore that was killed half way leave
//! the tenant served from one consistent place.
//!
//! A restore changes two databases that share no transaction: the tenant's
//! (the swap) and the control DB (its `schema_version`, the audit entry).
//! Before it touches the tenant, it queues a `restore.guard` job due in
//! [`DELAY`]; while it runs, a heartbeat keeps pushing that job into the
//! future; it withdraws the job in the same control-DB transaction that
//! records the restore. So the job only ever runs when the restoring process
//! died (or lost the control DB) somewhere between the two. Then, on any
//! worker, with the tenant's lock held, it:
//!
//! - drops the PostgreSQL staging schema the restore was loading;
//! - a new tenant the restore did not finish filling (its version is not
//!   the backup's) is removed, as a failed restore would have done;
//! - otherwise makes the control DB's `schema_version` the tenant's real
//!   one, and audits `tenant.restore.recovered` when that changed anything.
//!
//! A restore that failed cleanly leaves its guard too (it does not know
//! whether the failure came before or after the swap); the guard then finds
//! nothing to change.

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use serde::{Deserialize, Serialize};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{backups, tenants};
use tenantplane_fleet::registry::{self, Tenant};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbError, TenantDbLocation};
use tenantplane_jobs::{queue, Job, JobContext, JobError};

use crate::backup::{locate, Located};
use crate::heartbeat::Heartbeat;
use crate::held::{hold, Held};
use crate::postgres;

/// How long after the restoring process's last sign of life the guard
/// runs. Several heartbeats ([`crate::heartbeat::EVERY`]).
pub const DELAY: chrono::Duration = chrono::Duration::seconds(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    InPlace,
    NewTenant,
}

/// The job: which restore of which tenant it stands by for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreGuard {
    pub tenant_id: String,
    pub backup_id: String,
    pub mode: Mode,
    /// The backup's schema version: what a finished restore left.
    pub target_version: Option<String>,
    /// The PostgreSQL staging schema the restore loads into.
    pub staging: Option<String>,
}

/// A queued guard and the heartbeat keeping it in the future.
pub(crate) struct Armed {
    pub job_id: i64,
    _heartbeat: Heartbeat,
}

impl Armed {
    /// Withdraws the guard in the transaction that records the restore.
    pub(crate) fn disarm(&self, conn: &mut ControlConnection) -> Result<()> {
        queue::withdraw(conn, self.job_id)?;
        Ok(())
    }
}

/// Queues the guard and starts its heartbeat.
pub(crate) fn arm(db: &ControlDb, guard: &RestoreGuard) -> Result<Armed> {
    let job_id = {
        let mut conn = db.conn()?;
        write_tx(&mut conn, None, |conn| {
            queue::enqueue_at(conn, guard, Utc::now().naive_utc() + DELAY)
        })?
        .id()
    };
    let db = db.clone();
    let heartbeat = Heartbeat::start(format!("restore guard {job_id}"), move || {
        queue::postpone(&mut *db.conn()?, job_id, Utc::now().naive_utc() + DELAY)?;
        Ok(())
    });
    Ok(Armed {
        job_id,
        _heartbeat: heartbeat,
    })
}

impl Job for RestoreGuard {
    const KIND: &'static str = "restore.guard";
    const MAX_ATTEMPTS: i32 = 20;

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        recover(ctx.db(), self)?;
        Ok(())
    }
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// The newest applied migration of the tenant (`None`: empty schema),
/// without creating the migrations table as diesel's harness would.
fn current_version(
    conn: &mut TenantConnection,
) -> std::result::Result<Option<String>, TenantDbError> {
    let read = |e| TenantDbError::new("cannot read the schema version", e);
    match conn {
        TenantConnection::Sqlite(c) => {
            let exists: Vec<VersionRow> = diesel::sql_query(
                "SELECT name AS v FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
            )
            .load(c)
            .map_err(read)?;
            if exists.is_empty() {
                return Ok(None);
            }
            let v: Vec<VersionRow> =
                diesel::sql_query("SELECT max(version) AS v FROM __diesel_schema_migrations")
                    .load(c)
                    .map_err(read)?;
            Ok(v.into_iter().next().and_then(|r| r.v))
        }
        TenantConnection::Postgres(c) => {
            let exists: Vec<VersionRow> =
                diesel::sql_query("SELECT to_regclass('__diesel_schema_migrations')::text AS v")
                    .load(c)
                    .map_err(read)?;
            if exists.into_iter().next().and_then(|r| r.v).is_none() {
                return Ok(None);
            }
            let v: Vec<VersionRow> =
                diesel::sql_query("SELECT max(version)::text AS v FROM __diesel_schema_migrations")
                    .load(c)
                    .map_err(read)?;
            Ok(v.into_iter().next().and_then(|r| r.v))
        }
    }
}

/// What the guard does (see the module docs). Idempotent.
pub fn recover(db: &ControlDb, guard: &RestoreGuard) -> Result<()> {
    let actor = Actor::system("restore-guard");
    let at: Located = match locate(&mut *db.conn()?, &guard.tenant_id, false) {
        Ok(at) => at,
        // Removed meanwhile (a failed restore's own undo, an operator).
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let slug = at.tenant.slug.clone();
    let held = hold(&at)?;
    if let (Some(staging), Held::Pg { place, .. }) = (&guard.staging, &held) {
        postgres::drop_schema(&place.sibling(staging))
            .map_err(|e| e.for_tenant(&slug, "dropping the restore's staging schema"))?;
    }
    let mut tenant = at
        .location
        .connect()
        .map_err(|e| e.for_tenant(&slug, "restore guard"))?;
    // SQLite: hold the file's write lock while the control DB follows it.
    let sqlite = matches!(tenant, TenantConnection::Sqlite(_));
    if let TenantConnection::Sqlite(c) = &mut tenant {
        c.batch_execute("BEGIN IMMEDIATE").map_err(|e| {
            Error::tenant_db(&slug, "restore guard: cannot lock the tenant file", e)
        })?;
    }
    let actual = current_version(&mut tenant).map_err(|e| e.for_tenant(&slug, "restore guard"))?;
    let unfinished_copy = guard.mode == Mode::NewTenant && actual != guard.target_version;
    let outcome = if unfinished_copy {
        Ok(())
    } else {
        settle(db, &actor, guard, &at, actual)
    };
    if sqlite {
        if let TenantConnection::Sqlite(c) = &mut tenant {
            // Nothing was written: the transaction only held the lock.
            let _ = c.batch_execute("ROLLBACK");
        }
    }
    drop(tenant);
    drop(held);
    if unfinished_copy {
        tracing::warn!(tenant_id = %at.tenant.id, backup_id = %guard.backup_id,
            "restore as a new tenant was interrupted before it finished; removing the new tenant");
        let tenant = registry::get(db, &at.tenant.id)?;
        undo_new_tenant(db, &actor, &tenant, &at.server);
    }
    outcome
}

fn settle(
    db: &ControlDb,
    actor: &Actor,
    guard: &RestoreGuard,
    at: &Located,
    actual: Option<String>,
) -> Result<()> {
    if actual == at.tenant.schema_version {
        tracing::info!(tenant_id = %at.tenant.id, backup_id = %guard.backup_id,
            "restore guard: the control DB agrees with the tenant");
        return Ok(());
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        diesel::update(tenants::table.find(&at.tenant.id))
            .set((
                tenants::schema_version.eq(actual.clone()),
                tenants::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        changes::bump(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "tenant.restore.recovered",
                resource_type: "tenant",
                resource_id: Some(&at.tenant.id),
                tenant_id: Some(&at.tenant.id),
                before: Some(serde_json::json!({ "schema_version": at.tenant.schema_version })),
                after: Some(serde_json::json!({
                    "schema_version": actual,
                    "backup_id": guard.backup_id,
                    "mode": guard.mode,
                    "restored": actual == guard.target_version,
                })),
            },
        )?;
        // The swap happened before the restoring process died: the restore
        // completed, and is announced like one that finished normally.
        if actual == guard.target_version {
            let source: Option<String> = backups::table
                .find(&guard.backup_id)
                .select(backups::tenant_id)
                .first(conn)
                .optional()?;
            outbox::record(
                conn,
                EventKind::RestoreCompleted,
                Some(&at.tenant.id),
                &tenantplane_api_types::notify::RestoreCompletedEvent {
                    backup_id: guard.backup_id.clone(),
                    tenant_id: source.unwrap_or_else(|| at.tenant.id.clone()),
                    restored_tenant_id: at.tenant.id.clone(),
                    mode: match guard.mode {
                        Mode::InPlace => "in_place",
                        Mode::NewTenant => "new_tenant",
                    }
                    .to_string(),
                },
            )?;
        }
        Ok(())
    })?;
    tracing::warn!(tenant_id = %at.tenant.id, backup_id = %guard.backup_id, schema_version = ?actual,
        "an interrupted restore left the control DB behind the tenant; schema version recorded");
    Ok(())
}

/// Drops the database of a tenant a failed restore created and removes its
/// row (audited), like a failed provisioning.
pub(crate) fn undo_new_tenant(
    db: &ControlDb,
    actor: &Actor,
    tenant: &Tenant,
    server: &DatabaseServer,
) {
    let Ok(id) = uuid::Uuid::parse_str(&tenant.id) else {
        return;
    };
    if let Err(e) = TenantDbLocation::new(server, &id).drop_if_exists() {
        tracing::error!(tenant_id = %tenant.id, error = %report(&e), "cannot drop the new tenant's database; soft-deleting it");
        let _ = registry::delete(db, actor, &tenant.id);
        return;
    }
    let removed = db.conn().and_then(|mut conn| {
        write_tx(&mut conn, None, |conn| {
            diesel::delete(tenants::table.find(&tenant.id)).execute(conn)?;
            changes::bump(conn)?;
            audit::record(
                conn,
                actor,
                Change {
                    action: "tenant.delete",
                    resource_type: "tenant",
                    resource_id: Some(&tenant.id),
                    tenant_id: Some(&tenant.id),
                    before: audit::snapshot(tenant),
                    after: None,
                },
            )
        })
    });
    if let Err(e) = removed {
        tracing::error!(tenant_id = %tenant.id, error = %report(&e), "cannot remove the new tenant's row");
    }
}
