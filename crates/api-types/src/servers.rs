//! Database servers: where tenant databases live.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// A server as the API shows it: the URL without its password.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub id: String,
    pub name: String,
    /// `sqlite` or `postgres`
    pub kind: String,
    pub url: String,
    /// `file`, `schema` or `database`
    pub isolation: String,
    pub capacity: i32,
    /// `active` (takes new tenants) or `draining`
    pub status: String,
    /// Tenant databases on this server, including soft-deleted tenants whose
    /// database is kept.
    pub tenants: i64,
    #[serde(serialize_with = "crate::time::utc")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
}

/// Body of `POST /v1/servers`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServer {
    /// Unique name; defaults to a short form of the id.
    pub name: Option<String>,
    /// `sqlite` or `postgres`
    pub kind: String,
    /// `sqlite:///path/to/dir` or `postgres://user@host:5432/db`
    pub url: String,
    /// `file` for sqlite; `schema` (default) or `database` for postgres
    pub isolation: Option<String>,
    /// Most tenant databases this server takes (default 10000).
    pub capacity: Option<i32>,
}
