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

use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::schema::{jobs, tasks, tenants};
use tenantplane_control_db::states::{ServerStatus, TaskState, TenantStatus};
use tenantplane_fleet::servers::{self, DatabaseServer};
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
use tenantplane_fleet::tenant_run::lock_key;
use tenantplane_fleet::urls::pg_target;
use tenantplane_jobs::{Job, JobContext, JobError};
use uuid::Uuid;

use crate::backup::{create_by, locate, work_dir};
use crate::held::LOCK_WAIT;
use crate::manifest::{Manifest, ServerKind};
use crate::postgres::{self, PgPlace, TenantLock};
use crate::rows::{self, Reason};
use crate::sqlite;
use crate::store::ArtifactStore;
use crate::verify::{check_sqlite, compare, fetch, load_and_compare, Checked};

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

/// Where a tenant's database would be on `server`.
fn location_on(server: &DatabaseServer, tenant_id: &str) -> Result<TenantDbLocation> {
    let id = Uuid::parse_str(tenant_id)
        .map_err(|_| Error::invalid(format!("tenant id '{tenant_id}' is not a uuid")))?;
    Ok(TenantDbLocation::new(server, &id))
}

/// The physical place a location names, so two servers that would put a
/// tenant in the same place (one PostgreSQL cluster with database
/// isolation, say) are caught: the move would drop the live copy.
fn physical(location: &TenantDbLocation) -> String {
    match location {
        TenantDbLocation::SqliteFile { path } => format!("file:{}", path.display()),
        TenantDbLocation::PgSchema { server_url, schema } => format!(
            "schema:{}/{schema}",
            pg_target(server_url).unwrap_or_default()
        ),
        TenantDbLocation::PgDatabase {
            server_url,
            database,
        } => {
            let target = pg_target(server_url).unwrap_or_default();
            let cluster = target.split('/').next().unwrap_or_default().to_string();
            format!("database:{cluster}/{database}")
        }
    }
}

/// Backups restore onto the same format: SQLite files onto SQLite servers,
/// PostgreSQL snapshots onto PostgreSQL servers (schema or database
/// isolation alike).
fn compatible(a: ServerKind, b: ServerKind) -> bool {
    (a == ServerKind::Sqlite) == (b == ServerKind::Sqlite)
}

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
    Ok((at.tenant.id.clone(), at.server, target))
}

/// A rollout migrating the tenant right now: its run holds the source's
/// lock and writes to it, so the move waits (a conflict, retried).
fn migrating(conn: &mut ControlConnection, tenant_id: &str, slug: &str) -> Result<()> {
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
        Ok(tenantplane_jobs::enqueue(conn, &job)?.id())
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

/// The source held still for the copy (see the module docs).
enum SourceLock {
    /// A transaction holding the SQLite file's write lock.
    Sqlite(TenantConnection),
    /// Held until dropped.
    Pg { _lock: TenantLock },
}

impl SourceLock {
    fn take(location: &TenantDbLocation, tenant_id: &str, slug: &str) -> Result<SourceLock> {
        match location {
            TenantDbLocation::SqliteFile { .. } => {
                let mut conn = location
                    .connect()
                    .map_err(|e| e.for_tenant(slug, "locking the tenant for its move"))?;
                if let TenantConnection::Sqlite(c) = &mut conn {
                    c.batch_execute(&format!(
                        "PRAGMA busy_timeout = {}; BEGIN IMMEDIATE;",
                        LOCK_WAIT.as_millis()
                    ))
                    .map_err(|e| {
                        Error::tenant_db(slug, "the tenant stayed locked (a migration?)", e)
                    })?;
                }
                Ok(SourceLock::Sqlite(conn))
            }
            location => {
                let place = PgPlace::of(location)
                    .map_err(|e| e.for_tenant(slug, "locating the tenant failed"))?;
                let lock = TenantLock::acquire(&place.url, lock_key(tenant_id), LOCK_WAIT)
                    .map_err(|e| e.for_tenant(slug, "locking the tenant for its move"))?;
                Ok(SourceLock::Pg { _lock: lock })
            }
        }
    }
}

/// The lock a move holds, for the tests that check migrations wait.
#[cfg(test)]
pub(crate) fn hold_for_test(location: &TenantDbLocation, tenant_id: &str) -> impl Drop {
    match SourceLock::take(location, tenant_id, "test") {
        Ok(lock) => lock,
        Err(e) => panic!("cannot take the move's lock: {e}"),
    }
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        if let SourceLock::Sqlite(TenantConnection::Sqlite(c)) = self {
            // Nothing was written: the transaction only held the lock.
            let _ = c.batch_execute("ROLLBACK");
        }
    }
}

