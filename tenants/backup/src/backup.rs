//! Taking a backup of one tenant, and the sweep that cleans up after
//! backups a crash interrupted.
//!
//! A row goes `pending` → `running` → `completed` (or `failed`). It turns
//! `completed` only after the artifact and its manifest are durably in the
//! store, so a process killed mid-way never leaves a completed row without
//! its artifact: it leaves a `running` row whose heartbeat stops, which the
//! sweep marks `failed` ("interrupted") once the heartbeat is
//! [`SweepAges::stale_after`] old, and maybe an artifact no usable row points
//! to, a half-written temporary object and a local scratch directory, which
//! the sweep deletes.

use std::collections::BTreeSet;
use std::io::BufWriter;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use diesel::prelude::*;
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, DbError, Error, Result};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{backups, database_servers, tenants};
use tenantplane_control_db::states::{BackupState, TenantStatus};
use tenantplane_fleet::registry::{self, TenantRow};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use uuid::Uuid;

use crate::manifest::{
    ArtifactInfo, Content, HashingWriter, Manifest, ServerKind, MANIFEST_VERSION,
};
use crate::postgres::{self, PgPlace};
use crate::rows::{self, Backup, BackupRow, Reason};
use crate::sqlite;
use crate::store::ArtifactStore;

/// How old things must be before the sweep removes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepAges {
    /// A `pending`/`running` backup whose heartbeat (or start, before the
    /// first beat) is older than this is interrupted; so is an artifact in
    /// the store no backup row wants. Several missed heartbeats.
    pub stale_after: Duration,
    /// Half-written objects in the store (temporary files, unfinished
    /// multipart uploads) and local scratch directories older than this are
    /// removed. Their age is their start, not their last write (an S3
    /// multipart upload has no other), so this covers the slowest upload.
    pub incomplete_after: Duration,
}

impl SweepAges {
    pub const DEFAULT: SweepAges = SweepAges {
        stale_after: Duration::minutes(2),
        incomplete_after: Duration::hours(6),
    };

    /// Everything at once (tests, and an operator who knows nothing runs).
    pub const NOW: SweepAges = SweepAges {
        stale_after: Duration::zero(),
        incomplete_after: Duration::zero(),
    };
}

/// The prefix of local scratch directories ([`work_dir`]), followed by the
/// owning process's id, so the sweep can tell a dead process's from a live
/// one's.
const WORK_DIR_PREFIX: &str = "tp-backup-";

/// A tenant with its server and database location.
pub(crate) struct Located {
    pub tenant: TenantRow,
    pub server: DatabaseServer,
    pub location: TenantDbLocation,
    pub kind: ServerKind,
}

/// Finds a tenant (by id or slug; deleted ones only when `deleted` is set)
/// and where its database is.
pub(crate) fn locate(conn: &mut ControlConnection, tenant: &str, deleted: bool) -> Result<Located> {
    let row = if deleted {
        registry::find_any(conn, tenant)?
    } else {
        registry::find_row(conn, tenant)?
    };
    let server: DatabaseServer = database_servers::table
        .find(&row.server_id)
        .select(DatabaseServer::as_select())
        .first(conn)?;
    let id = Uuid::parse_str(&row.id).map_err(|_| {
        Error::control(
            "reading the tenant",
            DbError::State(format!("tenant id '{}' is not a uuid", row.id)),
        )
    })?;
    Ok(Located {
        location: TenantDbLocation::new(&server, &id),
        kind: ServerKind::of(&server),
        tenant: row,
        server,
    })
}

/// A scratch directory on local disk for one operation.
pub(crate) fn work_dir(tenant: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{WORK_DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Error::tenant_db(tenant, "cannot create a work directory", e))
}

/// Takes a backup of a tenant (id or slug) as the system.
pub fn create(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    tenant: &str,
    reason: Reason,
) -> Result<Backup> {
    create_by(db, store, tenant, reason, &Actor::system("backup"))
}

