//! Restoring a backup: over its own tenant (in place, after a safety backup)
//! or into a new tenant on a server of the same kind.
//!
//! Either way the tenant ends exactly as the backup had it, schema version
//! included. SQLite: the artifact is unpacked into a temporary file, checked
//! (`integrity_check`, the manifest's row counts and checksums) and written
//! into the tenant's file with SQLite's online backup API, in one write
//! transaction of that file. PostgreSQL: the artifact is loaded into a
//! staging schema next to the tenant's (migrations up to the backup's
//! version, then the rows), checked against the manifest, and swapped in for
//! the live schema in one transaction while the tenant's advisory lock is
//! held.

use std::path::Path;

use chrono::Utc;
use diesel::prelude::*;
use serde::Serialize;
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{backups, database_servers, plans, tasks, tenants};
use tenantplane_control_db::states::{BackupState, TaskState, TenantStatus};
use tenantplane_fleet::registry::{self, NewTenant, Tenant};
use tenantplane_fleet::servers::{self, DatabaseServer};
use tenantplane_fleet::tenant_db::TenantDbLocation;

use crate::backup::{create_by, locate, work_dir, Located};
use crate::held::{hold, Held, LOCK_WAIT};
use crate::manifest::{Manifest, ServerKind};
use crate::postgres;
use crate::restore_guard::{self, undo_new_tenant, Armed, Mode, RestoreGuard};
use crate::rows::{self, Backup, BackupRow, Reason};
use crate::sqlite;
use crate::store::ArtifactStore;
use crate::verify::{check_sqlite, fetch, load_and_compare, short_id, Checked};

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The tenant as it is now.
    pub tenant: Tenant,
    /// The backup that was restored.
    pub backup: Backup,
    /// The copy of the tenant taken just before an in-place restore.
    pub safety_backup: Option<Backup>,
}

/// Loads a usable backup's row and its kind.
fn usable(conn: &mut ControlConnection, backup_id: &str) -> Result<(BackupRow, ServerKind)> {
    let row = rows::find(conn, backup_id)?;
    match row.state.parse::<BackupState>()? {
        BackupState::Completed | BackupState::Verified => {}
        other => {
            return Err(Error::Conflict(format!(
                "backup {backup_id} is {other}: only completed or verified backups can be restored"
            )))
        }
    }
    let kind = ServerKind::parse(&row.server_kind).ok_or_else(|| {
        Error::invalid(format!(
            "backup {backup_id} has an unknown server kind {}",
            row.server_kind
        ))
    })?;
    Ok((row, kind))
}

/// Records that a backup turned out damaged while being restored.
fn damaged(conn: &mut ControlConnection, row: &BackupRow, finding: &str) -> Error {
    let marked = diesel::update(backups::table.find(&row.id))
        .set((
            backups::state.eq(BackupState::Failed.as_str()),
            backups::verify_error.eq(Some(finding)),
        ))
        .execute(conn);
    if let Err(e) = marked {
        tracing::warn!(backup_id = %row.id, error = %e, "cannot mark the damaged backup failed");
    }
    Error::Conflict(format!("backup {} cannot be restored: {finding}", row.id))
}

/// Replaces the tenant's database with the artifact's content.
fn replace(
    held: &mut Held,
    at: &Located,
    artifact: &Path,
    manifest: &Manifest,
    dir: &Path,
    staging: Option<&str>,
) -> Result<Checked<()>> {
    let slug = at.tenant.slug.as_str();
    match (held, &at.location) {
        (Held::Sqlite, TenantDbLocation::SqliteFile { path }) => {
            match check_sqlite(artifact, manifest, dir)? {
                Checked::Good(()) => {}
                bad => return Ok(bad),
            }
            sqlite::restore_into(&dir.join("restored.db"), path, LOCK_WAIT)
                .map_err(|e| e.for_tenant(slug, "restoring the tenant file failed"))?;
            Ok(Checked::Good(()))
        }
        (Held::Pg { place, lock }, _) => {
            let name = staging.map_or_else(staging_name, str::to_string);
            let staging = place.sibling(&name);
            let result =
                load_and_compare(&staging, artifact, manifest).and_then(|checked| match checked {
                    Checked::Good(()) => lock
                        .swap(&staging.schema, &place.schema)
                        .map(|()| Checked::Good(()))
                        .map_err(|e| e.for_tenant(slug, "restore")),
                    bad => Ok(bad),
                });
            if !matches!(result, Ok(Checked::Good(()))) {
                if let Err(e) = postgres::drop_schema(&staging) {
                    tracing::warn!(schema = %staging.schema, error = %report(&e), "cannot drop the staging schema");
                }
            }
            result
        }
        (Held::Sqlite, _) => Err(Error::invalid(format!(
            "tenant '{slug}' is not a SQLite tenant"
        ))),
    }
}

/// A fresh name for a PostgreSQL staging schema.
fn staging_name() -> String {
    format!("tp_restore_{}", short_id())
}

