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
    /// `active` (takes new tenants), `draining` (takes none; its tenants
    /// are being moved off) or `retired` (takes none, holds no live tenant)
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

/// Body of `PATCH /v1/servers/{id}`: fields left out stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    /// Most tenant databases this server takes (at least 1; lowering it
    /// below the current count only stops new placements).
    #[schema(minimum = 1)]
    pub capacity: Option<i32>,
    /// `active`, `draining` or `retired` (409 while live tenants are left).
    #[schema(pattern = "^(active|draining|retired)$")]
    pub status: Option<String>,
}

/// Body of `POST /v1/tenants/{id}/move`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The target server's id or name: active, with room, and of a
    /// compatible kind (SQLite to SQLite, PostgreSQL to PostgreSQL).
    pub server: String,
}

/// A move of one tenant to another server, run as a durable job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MoveView {
    /// The job running the move (`tenant.move`).
    pub job_id: i64,
    pub tenant_id: String,
    /// The server the tenant is moving from.
    pub from_server: String,
    /// The server the tenant is moving to.
    pub to_server: String,
    /// The job's state: `pending`, `running`, `succeeded` or `dead`.
    pub state: String,
    /// The last failed attempt's error, if any.
    pub last_error: Option<String>,
}

/// A drain of one server: its tenants moved to other servers by a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrainView {
    pub server_id: String,
    /// The job running the drain (`server.drain`).
    pub job_id: i64,
    /// The job's state: `pending`, `running`, `succeeded` or `dead`.
    pub state: String,
    /// Live tenants on the server when the drain started.
    pub total: i64,
    /// Tenants moved off so far.
    pub moved: i64,
    /// Live tenants still on the server.
    pub remaining: i64,
    /// The last failed pass's error (tenants that could not move: no room
    /// elsewhere, a failed copy; the job retries them), if any.
    pub last_error: Option<String>,
}