/// Takes a backup of a tenant (id or slug): a consistent snapshot while the
/// tenant keeps writing, compressed, stored with its manifest. Returns the
/// row: `completed`, or an error after the row was marked `failed` with the
/// whole error chain.
pub fn create_by(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    tenant: &str,
    reason: Reason,
    actor: &Actor,
) -> Result<Backup> {
    let mut conn = db.conn()?;
    let at = locate(&mut conn, tenant, false)?;
    if at.tenant.status == TenantStatus::Provisioning.as_str() {
        return Err(Error::Conflict(format!(
            "tenant '{}' is still being provisioned",
            at.tenant.slug
        )));
    }
    let id = Uuid::new_v4().to_string();
    let key = format!("tenants/{}/{id}.{}", at.tenant.id, at.kind.extension());
    let now = Utc::now().naive_utc();
    let row = BackupRow {
        id: id.clone(),
        tenant_id: at.tenant.id.clone(),
        server_kind: at.kind.as_str().to_string(),
        state: BackupState::Pending.as_str().to_string(),
        reason: reason.as_str().to_string(),
        schema_version: None,
        artifact: key.clone(),
        size_bytes: None,
        sha256: None,
        manifest: None,
        pinned: false,
        error: None,
        created_at: now,
        started_at: None,
        completed_at: None,
        verified_at: None,
        verify_error: None,
    };
    write_tx(&mut conn, None, |conn| {
        diesel::insert_into(backups::table)
            .values(&row)
            .execute(conn)?;
        // Backups people ask for are audited; the system's own (schedules,
        // jobs) are recorded by their rows alone, or every night would add
        // a line per tenant to the audit log.
        if !actor.id.starts_with("system:") {
            audit::record(
                conn,
                actor,
                Change {
                    action: "backup.create",
                    resource_type: "backup",
                    resource_id: Some(&id),
                    tenant_id: Some(&row.tenant_id),
                    before: None,
                    after: Some(serde_json::json!({ "reason": reason.as_str(), "artifact": key })),
                },
            )?;
        }
        Ok(())
    })?;
    diesel::update(backups::table.find(&id))
        .set((
            backups::state.eq(BackupState::Running.as_str()),
            backups::started_at.eq(Some(Utc::now().naive_utc())),
        ))
        .execute(&mut conn)?;
    tracing::info!(backup_id = %id, tenant_id = %at.tenant.id, slug = %at.tenant.slug,
        kind = %at.kind, reason = reason.as_str(), store = %store.url(), "backup started");

    let started = std::time::Instant::now();
    let heartbeat = beat_backup(db, &id);
    let taken = take(store, &at, &id, &key);
    drop(heartbeat);
    let taken = taken.and_then(|manifest| {
        let done = diesel::update(
            backups::table
                .find(&id)
                .filter(backups::state.eq(BackupState::Running.as_str())),
        )
        .set((
            backups::state.eq(BackupState::Completed.as_str()),
            backups::schema_version.eq(manifest.schema_version.clone()),
            backups::size_bytes.eq(Some(manifest.artifact.size_bytes as i64)),
            backups::sha256.eq(Some(manifest.artifact.sha256.clone())),
            backups::manifest.eq(Some(manifest.to_json())),
            backups::completed_at.eq(Some(Utc::now().naive_utc())),
        ))
        .execute(&mut conn)?;
        if done == 0 {
            // The sweep gave up on it meanwhile: its artifact is an orphan.
            return Err(Error::Conflict(format!(
                "backup {id} was marked interrupted while it ran"
            )));
        }
        Ok(manifest)
    });
    match taken {
        Ok(manifest) => {
            tracing::info!(backup_id = %id, tenant_id = %at.tenant.id, size = manifest.artifact.size_bytes,
                schema_version = ?manifest.schema_version, ms = started.elapsed().as_millis() as u64, "backup completed");
            // On the connection already held: a second one from the pool
            // per backup would exhaust it with as many backups at once as
            // pooled connections.
            Ok(rows::find(&mut conn, &id)?.into())
        }
        Err(err) => {
            let text = report(&err);
            tracing::warn!(backup_id = %id, tenant_id = %at.tenant.id, error = %text, "backup failed");
            for k in [key.clone(), Manifest::key_for(&key)] {
                if let Err(e) = store.delete(&k) {
                    tracing::warn!(backup_id = %id, key = %k, error = %report(&e), "cannot remove the failed backup's artifact; the sweep will");
                }
            }
            mark_failed(&mut conn, &id, &text)?;
            Err(err)
        }
    }
}

