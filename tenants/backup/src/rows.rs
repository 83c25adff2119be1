//! The `backups` rows: what a backup is as the API shows it, reads, pinning
//! and deletion.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlBackend, ControlConnection, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::backups;
use tenantplane_control_db::states::BackupState;
use tenantplane_fleet::registry;

use crate::manifest::{Manifest, ServerKind};
use crate::store::ArtifactStore;

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Asked for by an operator.
    Manual,
    /// By a backup schedule.
    Scheduled,
    /// Before a rollout migrates the tenant.
    PreMigration,
    /// The safety copy a restore takes of the tenant it is about to replace.
    PreRestore,
}

impl Reason {
    pub const ALL: &'static [Reason] = &[
        Reason::Manual,
        Reason::Scheduled,
        Reason::PreMigration,
        Reason::PreRestore,
    ];

    /// The word stored in `backups.reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Scheduled => "scheduled",
            Reason::PreMigration => "pre_migration",
            Reason::PreRestore => "pre_restore",
        }
    }
}

impl std::str::FromStr for Reason {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "invalid reason {s:?}: one of {:?}",
                    Reason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>()
                ))
            })
    }
}

/// A backup as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backup {
    pub id: String,
    pub tenant_id: String,
    /// `sqlite`, `pg_schema` or `pg_database`
    pub server_kind: String,
    /// `pending`, `running`, `completed`, `verified` or `failed`
    pub state: String,
    /// `manual`, `scheduled`, `pre_migration` or `pre_restore`
    pub reason: String,
    /// The tenant schema's version in the snapshot.
    pub schema_version: Option<String>,
    /// The artifact's key in the store.
    pub artifact: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub manifest: Option<Manifest>,
    pub pinned: bool,
    /// Why taking it failed (the whole error chain).
    pub error: Option<String>,
    #[serde(serialize_with = "tenantplane_api_types::time::utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "tenantplane_api_types::time::utc_opt")]
    pub started_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "tenantplane_api_types::time::utc_opt")]
    pub completed_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "tenantplane_api_types::time::utc_opt")]
    pub verified_at: Option<NaiveDateTime>,
    /// Why verification failed.
    pub verify_error: Option<String>,
}

impl Backup {
    pub fn state(&self) -> Option<BackupState> {
        self.state.parse().ok()
    }

    pub fn kind(&self) -> Option<ServerKind> {
        ServerKind::parse(&self.server_kind)
    }

    /// Completed or verified: its artifact is in the store.
    pub fn is_usable(&self) -> bool {
        matches!(
            self.state(),
            Some(BackupState::Completed | BackupState::Verified)
        )
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = backups)]
pub(crate) struct BackupRow {
    pub id: String,
    pub tenant_id: String,
    pub server_kind: String,
    pub state: String,
    pub reason: String,
    pub schema_version: Option<String>,
    pub artifact: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub manifest: Option<String>,
    pub pinned: bool,
    pub error: Option<String>,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub completed_at: Option<NaiveDateTime>,
    pub verified_at: Option<NaiveDateTime>,
    pub verify_error: Option<String>,
}

impl From<BackupRow> for Backup {
    fn from(r: BackupRow) -> Self {
        Backup {
            manifest: r
                .manifest
                .as_deref()
                .and_then(|m| Manifest::from_json(m).ok()),
            id: r.id,
            tenant_id: r.tenant_id,
            server_kind: r.server_kind,
            state: r.state,
            reason: r.reason,
            schema_version: r.schema_version,
            artifact: r.artifact,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            pinned: r.pinned,
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            verified_at: r.verified_at,
            verify_error: r.verify_error,
        }
    }
}

pub(crate) fn find(conn: &mut ControlConnection, id: &str) -> Result<BackupRow> {
    backups::table
        .find(id)
        .select(BackupRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("backup", id))
}

