//! Database servers: where tenant databases live, and placement of new tenants.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{NaiveDateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use uuid::Uuid;

use crate::urls::redact_url;
pub use tenantplane_api_types::servers::{NewServer, ServerPatch, ServerView};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{
    backend_of, ensure_writable_dir, sqlite_path, write_tx, BackendKind, ControlConnection,
    ControlDb,
};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::{database_servers, tenants};
use tenantplane_control_db::states::ServerStatus;

/// Name of the SQLite server registered at first start.
pub const DEFAULT_SERVER: &str = "default";
const DEFAULT_CAPACITY: i32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// One SQLite file per tenant in a directory.
    File,
    /// One PostgreSQL schema per tenant in one database.
    Schema,
    /// One PostgreSQL database per tenant.
    Database,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = database_servers)]
pub struct DatabaseServer {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub url: String,
    pub isolation: String,
    pub capacity: i32,
    pub status: String,
    pub created_at: NaiveDateTime,
}

impl DatabaseServer {
    /// The directory of a SQLite server: its URL's path, resolved against
    /// the data directory when relative (the default server; see
    /// [`resolve_sqlite_dir`]).
    pub fn sqlite_dir(&self) -> PathBuf {
        resolve_sqlite_dir(&self.url)
    }

    pub fn status(&self) -> Result<ServerStatus> {
        self.status.parse()
    }

    pub fn isolation(&self) -> Isolation {
        match self.isolation.as_str() {
            "schema" => Isolation::Schema,
            "database" => Isolation::Database,
            _ => Isolation::File,
        }
    }
}

fn view(s: DatabaseServer, tenants: i64) -> ServerView {
    // A SQLite server shows where its files are for this process: the
    // default server's stored path is relative to the data directory.
    let url = if s.kind == "sqlite" {
        format!("sqlite://{}", s.sqlite_dir().display())
    } else {
        redact_url(&s.url)
    };
    ServerView {
        url,
        id: s.id,
        name: s.name,
        kind: s.kind,
        isolation: s.isolation,
        capacity: s.capacity,
        status: s.status,
        tenants,
        created_at: s.created_at,
    }
}

fn tenant_counts(conn: &mut ControlConnection) -> Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = tenants::table
        .group_by(tenants::server_id)
        .select((tenants::server_id, count_star()))
        .load(conn)?;
    Ok(rows.into_iter().collect())
}

/// The data directory stored SQLite paths are relative to, set once by the
/// process that owns it ([`ensure_default_in`]).
static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The URL the default server is stored with: relative, so a data directory
/// copied or restored elsewhere keeps its tenants with it.
const DEFAULT_URL: &str = "sqlite://tenants";