/// Queues the restore's guard (see [`crate::restore_guard`]), naming the
/// staging schema a PostgreSQL restore will load into.
fn arm_guard(
    db: &ControlDb,
    at: &Located,
    backup_id: &str,
    manifest: &Manifest,
    mode: Mode,
) -> Result<(Armed, Option<String>)> {
    let staging = match at.location {
        TenantDbLocation::SqliteFile { .. } => None,
        _ => Some(staging_name()),
    };
    let armed = restore_guard::arm(
        db,
        &RestoreGuard {
            tenant_id: at.tenant.id.clone(),
            backup_id: backup_id.to_string(),
            mode,
            target_version: manifest.schema_version.clone(),
            staging: staging.clone(),
        },
    )?;
    Ok((armed, staging))
}

/// Points the control DB at the restored schema version, bumps the change
/// counter, audits the restore and withdraws its guard, in one transaction.
fn record(
    db: &ControlDb,
    actor: &Actor,
    tenant_id: &str,
    manifest: &Manifest,
    detail: serde_json::Value,
    guard: &Armed,
) -> Result<Tenant> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        guard.disarm(conn)?;
        let before: Option<String> = tenants::table
            .find(tenant_id)
            .select(tenants::schema_version)
            .first(conn)?;
        diesel::update(tenants::table.find(tenant_id))
            .set((
                tenants::schema_version.eq(manifest.schema_version.clone()),
                tenants::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        changes::bump(conn)?;
        let mut after = detail;
        after["schema_version"] = serde_json::json!(manifest.schema_version);
        after["backup_id"] = serde_json::json!(manifest.backup_id);
        let mode = after["mode"].as_str().unwrap_or("in_place").to_string();
        let source = after["source_tenant_id"]
            .as_str()
            .unwrap_or(tenant_id)
            .to_string();
        audit::record(
            conn,
            actor,
            Change {
                action: "tenant.restore",
                resource_type: "tenant",
                resource_id: Some(tenant_id),
                tenant_id: Some(tenant_id),
                before: Some(serde_json::json!({ "schema_version": before })),
                after: Some(after),
            },
        )?;
        outbox::record(
            conn,
            EventKind::RestoreCompleted,
            Some(tenant_id),
            &tenantplane_api_types::notify::RestoreCompletedEvent {
                backup_id: manifest.backup_id.clone(),
                tenant_id: source,
                restored_tenant_id: tenant_id.to_string(),
                mode,
            },
        )?;
        Ok(())
    })?;
    registry::get(db, tenant_id)
}

/// Restores a backup over its own tenant: refuses backups that are not
/// completed or verified, tenants a rollout is migrating right now, and
/// damaged artifacts (which it marks failed); takes a safety backup
/// (`pre_restore`) first; then replaces the tenant's database with the
/// backup, schema version included, and records the version in the control
/// database.
///
/// Writes the tenant makes between the safety backup and the swap are in
/// neither: suspend the tenant first for a clean cut-over.
pub fn restore_in_place(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    backup_id: &str,
    actor: &Actor,
) -> Result<Restored> {
    let mut conn = db.conn()?;
    let (row, kind) = usable(&mut conn, backup_id)?;
    let at = locate(&mut conn, &row.tenant_id, false)?;
    let slug = at.tenant.slug.clone();
    if at.tenant.status == TenantStatus::Provisioning.as_str() {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is still being provisioned"
        )));
    }
    if at.kind != kind {
        return Err(Error::Conflict(format!(
            "backup {backup_id} was taken on a {kind} server; tenant '{slug}' now lives on a {} server",
            at.kind
        )));
    }
    let migrating: i64 = tasks::table
        .filter(tasks::tenant_id.eq(&at.tenant.id))
        .filter(tasks::state.eq(TaskState::Running.as_str()))
        .count()
        .get_result(&mut conn)?;
    if migrating > 0 {
        return Err(Error::Conflict(format!(
            "tenant '{slug}' is being migrated by a rollout; restore once it finished"
        )));
    }
    let work = work_dir(&slug)?;
    let (artifact, manifest) = match fetch(store, &row, work.path())? {
        Checked::Good(v) => v,
        Checked::Bad(f) => return Err(damaged(&mut conn, &row, &f)),
    };
    drop(conn);

    let mut held = hold(&at)?;
    let safety = create_by(db, store, &at.tenant.id, Reason::PreRestore, actor)?;
    tracing::info!(backup_id, tenant_id = %at.tenant.id, safety_backup = %safety.id, "restoring in place");
    let (guard, staging) = arm_guard(db, &at, backup_id, &manifest, Mode::InPlace)?;
    match replace(
        &mut held,
        &at,
        &artifact,
        &manifest,
        work.path(),
        staging.as_deref(),
    )? {
        Checked::Good(()) => {}
        Checked::Bad(f) => return Err(damaged(&mut *db.conn()?, &row, &f)),
    }
    let tenant = record(
        db,
        actor,
        &at.tenant.id,
        &manifest,
        serde_json::json!({ "mode": "in_place", "safety_backup_id": safety.id }),
        &guard,
    )?;
    drop(held);
    tracing::info!(backup_id, tenant_id = %tenant.id, schema_version = ?tenant.schema_version, "tenant restored in place");
    Ok(Restored {
        tenant,
        backup: rows::get(db, backup_id)?,
        safety_backup: Some(safety),
    })
}