/// Keeps a running backup's `heartbeat_at` fresh until dropped.
pub(crate) fn beat_backup(db: &ControlDb, id: &str) -> crate::heartbeat::Heartbeat {
    let db = db.clone();
    let backup_id = id.to_string();
    crate::heartbeat::Heartbeat::start(format!("backup {id}"), move || {
        diesel::update(backups::table.find(&backup_id))
            .set(backups::heartbeat_at.eq(Some(Utc::now().naive_utc())))
            .execute(&mut *db.conn()?)?;
        Ok(())
    })
}

/// Marks a pending or running backup failed with `error` and records
/// `backup.failed` in the same transaction.
fn mark_failed(conn: &mut ControlConnection, id: &str, error: &str) -> Result<usize> {
    write_tx(conn, None, |conn| {
        let n = diesel::update(backups::table.find(id).filter(
            backups::state.eq_any([BackupState::Pending.as_str(), BackupState::Running.as_str()]),
        ))
        .set((
            backups::state.eq(BackupState::Failed.as_str()),
            backups::error.eq(Some(error)),
        ))
        .execute(conn)?;
        if n > 0 {
            let (tenant_id, reason): (String, String) = backups::table
                .find(id)
                .select((backups::tenant_id, backups::reason))
                .first(conn)?;
            let slug: Option<String> = tenants::table
                .find(&tenant_id)
                .select(tenants::slug)
                .first(conn)
                .optional()?;
            outbox::record(
                conn,
                EventKind::BackupFailed,
                Some(&tenant_id),
                &tenantplane_api_types::notify::BackupFailedEvent {
                    backup_id: id.to_string(),
                    tenant_id: tenant_id.clone(),
                    slug,
                    reason,
                    error: error.to_string(),
                },
            )?;
        }
        Ok(n)
    })
}

/// Snapshot → local artifact → store (artifact, then manifest).
fn take(store: &dyn ArtifactStore, at: &Located, id: &str, key: &str) -> Result<Manifest> {
    let slug = at.tenant.slug.as_str();
    let work = work_dir(slug)?;
    let local = work.path().join("artifact");
    let file = std::fs::File::create(&local)
        .map_err(|e| Error::tenant_db(slug, "cannot write the artifact", e))?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 16, file));
    let content: Content = match (&at.location, at.kind) {
        (TenantDbLocation::SqliteFile { path }, _) => sqlite::snapshot(path, work.path(), &mut out),
        (location, _) => {
            PgPlace::of(location).and_then(|place| postgres::snapshot(&place, &mut out))
        }
    }
    .map_err(|e| e.for_tenant(slug, "taking the snapshot failed"))?;
    let (buffered, size_bytes, sha256) = out.finish();
    buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::tenant_db(slug, "cannot write the artifact", e))?;
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        backup_id: id.to_string(),
        tenant_id: at.tenant.id.clone(),
        tenant_slug: at.tenant.slug.clone(),
        server_kind: at.kind,
        schema_version: content.schema_version,
        tables: content.tables,
        sequences: content.sequences,
        artifact: ArtifactInfo {
            key: key.to_string(),
            format: at.kind.format().to_string(),
            size_bytes,
            sha256,
        },
        created_at: Utc::now(),
        tenantplane_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let manifest_file = work.path().join("manifest.json");
    std::fs::write(&manifest_file, manifest.to_json())
        .map_err(|e| Error::tenant_db(slug, "cannot write the manifest", e))?;
    store
        .put(key, &local)
        .map_err(|e| e.for_tenant(slug, "storing the artifact"))?;
    store
        .put(&Manifest::key_for(key), &manifest_file)
        .map_err(|e| e.for_tenant(slug, "storing the manifest"))?;
    Ok(manifest)
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// `pending`/`running` rows past their grace, now `failed`.
    pub interrupted: usize,
    /// Objects in the store no pending, running, completed or verified row
    /// points to (failed backups' artifacts included), deleted.
    pub orphans_removed: usize,
    /// Temporary files of interrupted writes, deleted.
    pub incomplete_removed: usize,
    /// Local scratch directories of killed backups and restores, deleted.
    pub scratch_removed: usize,
}

