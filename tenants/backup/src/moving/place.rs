//! Where a tenant's database would be on a server, whether two servers
//! would put it in the same place, the lock that holds the source still
//! during a move, and dropping a copy that is not served.

use diesel::connection::SimpleConnection;
use tenantplane_control_db::error::{Error, Result};
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
use tenantplane_fleet::tenant_run::lock_key;
use tenantplane_fleet::urls::pg_target;
use uuid::Uuid;

use crate::held::LOCK_WAIT;
use crate::manifest::ServerKind;
use crate::postgres::{PgPlace, TenantLock};

/// Where a tenant's database would be on `server`.
pub(super) fn location_on(server: &DatabaseServer, tenant_id: &str) -> Result<TenantDbLocation> {
    let id = Uuid::parse_str(tenant_id)
        .map_err(|_| Error::invalid(format!("tenant id '{tenant_id}' is not a uuid")))?;
    Ok(TenantDbLocation::new(server, &id))
}

/// The physical place a location names, so two servers that would put a
/// tenant in the same place (one PostgreSQL cluster with database
/// isolation, say) are caught: the move would drop the live copy.
pub(super) fn physical(location: &TenantDbLocation) -> String {
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
pub(super) fn compatible(a: ServerKind, b: ServerKind) -> bool {
    (a == ServerKind::Sqlite) == (b == ServerKind::Sqlite)
}

/// The source held still for the copy (see the module docs).
pub(super) enum SourceLock {
    /// A transaction holding the SQLite file's write lock.
    Sqlite(TenantConnection),
    /// Held until dropped.
    Pg { _lock: TenantLock },
}

impl SourceLock {
    pub(super) fn take(
        location: &TenantDbLocation,
        tenant_id: &str,
        slug: &str,
    ) -> Result<SourceLock> {
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
pub(super) fn drop_copy(location: &TenantDbLocation, slug: &str, which: &str) -> Result<()> {
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
            created_at: chrono::Utc::now().naive_utc(),
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