pub fn get(db: &ControlDb, id: &str) -> Result<Backup> {
    Ok(find(&mut *db.conn()?, id)?.into())
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

/// Filters of a backup list.
#[derive(Debug, Clone, Default)]
pub struct BackupFilter {
    /// Tenant id or slug (deleted tenants included).
    pub tenant: Option<String>,
    pub state: Option<String>,
    pub limit: Option<i64>,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupPage {
    pub items: Vec<Backup>,
    pub next_cursor: Option<String>,
}

/// Newest first.
pub fn list(db: &ControlDb, filter: &BackupFilter) -> Result<BackupPage> {
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let mut conn = db.conn()?;
    let mut q = backups::table
        .select(BackupRow::as_select())
        .into_boxed::<ControlBackend>();
    if let Some(t) = &filter.tenant {
        let tenant = registry::find_any(&mut conn, t)?;
        q = q.filter(backups::tenant_id.eq(tenant.id));
    }
    if let Some(s) = &filter.state {
        let state: BackupState = s.parse()?;
        q = q.filter(backups::state.eq(state.as_str()));
    }
    if let Some(cursor) = &filter.cursor {
        let at = find(&mut conn, cursor)
            .map_err(|_| Error::invalid(format!("unknown cursor '{cursor}'")))?
            .created_at;
        q = q.filter(
            backups::created_at.lt(at).or(backups::created_at
                .eq(at)
                .and(backups::id.lt(cursor.clone()))),
        );
    }
    let mut rows: Vec<BackupRow> = q
        .order((backups::created_at.desc(), backups::id.desc()))
        .limit(limit + 1)
        .load(&mut conn)?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(BackupPage {
        items: rows.into_iter().map(Backup::from).collect(),
        next_cursor,
    })
}

/// Pins (kept by retention whatever its age) or unpins a backup.
pub fn set_pinned(db: &ControlDb, actor: &Actor, id: &str, pinned: bool) -> Result<Backup> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let before: Backup = find(conn, id)?.into();
        diesel::update(backups::table.find(id))
            .set(backups::pinned.eq(pinned))
            .execute(conn)?;
        let after: Backup = find(conn, id)?.into();
        audit::record(
            conn,
            actor,
            Change {
                action: if pinned { "backup.pin" } else { "backup.unpin" },
                resource_type: "backup",
                resource_id: Some(id),
                tenant_id: Some(&after.tenant_id),
                before: Some(serde_json::json!({ "pinned": before.pinned })),
                after: Some(serde_json::json!({ "pinned": after.pinned })),
            },
        )?;
        Ok(after)
    })
}

pub fn pin(db: &ControlDb, actor: &Actor, id: &str) -> Result<Backup> {
    set_pinned(db, actor, id, true)
}

pub fn unpin(db: &ControlDb, actor: &Actor, id: &str) -> Result<Backup> {
    set_pinned(db, actor, id, false)
}

/// Deletes a backup: the artifact (and its manifest) first, then the row.
/// A crash in between leaves a row whose artifact is gone (verifying it
/// marks it failed; deleting it again finishes the job), never an artifact
/// without a row. Refuses pinned backups and backups still being taken.
pub fn delete(db: &ControlDb, store: &dyn ArtifactStore, actor: &Actor, id: &str) -> Result<()> {
    let row = find(&mut *db.conn()?, id)?;
    if row.pinned {
        return Err(Error::Conflict(format!(
            "backup {id} is pinned; unpin it first"
        )));
    }
    if matches!(
        row.state.parse::<BackupState>(),
        Ok(BackupState::Pending | BackupState::Running)
    ) {
        return Err(Error::Conflict(format!("backup {id} is still being taken")));
    }
    for key in [row.artifact.clone(), Manifest::key_for(&row.artifact)] {
        store
            .delete(&key)
            .map_err(|e| e.for_tenant(&row.tenant_id, "deleting the artifact"))?;
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        // Pinned in between: the artifact is gone already, so the row must
        // go too; say so in the log.
        let current = find(conn, id)?;
        if current.pinned {
            tracing::warn!(
                backup_id = id,
                "backup was pinned while being deleted; deleting it anyway"
            );
        }
        let before: Backup = current.into();
        diesel::delete(backups::table.find(id)).execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "backup.delete",
                resource_type: "backup",
                resource_id: Some(id),
                tenant_id: Some(&before.tenant_id),
                before: audit::snapshot(&before),
                after: None,
            },
        )
    })?;
    tracing::info!(backup_id = id, tenant_id = %row.tenant_id, "backup deleted");
    Ok(())
}
