//! Tenants: the records operators create, list and change.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// A tenant as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    /// `provisioning`, `active` or `suspended`
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub contact_email: Option<String>,
    /// Name of the database server holding the tenant database.
    pub server: String,
    pub server_id: String,
    /// The last tenant migration applied (`null` = empty schema).
    pub schema_version: Option<String>,
    /// The highest seed phase the schema has fully reached.
    pub phase: Option<u8>,
    pub plan: Option<String>,
    #[serde(serialize_with = "crate::time::utc_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub trial_ends_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// Body of `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// `^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`, unique (also among deleted tenants)
    #[schema(
        pattern = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        example = "corner-bakery"
    )]
    pub slug: String,
    #[schema(min_length = 1, max_length = 200, example = "Corner Bakery")]
    pub name: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")]
    pub plan: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub contact_email: Option<String>,
    /// Server id or name; default: the active server with most free capacity.
    pub server: Option<String>,
    /// `head` (default), `phase:N`, `version:V` or `none`
    pub schema: Option<String>,
}

/// Body of `PATCH /v1/tenants/{id}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    /// Replaces the whole label set.
    pub labels: Option<BTreeMap<String, String>>,
    /// An empty string clears it.
    pub contact_email: Option<String>,
    /// `active` or `suspended`
    pub status: Option<String>,
    /// A plan slug, applied like a self-serve plan change (an upgrade that
    /// needs a newer schema queues a migration).
    pub plan: Option<String>,
    /// With `plan`: start a trial of that many days (1 to 365). A tenant
    /// starts a trial of a plan once; an operator may grant another here.
    pub trial_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantPage {
    pub items: Vec<Tenant>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}
