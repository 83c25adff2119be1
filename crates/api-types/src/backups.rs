//! Backups: consistent snapshots of one tenant's database in the artifact
//! store, their verification, and restores in place or as a new tenant.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::tenants::Tenant;

/// A backup as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Backup {
    pub id: String,
    pub tenant_id: String,
    /// The tenant's slug as the manifest recorded it (`null` until the
    /// backup completed).
    pub tenant_slug: Option<String>,
    /// `sqlite`, `pg_schema` or `pg_database`: a backup restores only onto a
    /// server of the same kind.
    pub server_kind: String,
    /// `pending`, `running`, `completed`, `verified` or `failed`
    pub state: String,
    /// `manual`, `scheduled`, `pre_migration` or `pre_restore`
    pub reason: String,
    /// The tenant schema's version in the snapshot (`null`: empty schema, or
    /// not taken yet).
    pub schema_version: Option<String>,
    /// The artifact's key in the store (the manifest sits next to it as
    /// `<key>.manifest.json`).
    pub artifact: String,
    /// The compressed artifact's size.
    pub size_bytes: Option<i64>,
    /// SHA-256 of the compressed artifact, hex.
    pub sha256: Option<String>,
    /// Pinned backups are kept by retention and cannot be deleted.
    pub pinned: bool,
    /// Why taking it failed (the whole error chain).
    pub error: Option<String>,
    /// Why verification (or a restore) found it unusable.
    pub verify_error: Option<String>,
    /// Rows per table in the snapshot, from the manifest (`null` until the
    /// backup completed).
    pub row_counts: Option<BTreeMap<String, u64>>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub verified_at: Option<NaiveDateTime>,
}

/// A page of backups, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupPage {
    pub items: Vec<Backup>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /v1/backups/{id}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestoreRequest {
    /// Replace the backup's own tenant with the backup (after a
    /// `pre_restore` safety backup). Writes made between the safety backup
    /// and the swap are lost: suspend the tenant first for a clean cut-over.
    // A struct variant, not a unit one: serde ignores unknown fields next
    // to the tag of a unit variant even with `deny_unknown_fields`.
    InPlace {},
    /// Create a new tenant from the backup, with the source tenant's name and
    /// plan and no labels.
    NewTenant {
        /// The new tenant's slug.
        slug: String,
        /// Server id or name, of the backup's kind; default: the source
        /// tenant's server, else the first active server of that kind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
    },
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Restored {
    /// The restored tenant as it is now (the new one for `new_tenant`).
    pub tenant: Tenant,
    /// The backup that was restored.
    pub backup: Backup,
    /// The copy of the tenant taken just before an in-place restore (`null`
    /// for `new_tenant`).
    pub safety_backup: Option<Backup>,
}