/// Cleans up after interrupted backups: rows still `pending`/`running`
/// whose last sign of life (heartbeat, else start, else creation) is older
/// than `ages.stale_after` become `failed` ("interrupted"); objects in the
/// store that no live row references and that are older than that are
/// deleted; half-written objects and local scratch directories older than
/// `ages.incomplete_after` are removed.
pub fn sweep(db: &ControlDb, store: &dyn ArtifactStore, ages: SweepAges) -> Result<SweepReport> {
    let older_than = ages.stale_after;
    let mut report = SweepReport::default();
    let mut conn = db.conn()?;
    let cutoff = Utc::now().naive_utc() - older_than;
    let open = [BackupState::Pending.as_str(), BackupState::Running.as_str()];
    let stale: Vec<(String, String, String)> = backups::table
        .filter(backups::state.eq_any(open))
        .filter(
            backups::heartbeat_at
                .lt(cutoff)
                .or(backups::heartbeat_at.is_null().and(
                    backups::started_at.lt(cutoff).or(backups::started_at
                        .is_null()
                        .and(backups::created_at.lt(cutoff))),
                )),
        )
        .select((backups::id, backups::tenant_id, backups::artifact))
        .load(&mut conn)?;
    for (id, tenant_id, _) in &stale {
        let n = mark_failed(
            &mut conn,
            id,
            &format!(
                "interrupted: no sign of life for {} s (the process taking it stopped)",
                older_than.num_seconds()
            ),
        )?;
        if n > 0 {
            tracing::warn!(backup_id = %id, tenant_id = %tenant_id, "backup interrupted; marked failed");
            report.interrupted += 1;
        }
    }

    // List the store before reading the rows: a backup inserts its row
    // before it writes its artifact, so anything listed that a row wants
    // is in the rows read next.
    let objects = store
        .list("tenants/")
        .map_err(|e| e.for_tenant("(all)", "listing the store"))?;
    let wanted: BTreeSet<String> = backups::table
        .filter(backups::state.ne(BackupState::Failed.as_str()))
        .select(backups::artifact)
        .load::<String>(&mut conn)?
        .into_iter()
        .flat_map(|k| [Manifest::key_for(&k), k])
        .collect();
    let old = std::time::SystemTime::now()
        .checked_sub(older_than.to_std().unwrap_or(StdDuration::ZERO))
        .unwrap_or(std::time::UNIX_EPOCH);
    for o in objects {
        if wanted.contains(&o.key) || o.modified >= old {
            continue;
        }
        store
            .delete(&o.key)
            .map_err(|e| e.for_tenant("(all)", "deleting an orphaned artifact"))?;
        tracing::info!(key = %o.key, "orphaned backup artifact removed");
        report.orphans_removed += 1;
    }
    let incomplete_after = ages.incomplete_after.to_std().unwrap_or(StdDuration::ZERO);
    report.incomplete_removed = store
        .remove_incomplete(incomplete_after)
        .map_err(|e| e.for_tenant("(all)", "removing unfinished writes"))?;
    report.scratch_removed = remove_old_work_dirs(&std::env::temp_dir(), incomplete_after);
    Ok(report)
}

/// Removes local scratch directories ([`work_dir`]) a killed process left
/// behind: those of a process that no longer runs (the pid is in the
/// name) at once, those of another live process once older than
/// `older_than` and at least 6 hours (a pid reused after a crash; a live
/// process's fresh directory is its work in progress). This process's own
/// are left to it. Best effort: one that cannot be removed is logged and left for the
/// next sweep.
fn remove_old_work_dirs(tmp: &std::path::Path, older_than: StdDuration) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let cutoff = std::time::SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(std::time::UNIX_EPOCH);
    let live_cutoff = std::time::SystemTime::now()
        .checked_sub(StdDuration::from_secs(6 * 3600))
        .unwrap_or(std::time::UNIX_EPOCH);
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(WORK_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let owner_gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
        // A live owner is most likely still working there (another process
        // on this machine); only a pid reused after a crash, hours later,
        // is not — whatever ages the caller asked for.
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|m| m < cutoff && m < live_cutoff)
            .unwrap_or(false);
        if !(owner_gone || old) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a left-over scratch directory")
            }
        }
    }
    removed
}