/// The server a new tenant restored from a backup of `kind` goes to: the
/// named one (which must be of that kind), else the source tenant's server
/// when it is active and has room, else the active server of that kind with
/// the most room (placement checks the capacity).
fn pick_server(
    conn: &mut ControlConnection,
    kind: ServerKind,
    requested: Option<&str>,
    source_server: Option<&str>,
) -> Result<DatabaseServer> {
    if let Some(name) = requested {
        let s = servers::find(conn, name)
            .map_err(|_| Error::invalid(format!("unknown server '{name}'")))?;
        if ServerKind::of(&s) != kind {
            return Err(Error::invalid(format!(
                "server '{}' is a {} server; the backup needs a {kind} server",
                s.name,
                ServerKind::of(&s)
            )));
        }
        return Ok(s);
    }
    let active: Vec<DatabaseServer> = database_servers::table
        .filter(database_servers::status.eq("active"))
        .select(DatabaseServer::as_select())
        .order(database_servers::created_at.asc())
        .load(conn)?;
    let mut same: Vec<DatabaseServer> = active
        .into_iter()
        .filter(|s| ServerKind::of(s) == kind)
        .collect();
    if let Some(pos) = source_server.and_then(|id| same.iter().position(|s| s.id == id)) {
        return Ok(same.swap_remove(pos));
    }
    same.into_iter()
        .next()
        .ok_or_else(|| Error::Conflict(format!("no active {kind} server to restore onto")))
}

/// Restores a backup as a new tenant `slug` on a server of the backup's
/// kind (`server`, or see [`pick_server`]). The new tenant gets the source
/// tenant's name and plan (no labels: selectors aimed at the source do not
/// pick the copy up). On failure nothing is left: the new database is
/// dropped and its row removed.
pub fn restore_new_tenant(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    backup_id: &str,
    slug: &str,
    server: Option<&str>,
    actor: &Actor,
) -> Result<Restored> {
    let mut conn = db.conn()?;
    let (row, kind) = usable(&mut conn, backup_id)?;
    let source = registry::find_any(&mut conn, &row.tenant_id).ok();
    let target = pick_server(
        &mut conn,
        kind,
        server,
        source.as_ref().map(|s| s.server_id.as_str()),
    )?;
    let work = work_dir(slug)?;
    let (artifact, manifest) = match fetch(store, &row, work.path())? {
        Checked::Good(v) => v,
        Checked::Bad(f) => return Err(damaged(&mut conn, &row, &f)),
    };
    let plan: Option<String> = match source.as_ref().and_then(|s| s.plan_id.clone()) {
        Some(plan_id) => plans::table
            .find(plan_id)
            .filter(plans::active.eq(true))
            .select(plans::slug)
            .first(&mut conn)
            .optional()?,
        None => None,
    };
    drop(conn);
    let tenant = registry::create(
        db,
        actor,
        NewTenant {
            slug: slug.to_string(),
            name: source
                .as_ref()
                .map_or_else(|| slug.to_string(), |s| s.name.clone()),
            plan,
            labels: Default::default(),
            contact_email: None,
            server: Some(target.id.clone()),
            schema: Some("none".to_string()),
        },
    )?;
    let loaded = locate(&mut *db.conn()?, &tenant.id, false).and_then(|at| {
        let mut held = hold(&at)?;
        let (guard, staging) = arm_guard(db, &at, backup_id, &manifest, Mode::NewTenant)?;
        match replace(
            &mut held,
            &at,
            &artifact,
            &manifest,
            work.path(),
            staging.as_deref(),
        )? {
            Checked::Good(()) => {}
            Checked::Bad(f) => return Err(damaged(&mut *db.conn()?, &row, &f)),
        }
        record(
            db,
            actor,
            &tenant.id,
            &manifest,
            serde_json::json!({ "mode": "new_tenant", "source_tenant_id": row.tenant_id }),
            &guard,
        )
    });
    match loaded {
        Ok(tenant) => {
            tracing::info!(backup_id, tenant_id = %tenant.id, slug, "backup restored as a new tenant");
            Ok(Restored {
                tenant,
                backup: rows::get(db, backup_id)?,
                safety_backup: None,
            })
        }
        Err(err) => {
            tracing::warn!(backup_id, slug, error = %report(&err), "restore as a new tenant failed; removing the new tenant");
            undo_new_tenant(db, actor, &tenant, &target);
            Err(err)
        }
    }
}