/// The directory behind a SQLite server URL. Registered servers have
/// absolute paths; the default server's is relative and resolves against
/// this process's data directory (`TENANTPLANE_DATA_DIR`), set at start,
/// else the environment variable, else `data` as the configuration's
/// default.
pub fn resolve_sqlite_dir(url: &str) -> PathBuf {
    let path = sqlite_path(url);
    if path.is_absolute() {
        return path;
    }
    let base = DATA_DIR.get().cloned().unwrap_or_else(|| {
        std::env::var_os("TENANTPLANE_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("data"))
    });
    normalise(&std::path::absolute(&base).unwrap_or(base)).join(path)
}

/// Registers `<data dir>/tenants` as the default SQLite server on first
/// start, with its absolute path. In-process tests and benchmarks use
/// this: several data directories live in one process there. The binary
/// uses [`ensure_default_in`].
pub fn ensure_default(db: &ControlDb, data_dir: &Path) -> Result<()> {
    let dir = std::path::absolute(data_dir.join("tenants"))
        .map_err(|e| Error::control("cannot resolve the data directory", e))?;
    insert_default(db, &dir, format!("sqlite://{}", dir.display()))
}

/// The process's own data directory: remembers it for relative paths,
/// registers the default server relative to it on first start, and turns a
/// default server stored with an absolute path inside this data directory
/// (as releases before this one did) into the relative form. A default
/// server whose absolute path lies elsewhere is left as it is: that is
/// where its tenants are.
pub fn ensure_default_in(db: &ControlDb, data_dir: &Path) -> Result<()> {
    let data_dir = normalise(
        &std::path::absolute(data_dir)
            .map_err(|e| Error::control("cannot resolve the data directory", e))?,
    );
    if DATA_DIR.set(data_dir.clone()).is_err() && DATA_DIR.get().is_some_and(|d| *d != data_dir) {
        return Err(Error::control(
            "setting the data directory",
            tenantplane_control_db::DbError::State(
                "this process already uses another data directory".into(),
            ),
        ));
    }
    let dir = data_dir.join("tenants");
    insert_default(db, &dir, DEFAULT_URL.to_string())?;
    let mut conn = db.conn()?;
    let stored: Option<(String, String)> = database_servers::table
        .filter(database_servers::name.eq(DEFAULT_SERVER))
        .filter(database_servers::kind.eq("sqlite"))
        .select((database_servers::id, database_servers::url))
        .first(&mut conn)
        .optional()?;
    if let Some((id, url)) = stored {
        let path = normalise(&sqlite_path(&url));
        if !path.is_absolute() {
            // A copied data dir, or another process on a shared control DB
            // with a data dir of its own: the directory may not exist yet.
            let dir = data_dir.join(&path);
            ensure_writable_dir(&dir)
                .map_err(|e| Error::control(format!("{} is not writable", dir.display()), e))?;
        } else if let Ok(rel) = path.strip_prefix(&data_dir) {
            let relative = format!("sqlite://{}", rel.display());
            diesel::update(database_servers::table.find(&id))
                .set(database_servers::url.eq(&relative))
                .execute(&mut conn)?;
            tracing::info!(from = %url, to = %relative,
                "default server: path stored relative to the data directory");
        } else {
            tracing::warn!(url = %url, data_dir = %data_dir.display(),
                "the default server's directory is outside the data directory; its tenants stay there");
        }
    }
    Ok(())
}

fn insert_default(db: &ControlDb, dir: &Path, url: String) -> Result<()> {
    let mut conn = db.conn()?;
    let any: i64 = database_servers::table.count().get_result(&mut conn)?;
    if any > 0 {
        return Ok(());
    }
    ensure_writable_dir(dir)
        .map_err(|e| Error::control(format!("{} is not writable", dir.display()), e))?;
    let server = DatabaseServer {
        id: Uuid::new_v4().to_string(),
        name: DEFAULT_SERVER.to_string(),
        kind: "sqlite".to_string(),
        url,
        isolation: "file".to_string(),
        capacity: DEFAULT_CAPACITY,
        status: ServerStatus::Active.as_str().to_string(),
        created_at: Utc::now().naive_utc(),
    };
    // Two processes starting at once: the unique name makes the second insert
    // fail, which is fine: the server exists.
    match diesel::insert_into(database_servers::table)
        .values(&server)
        .execute(&mut conn)
    {
        Ok(_)
        | Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Validates a new server, checks it can be reached, and registers it.
pub fn register(db: &ControlDb, actor: &Actor, new: NewServer) -> Result<ServerView> {
    let id = Uuid::new_v4();
    let name = new
        .name
        .clone()
        .unwrap_or_else(|| format!("srv-{}", &id.simple().to_string()[..8]));
    tenantplane_control_db::validate::server_name(&name)?;
    let taken: i64 = database_servers::table
        .filter(database_servers::name.eq(&name))
        .count()
        .get_result(&mut db.conn()?)?;
    if taken > 0 {
        return Err(Error::Conflict(format!("a server named '{name}' exists")));
    }
    let capacity = new.capacity.unwrap_or(DEFAULT_CAPACITY);
    if capacity < 1 {
        return Err(Error::invalid("capacity must be at least 1"));
    }
    let (kind, isolation, url) = match new.kind.as_str() {
        "sqlite" => {
            if backend_of(&new.url) != BackendKind::Sqlite {
                return Err(Error::invalid(
                    "a sqlite server's url is sqlite:///path/to/dir",
                ));
            }
            if !matches!(new.isolation.as_deref(), None | Some("file")) {
                return Err(Error::invalid("a sqlite server's isolation is 'file'"));
            }
            let dir = sqlite_path(&new.url);
            if !dir.is_absolute() {
                return Err(Error::invalid(format!(
                    "a sqlite server's directory must be an absolute path, not {:?} \
                     (it would depend on the directory each process starts in)",
                    dir.display().to_string()
                )));
            }
            let dir = normalise(&dir);
            refuse_overlap(&mut *db.conn()?, &dir)?;
            // Only now, with everything checked, may the directory be made.
            ensure_writable_dir(&dir).map_err(|e| {
                Error::invalid(format!("directory {} is not writable: {e}", dir.display()))
            })?;
            ("sqlite", "file", format!("sqlite://{}", dir.display()))
        }
        "postgres" => {
            if backend_of(&new.url) != BackendKind::Postgres {
                return Err(Error::invalid(
                    "a postgres server's url is postgres://user@host:port/database",
                ));
            }
            let isolation = match new.isolation.as_deref() {
                None | Some("schema") => "schema",
                Some("database") => "database",
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "invalid isolation {other:?} for postgres: 'schema' or 'database'"
                    )))
                }
            };
            refuse_same_pg(&mut *db.conn()?, &new.url, isolation)?;
            diesel::PgConnection::establish(&new.url).map_err(|e| {
                Error::invalid(format!("cannot connect to {}: {e}", redact_url(&new.url)))
            })?;
            ("postgres", isolation, new.url.clone())
        }
        other => {
            return Err(Error::invalid(format!(
                "invalid kind {other:?}: 'sqlite' or 'postgres'"
            )))
        }
    };
    let server = DatabaseServer {
        id: id.to_string(),
        name,
        kind: kind.to_string(),
        url,
        isolation: isolation.to_string(),
        capacity,
        status: ServerStatus::Active.as_str().to_string(),
        created_at: Utc::now().naive_utc(),
    };
    let shown = view(server.clone(), 0);
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        diesel::insert_into(database_servers::table)
            .values(&server)
            .execute(conn)
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => {
                    Error::Conflict(format!("a server named '{}' exists", server.name))
                }
                other => other,
            })?;
        audit::record(
            conn,
            actor,
            Change {
                action: "server.create",
                resource_type: "server",
                resource_id: Some(&server.id),
                tenant_id: None,
                before: None,
                after: audit::snapshot(&shown),
            },
        )
    })?;
    Ok(shown)
}

