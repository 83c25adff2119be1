//! Verifying a backup: fetch the artifact, check its size and SHA-256
//! against the row, restore it into a scratch database (SQLite: a temporary
//! file and `PRAGMA integrity_check`; PostgreSQL: a scratch schema
//! `tp_verify_<id>` in the server's own database, never the tenant's live
//! schema, dropped afterwards), and compare every table's row count and
//! checksum (and the identity counters) with the manifest.
//!
//! A backup that fails verification is marked `failed`, with the reason in
//! `verify_error`. A verification that could not run (the database or the
//! store unreachable) changes nothing and returns the error.

use std::path::{Path, PathBuf};

use chrono::Utc;
use diesel::prelude::*;
use tenantplane_control_db::db::ControlDb;
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::schema::backups;
use tenantplane_control_db::states::BackupState;

use crate::backup::{locate, work_dir};
use crate::manifest::{file_digest, Manifest, ServerKind};
use crate::postgres::{self, Loaded, PgPlace};
use crate::rows::{self, Backup, BackupRow};
use crate::sqlite::{self, Unpacked};
use crate::store::{ArtifactStore, StoreError};

/// Why a backup is not good.
pub(crate) type Finding = String;

/// The outcome of checking an artifact: fine, bad (a finding about the
/// backup), or not checkable right now (an error).
pub(crate) enum Checked<T> {
    Good(T),
    Bad(Finding),
}

/// Fetches the artifact into `dir` and checks it against the row: size,
/// SHA-256 and a readable manifest. Returns the local file and the manifest.
pub(crate) fn fetch(
    store: &dyn ArtifactStore,
    row: &BackupRow,
    dir: &Path,
) -> Result<Checked<(PathBuf, Manifest)>> {
    let local = dir.join("artifact");
    match store.get(&row.artifact, &local) {
        Ok(()) => {}
        Err(StoreError::NotFound(key)) => {
            return Ok(Checked::Bad(format!(
                "the artifact {key} is missing from the store"
            )))
        }
        Err(e) => return Err(e.for_tenant(&row.tenant_id, "fetching the artifact")),
    }
    let Some(manifest) = row
        .manifest
        .as_deref()
        .and_then(|m| Manifest::from_json(m).ok())
    else {
        return Ok(Checked::Bad("the row has no readable manifest".into()));
    };
    let (size, sha) = file_digest(&local)
        .map_err(|e| Error::tenant_db(&row.tenant_id, "cannot read the fetched artifact", e))?;
    let want_sha = row.sha256.as_deref().unwrap_or_default();
    if sha != want_sha {
        return Ok(Checked::Bad(format!(
            "artifact SHA-256 mismatch: the store holds {sha} ({size} bytes), the backup recorded {want_sha} ({} bytes)",
            row.size_bytes.unwrap_or(-1)
        )));
    }
    if row.size_bytes != Some(size as i64) {
        return Ok(Checked::Bad(format!(
            "artifact size mismatch: {size} bytes, the backup recorded {:?}",
            row.size_bytes
        )));
    }
    if manifest.artifact.sha256 != sha || manifest.backup_id != row.id {
        return Ok(Checked::Bad(
            "the manifest does not describe this artifact".into(),
        ));
    }
    Ok(Checked::Good((local, manifest)))
}

