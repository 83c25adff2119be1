//! Tenant databases: where each lives on its server, creating and dropping
//! them, connecting, and moving their schema with the tenant migrations.
//!
//! Names of files, schemas and databases derive from the tenant id only, never
//! from user text, so no slug can reach a path or an SQL identifier.

use std::fs::OpenOptions;
use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use tenantplane_migrations::{runner, MigrateError, MigrationPlan, TENANT_POSTGRES, TENANT_SQLITE};
use uuid::Uuid;

use tenantplane_control_db::DbError;

use crate::pg_pool::PooledTenant;
use crate::servers::{DatabaseServer, Isolation};
use crate::urls::with_database;

/// A tenant-database operation that failed: what was tried, and the
/// driver's error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct TenantDbError {
    pub what: String,
    #[source]
    pub source: DbError,
}

impl TenantDbError {
    pub fn new(what: impl Into<String>, source: impl Into<DbError>) -> Self {
        TenantDbError {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The domain error for `tenant`, saying what was being done.
    pub fn for_tenant(self, tenant: &str, doing: &str) -> tenantplane_control_db::Error {
        tenantplane_control_db::Error::tenant_db(
            tenant,
            format!("{doing}: {}", self.what),
            self.source,
        )
    }

    /// A retry may cure it (by the error's kind; see `DbError::is_transient`).
    pub fn is_transient(&self) -> bool {
        self.source.is_transient()
    }
}

/// `map_err` adapter: the failure of `what`.
fn failed<E: Into<DbError>>(what: impl Into<String>) -> impl FnOnce(E) -> TenantDbError {
    let what = what.into();
    move |e| TenantDbError::new(what, e)
}

/// The identifier used for a tenant's file, schema or database: `t_` and the
/// 32 hex digits of its id (34 characters, inside PostgreSQL's 63).
pub fn db_name(tenant_id: &Uuid) -> String {
    format!("t_{}", tenant_id.simple())
}

/// Where one tenant's database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantDbLocation {
    SqliteFile {
        path: PathBuf,
    },
    PgSchema {
        server_url: String,
        schema: String,
    },
    PgDatabase {
        server_url: String,
        database: String,
    },
}

/// An open connection to one tenant database.
pub enum TenantConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl TenantDbLocation {
    pub fn new(server: &DatabaseServer, tenant_id: &Uuid) -> Self {
        let name = db_name(tenant_id);
        match server.isolation() {
            Isolation::File => TenantDbLocation::SqliteFile {
                path: server.sqlite_dir().join(format!("{name}.db")),
            },
            Isolation::Schema => TenantDbLocation::PgSchema {
                server_url: server.url.clone(),
                schema: name,
            },
            Isolation::Database => TenantDbLocation::PgDatabase {
                server_url: server.url.clone(),
                database: name,
            },
        }
    }

    /// Creates the empty database; fails if it already exists.
    pub fn create(&self) -> Result<(), TenantDbError> {
        match self {
            TenantDbLocation::SqliteFile { path } => {
                // create_new: never adopt a file that is already there.
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map(drop)
                    .map_err(failed(format!("cannot create {}", path.display())))?;
                // WAL is a property of the file: set it once here. If that
                // fails, remove the file so a failed create leaves nothing.
                let wal = self.connect().and_then(|mut conn| match &mut conn {
                    TenantConnection::Sqlite(c) => c
                        .batch_execute("PRAGMA journal_mode = WAL;")
                        .map_err(failed("cannot switch the new file to WAL")),
                    TenantConnection::Postgres(_) => Ok(()),
                });
                if let Err(e) = wal {
                    let _ = self.drop_if_exists();
                    return Err(e);
                }
                Ok(())
            }
            TenantDbLocation::PgSchema { server_url, schema } => {
                let mut conn = pg_connect(server_url)?;
                conn.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
                    .map_err(failed(format!("cannot create schema {schema}")))
            }
            TenantDbLocation::PgDatabase {
                server_url,
                database,
            } => {
                let mut conn = pg_connect(server_url)?;
                conn.batch_execute(&format!("CREATE DATABASE \"{database}\""))
                    .map_err(failed(format!("cannot create database {database}")))
            }
        }
    }