/// `.` and `..` resolved without touching the disk (the directory may not
/// exist yet, and must not be created before the checks pass).
fn normalise(path: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Two SQLite servers may not share a directory, nor sit one inside the
/// other: tenant files would be counted twice and a directory sweep of one
/// would see the other's files.
fn refuse_overlap(conn: &mut ControlConnection, dir: &std::path::Path) -> Result<()> {
    let others: Vec<(String, String)> = database_servers::table
        .filter(database_servers::kind.eq("sqlite"))
        .select((database_servers::name, database_servers::url))
        .load(conn)?;
    for (name, url) in others {
        let theirs = normalise(&resolve_sqlite_dir(&url));
        if theirs == dir {
            return Err(Error::Conflict(format!(
                "server '{name}' already uses {}",
                dir.display()
            )));
        }
        if dir.starts_with(&theirs) || theirs.starts_with(dir) {
            return Err(Error::invalid(format!(
                "{} and server '{name}''s {} are one inside the other; give each server a directory of its own",
                dir.display(),
                theirs.display()
            )));
        }
    }
    Ok(())
}

/// One server per PostgreSQL database and isolation: a second would place
/// tenants on the same database under another name.
fn refuse_same_pg(conn: &mut ControlConnection, url: &str, isolation: &str) -> Result<()> {
    let Some(target) = crate::urls::pg_target(url) else {
        return Err(Error::invalid(
            "a postgres server's url is postgres://user@host:port/database",
        ));
    };
    let others: Vec<(String, String, String)> = database_servers::table
        .filter(database_servers::kind.eq("postgres"))
        .select((
            database_servers::name,
            database_servers::url,
            database_servers::isolation,
        ))
        .load(conn)?;
    for (name, other_url, other_isolation) in others {
        if other_isolation == isolation
            && crate::urls::pg_target(&other_url).as_ref() == Some(&target)
        {
            return Err(Error::Conflict(format!(
                "server '{name}' already serves {target} with {isolation} isolation"
            )));
        }
    }
    Ok(())
}

pub fn list(db: &ControlDb) -> Result<Vec<ServerView>> {
    let mut conn = db.conn()?;
    let counts = tenant_counts(&mut conn)?;
    let servers: Vec<DatabaseServer> = database_servers::table
        .select(DatabaseServer::as_select())
        .order(database_servers::created_at.asc())
        .load(&mut conn)?;
    Ok(servers
        .into_iter()
        .map(|s| {
            let n = counts.get(&s.id).copied().unwrap_or(0);
            view(s, n)
        })
        .collect())
}

/// Looks a server up by id or name.
pub fn find(conn: &mut ControlConnection, id_or_name: &str) -> Result<DatabaseServer> {
    database_servers::table
        .filter(
            database_servers::id
                .eq(id_or_name)
                .or(database_servers::name.eq(id_or_name)),
        )
        .select(DatabaseServer::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("server", id_or_name))
}

pub fn get(db: &ControlDb, id_or_name: &str) -> Result<ServerView> {
    let mut conn = db.conn()?;
    let server = find(&mut conn, id_or_name)?;
    let n = tenant_counts(&mut conn)?
        .get(&server.id)
        .copied()
        .unwrap_or(0);
    Ok(view(server, n))
}

/// The server a new tenant goes to: the named one (which must be active and
/// have room), or the active server with the most free capacity.
pub fn place(conn: &mut ControlConnection, requested: Option<&str>) -> Result<DatabaseServer> {
    let counts = tenant_counts(conn)?;
    let free = |s: &DatabaseServer| i64::from(s.capacity) - counts.get(&s.id).copied().unwrap_or(0);
    if let Some(wanted) = requested {
        let server =
            find(conn, wanted).map_err(|_| Error::invalid(format!("unknown server '{wanted}'")))?;
        if server.status != ServerStatus::Active.as_str() {
            return Err(Error::Conflict(format!(
                "server '{}' is {} and takes no new tenants",
                server.name, server.status
            )));
        }
        if free(&server) <= 0 {
            return Err(Error::Conflict(format!(
                "server '{}' is full ({} tenants)",
                server.name, server.capacity
            )));
        }
        return Ok(server);
    }
    let servers: Vec<DatabaseServer> = database_servers::table
        .filter(database_servers::status.eq(ServerStatus::Active.as_str()))
        .select(DatabaseServer::as_select())
        .order(database_servers::created_at.asc())
        .load(conn)?;
    servers
        .into_iter()
        .filter(|s| free(s) > 0)
        .max_by_key(|s| free(s))
        .ok_or_else(|| Error::Conflict("no active database server has free capacity".to_string()))
}

/// Tenants on a server that are not deleted: the ones a drain moves off and
/// a retirement waits for. (Soft-deleted tenants keep their database where
/// it is; they do not hold a server back.)
pub fn live_tenants(conn: &mut ControlConnection, server_id: &str) -> Result<i64> {
    Ok(tenants::table
        .filter(tenants::server_id.eq(server_id))
        .filter(tenants::deleted_at.is_null())
        .count()
        .get_result(conn)?)
}

/// Tenant databases on a server, soft-deleted tenants' included (their
/// databases are kept): what its capacity is measured against.
pub fn databases_on(conn: &mut ControlConnection, server_id: &str) -> Result<i64> {
    Ok(tenants::table
        .filter(tenants::server_id.eq(server_id))
        .count()
        .get_result(conn)?)
}

/// Changes a server's capacity or lifecycle status (audited). `draining`
/// and `retired` take no new tenants; `retired` is refused while live
/// tenants are left on the server (409: drain it first). Invalid input
/// changes nothing.
pub fn patch(
    db: &ControlDb,
    actor: &Actor,
    id_or_name: &str,
    change: ServerPatch,
) -> Result<ServerView> {
    let status = change
        .status
        .as_deref()
        .map(|s| {
            s.parse::<ServerStatus>().map_err(|_| {
                Error::invalid(format!(
                    "invalid status {s:?}: one of {:?}",
                    ServerStatus::names()
                ))
            })
        })
        .transpose()?;
    if let Some(c) = change.capacity {
        if c < 1 {
            return Err(Error::invalid("capacity must be at least 1"));
        }
    }
    let mut conn = db.conn()?;
    let (before, after) = write_tx(&mut conn, None, |conn| {
        let server = find(conn, id_or_name)?;
        let live = live_tenants(conn, &server.id)?;
        if status == Some(ServerStatus::Retired) && live > 0 {
            return Err(Error::Conflict(format!(
                "server '{}' still holds {live} tenant(s); drain it (POST /v1/servers/{}/drain) before retiring it",
                server.name, server.id
            )));
        }
        let count = tenant_counts(conn)?.get(&server.id).copied().unwrap_or(0);
        let before = view(server.clone(), count);
        let mut updated = server.clone();
        if let Some(c) = change.capacity {
            updated.capacity = c;
        }
        if let Some(s) = status {
            updated.status = s.as_str().to_string();
        }
        diesel::update(database_servers::table.find(&server.id))
            .set((
                database_servers::capacity.eq(updated.capacity),
                database_servers::status.eq(&updated.status),
            ))
            .execute(conn)?;
        let after = view(updated, count);
        audit::record(
            conn,
            actor,
            Change {
                action: "server.update",
                resource_type: "server",
                resource_id: Some(&server.id),
                tenant_id: None,
                before: audit::snapshot(&before),
                after: audit::snapshot(&after),
            },
        )?;
        Ok((before, after))
    })?;
    if before.status != after.status {
        tracing::info!(server = %after.name, from = %before.status, to = %after.status, "server status changed");
    }
    Ok(after)
}