/// A short, unique suffix for scratch and staging schemas.
pub(crate) fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Verifies a backup; returns the row as it ends up (`verified`, or
/// `failed` with `verify_error`).
pub fn verify(db: &ControlDb, store: &dyn ArtifactStore, backup_id: &str) -> Result<Backup> {
    let mut conn = db.conn()?;
    let row = rows::find(&mut conn, backup_id)?;
    match row.state.parse::<BackupState>()? {
        BackupState::Completed | BackupState::Verified => {}
        other => {
            return Err(Error::Conflict(format!(
                "backup {backup_id} is {other}: only completed backups can be verified"
            )))
        }
    }
    let kind = ServerKind::parse(&row.server_kind).ok_or_else(|| {
        Error::invalid(format!(
            "backup {backup_id} has an unknown server kind {}",
            row.server_kind
        ))
    })?;
    let work = work_dir(&row.tenant_id)?;
    let started = std::time::Instant::now();
    let outcome = match fetch(store, &row, work.path())? {
        Checked::Bad(f) => Checked::Bad(f),
        Checked::Good((artifact, manifest)) => match kind {
            ServerKind::Sqlite => check_sqlite(&artifact, &manifest, work.path())?,
            ServerKind::PgSchema | ServerKind::PgDatabase => {
                // The scratch schema goes into the database of the server
                // the tenant lives on now.
                let at = locate(&mut conn, &row.tenant_id, true)?;
                let place = PgPlace {
                    url: at.server.url.clone(),
                    schema: format!("tp_verify_{}", short_id()),
                };
                check_pg(&place, &artifact, &manifest)?
            }
        },
    };
    let now = Utc::now().naive_utc();
    let guard = backups::table
        .find(backup_id)
        .filter(backups::state.eq_any([
            BackupState::Completed.as_str(),
            BackupState::Verified.as_str(),
        ]));
    match &outcome {
        Checked::Good(()) => {
            diesel::update(guard)
                .set((
                    backups::state.eq(BackupState::Verified.as_str()),
                    backups::verified_at.eq(Some(now)),
                    backups::verify_error.eq(None::<String>),
                ))
                .execute(&mut conn)?;
            tracing::info!(backup_id, tenant_id = %row.tenant_id, ms = started.elapsed().as_millis() as u64, "backup verified");
        }
        Checked::Bad(finding) => {
            diesel::update(guard)
                .set((
                    backups::state.eq(BackupState::Failed.as_str()),
                    backups::verify_error.eq(Some(finding.as_str())),
                ))
                .execute(&mut conn)?;
            tracing::warn!(backup_id, tenant_id = %row.tenant_id, finding = %finding, "backup failed verification");
        }
    }
    // On the connection already held (see `backup::create_by`).
    Ok(rows::find(&mut conn, backup_id)?.into())
}

/// Unpacks into a temporary file (integrity check included) and compares.
pub(crate) fn check_sqlite(
    artifact: &Path,
    manifest: &Manifest,
    dir: &Path,
) -> Result<Checked<()>> {
    let file = dir.join("restored.db");
    match sqlite::unpack(artifact, &file) {
        Ok(content) => Ok(compare(manifest, &content)),
        Err(Unpacked::Bad(f)) => Ok(Checked::Bad(f)),
        Err(Unpacked::Io(e)) => {
            Err(e.for_tenant(&manifest.tenant_slug, "unpacking the artifact failed"))
        }
    }
}

/// Loads into the scratch schema `place`, compares, and drops it.
fn check_pg(place: &PgPlace, artifact: &Path, manifest: &Manifest) -> Result<Checked<()>> {
    let checked = load_and_compare(place, artifact, manifest);
    if let Err(e) = postgres::drop_schema(place) {
        tracing::warn!(schema = %place.schema, error = %report(&e), "cannot drop the verification schema");
    }
    checked
}

/// Loads an artifact into a new schema and compares what landed with the
/// manifest (restores use this too, on their staging schema).
pub(crate) fn load_and_compare(
    place: &PgPlace,
    artifact: &Path,
    manifest: &Manifest,
) -> Result<Checked<()>> {
    let slug = manifest.tenant_slug.as_str();
    match postgres::load(place, artifact, manifest.schema_version.as_deref()) {
        Ok(()) => {}
        Err(Loaded::Bad(f)) => return Ok(Checked::Bad(f)),
        Err(Loaded::Db(e)) => return Err(e.for_tenant(slug, "loading the backup failed")),
    }
    let content = postgres::measure(place)
        .map_err(|e| e.for_tenant(slug, "reading the loaded backup failed"))?;
    Ok(compare(manifest, &content))
}

pub(crate) fn compare(manifest: &Manifest, content: &crate::manifest::Content) -> Checked<()> {
    let diffs = manifest.differences(content);
    if diffs.is_empty() {
        Checked::Good(())
    } else {
        Checked::Bad(format!(
            "the restored copy differs from the manifest: {}",
            diffs.join("; ")
        ))
    }
}