/// Drops a copy that is not the served one (a leftover).
fn drop_copy(location: &TenantDbLocation, slug: &str, which: &str) -> Result<()> {
    if location
        .exists()
        .map_err(|e| e.for_tenant(slug, "looking for a leftover copy"))?
    {
        tracing::info!(tenant = slug, place = %physical(location), which, "removing the copy the tenant is not served from");
    }
    location
        .drop_if_exists()
        .map_err(|e| e.for_tenant(slug, &format!("dropping the {which} copy")))
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

/// Restores the backup at the new location `dst` (which does not exist)
/// and checks what landed against the manifest: `integrity_check` and
/// every table's row count and checksum (SQLite), or the same on the
/// loaded schema (PostgreSQL). Returns the manifest.
fn copy_to(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    backup_id: &str,
    dst: &TenantDbLocation,
    tenant_id: &str,
    slug: &str,
) -> Result<Manifest> {
    let row = rows::find(&mut *db.conn()?, backup_id)?;
    let work = work_dir(slug)?;
    let (artifact, manifest) = match fetch(store, &row, work.path())? {
        Checked::Good(v) => v,
        Checked::Bad(f) => return Err(bad_copy(slug, &f)),
    };
    match dst {
        TenantDbLocation::SqliteFile { path } => {
            if let Checked::Bad(f) = check_sqlite(&artifact, &manifest, work.path())? {
                return Err(bad_copy(slug, &f));
            }
            dst.create()
                .map_err(|e| e.for_tenant(slug, "creating the target database"))?;
            sqlite::restore_into(&work.path().join("restored.db"), path, LOCK_WAIT)
                .map_err(|e| e.for_tenant(slug, "writing the target database"))?;
            check_landed(&manifest, sqlite::measure_file(path), slug)?;
        }
        TenantDbLocation::PgSchema { server_url, schema } => {
            // Loaded straight into its final name: until the switch no one
            // looks there, and a leftover is dropped by the retry.
            let place = PgPlace {
                url: server_url.clone(),
                schema: schema.clone(),
            };
            if let Checked::Bad(f) = load_and_compare(&place, &artifact, &manifest)? {
                return Err(bad_copy(slug, &f));
            }
            check_landed(&manifest, postgres::measure(&place), slug)?;
        }
        TenantDbLocation::PgDatabase { .. } => {
            // A new database whose default schema is swapped for the
            // loaded one (keeping its owner and grants, as restores do).
            dst.create()
                .map_err(|e| e.for_tenant(slug, "creating the target database"))?;
            let place =
                PgPlace::of(dst).map_err(|e| e.for_tenant(slug, "locating the target database"))?;
            let staging = place.sibling("tp_move");
            if let Checked::Bad(f) = load_and_compare(&staging, &artifact, &manifest)? {
                return Err(bad_copy(slug, &f));
            }
            let mut lock = TenantLock::acquire(&place.url, lock_key(tenant_id), LOCK_WAIT)
                .map_err(|e| e.for_tenant(slug, "locking the target database"))?;
            lock.swap(&staging.schema, &place.schema)
                .map_err(|e| e.for_tenant(slug, "moving the loaded schema into place"))?;
            drop(lock);
            check_landed(&manifest, postgres::measure(&place), slug)?;
        }
    }
    Ok(manifest)
}

/// The target as written, measured again and compared with the manifest.
fn check_landed(
    manifest: &Manifest,
    measured: std::result::Result<
        crate::manifest::Content,
        tenantplane_fleet::tenant_db::TenantDbError,
    >,
    slug: &str,
) -> Result<()> {
    let content = measured.map_err(|e| e.for_tenant(slug, "reading the target back"))?;
    match compare(manifest, &content) {
        Checked::Good(()) => Ok(()),
        Checked::Bad(f) => Err(bad_copy(slug, &f)),
    }
}

fn bad_copy(slug: &str, finding: &str) -> Error {
    Error::Conflict(format!(
        "tenant '{slug}': the copy on the target does not match its backup: {finding}"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, isolation: &str) -> DatabaseServer {
        DatabaseServer {
            id: url.to_string(),
            name: url.to_string(),
            kind: if url.starts_with("sqlite") {
                "sqlite"
            } else {
                "postgres"
            }
            .to_string(),
            url: url.to_string(),
            isolation: isolation.to_string(),
            capacity: 10,
            status: "active".to_string(),
            created_at: Utc::now().naive_utc(),
        }
    }

    #[test]
    fn servers_that_would_share_a_place_are_told_apart() {
        let t = "0b9e7a4e-2f55-4c39-9a0e-1f2d3c4b5a69";
        let place = |url: &str, iso: &str| physical(&location_on(&server(url, iso), t).unwrap());
        // Database isolation: the tenant's database is named after it on the
        // cluster, whatever database the server's URL names.
        assert_eq!(
            place("postgres://u@h:5432/a", "database"),
            place("postgres://v:pw@H/b?sslmode=require", "database")
        );
        assert_ne!(
            place("postgres://h/a", "database"),
            place("postgres://h:5433/a", "database")
        );
        // Schema isolation: one schema per database.
        assert_ne!(
            place("postgres://h/a", "schema"),
            place("postgres://h/b", "schema")
        );
        assert_ne!(
            place("postgres://h/a", "schema"),
            place("postgres://h/a", "database")
        );
        assert_ne!(place("sqlite:///x", "file"), place("sqlite:///y", "file"));
        assert!(compatible(ServerKind::PgSchema, ServerKind::PgDatabase));
        assert!(!compatible(ServerKind::Sqlite, ServerKind::PgSchema));
    }
}
