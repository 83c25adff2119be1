//! Restoring a move's backup at the tenant's new place and checking what
//! landed against the backup's manifest.

use tenantplane_control_db::db::ControlDb;
use tenantplane_control_db::error::{Error, Result};
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::tenant_run::lock_key;

use crate::backup::work_dir;
use crate::held::LOCK_WAIT;
use crate::manifest::Manifest;
use crate::postgres::{self, PgPlace, TenantLock};
use crate::rows::{self};
use crate::sqlite;
use crate::store::ArtifactStore;
use crate::verify::{check_sqlite, compare, fetch, load_and_compare, Checked};

/// Restores the backup at the new location `dst` (which does not exist)
/// and checks what landed against the manifest: `integrity_check` and
/// every table's row count and checksum (SQLite), or the same on the
/// loaded schema (PostgreSQL). Returns the manifest.
pub(super) fn copy_to(
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