    /// Drops the database if it exists (used to undo a failed provisioning).
    pub fn drop_if_exists(&self) -> Result<(), TenantDbError> {
        match self {
            TenantDbLocation::SqliteFile { path } => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        // A missing file, or a "directory" that is not one: nothing to drop.
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                            ) => {}
                        Err(e) => {
                            return Err(TenantDbError::new(
                                format!("cannot remove {}", path.display()),
                                e,
                            ))
                        }
                    }
                }
                Ok(())
            }
            TenantDbLocation::PgSchema { server_url, schema } => pg_connect(server_url)?
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .map_err(failed(format!("cannot drop schema {schema}"))),
            TenantDbLocation::PgDatabase {
                server_url,
                database,
            } => pg_connect(server_url)?
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                ))
                .map_err(failed(format!("cannot drop database {database}"))),
        }
    }

    /// Whether the database exists.
    pub fn exists(&self) -> Result<bool, TenantDbError> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let count = |url: &str, sql: &str, name: &str| -> Result<bool, TenantDbError> {
            let rows: Vec<Count> = diesel::sql_query(sql)
                .bind::<diesel::sql_types::Text, _>(name)
                .load(&mut pg_connect(url)?)
                .map_err(failed(format!("cannot look {name} up")))?;
            Ok(rows.first().is_some_and(|c| c.n > 0))
        };
        match self {
            TenantDbLocation::SqliteFile { path } => Ok(path.exists()),
            TenantDbLocation::PgSchema { server_url, schema } => count(
                server_url,
                "SELECT count(*) AS n FROM pg_namespace WHERE nspname = $1",
                schema,
            ),
            TenantDbLocation::PgDatabase {
                server_url,
                database,
            } => count(
                server_url,
                "SELECT count(*) AS n FROM pg_database WHERE datname = $1",
                database,
            ),
        }
    }

    /// Opens a connection whose unqualified names resolve inside the tenant.
    pub fn connect(&self) -> Result<TenantConnection, TenantDbError> {
        match self {
            TenantDbLocation::SqliteFile { path } => {
                if !path.exists() {
                    return Err(TenantDbError::new(
                        "cannot open the tenant database",
                        DbError::State(format!("{} does not exist", path.display())),
                    ));
                }
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(failed(format!("cannot open {}", path.display())))?;
                conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
                    .map_err(failed("cannot set the connection's pragmas"))?;
                Ok(TenantConnection::Sqlite(conn))
            }
            TenantDbLocation::PgSchema { server_url, schema } => {
                let mut conn = pg_connect(server_url)?;
                conn.batch_execute(&format!("SET search_path TO \"{schema}\""))
                    .map_err(failed(format!("cannot enter schema {schema}")))?;
                Ok(TenantConnection::Postgres(conn))
            }
            TenantDbLocation::PgDatabase {
                server_url,
                database,
            } => {
                let url = with_database(server_url, database)
                    .map_err(|e| TenantDbError::new("invalid server URL", DbError::State(e)))?;
                Ok(TenantConnection::Postgres(pg_connect(&url)?))
            }
        }
    }
}

impl TenantDbLocation {
    /// A connection for one run: a tenant schema of a PostgreSQL server
    /// reuses an idle connection of that server and gives it back, reset,
    /// when dropped (`pg_pool`); other locations connect as `connect` does.
    pub fn connect_pooled(&self) -> Result<PooledTenant, TenantDbError> {
        match self {
            TenantDbLocation::PgSchema { server_url, schema } => {
                PooledTenant::checkout(server_url, schema)
            }
            _ => self.connect().map(PooledTenant::unpooled),
        }
    }
}

impl TenantConnection {
    /// Moves the schema to `target` (`None` = empty), one migration per
    /// transaction.
    pub fn migrate_to(&mut self, target: Option<&str>) -> Result<MigrationPlan, MigrateError> {
        match self {
            TenantConnection::Sqlite(c) => runner::migrate(c, &TENANT_SQLITE, target, |_| {}),
            TenantConnection::Postgres(c) => runner::migrate(c, &TENANT_POSTGRES, target, |_| {}),
        }
    }

    /// The versions applied to this tenant schema, oldest first.
    pub fn applied_versions(&mut self) -> Result<Vec<String>, MigrateError> {
        let mut v = match self {
            TenantConnection::Sqlite(c) => runner::applied_versions(c)?,
            TenantConnection::Postgres(c) => runner::applied_versions(c)?,
        };
        v.sort();
        Ok(v)
    }
}

fn pg_connect(url: &str) -> Result<PgConnection, TenantDbError> {
    PgConnection::establish(url).map_err(failed("cannot connect to PostgreSQL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_id_only() {
        let id = Uuid::parse_str("0b9e7a4e-2f55-4c39-9a0e-1f2d3c4b5a69").expect("uuid");
        assert_eq!(db_name(&id), "t_0b9e7a4e2f554c399a0e1f2d3c4b5a69");
    }
}
