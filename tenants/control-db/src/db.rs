//! The control database: one code path for SQLite and PostgreSQL through a
//! diesel `MultiConnection`, pooled with r2d2, migrated at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use tenantplane_migrations::{CONTROL_POSTGRES, CONTROL_SQLITE};

use crate::error::{DbError, Error, Result};

/// A connection to the control database, whichever backend it is.
#[derive(diesel::MultiConnection)]
pub enum ControlConnection {
    Postgres(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// The backend type of [`ControlConnection`], for boxed queries.
pub type ControlBackend = <ControlConnection as Connection>::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// Picks the backend from the URL's scheme. Unlike `MultiConnection`'s own
/// `establish`, which tries each backend in turn, a mistyped PostgreSQL URL
/// never silently becomes a SQLite file here.
pub fn backend_of(url: &str) -> BackendKind {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        BackendKind::Postgres
    } else {
        BackendKind::Sqlite
    }
}

/// The file behind a SQLite URL (`sqlite://path`, `file:path` or a plain path).
pub fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("file:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

/// Process-wide SQLite settings, applied once before the first connection:
/// multi-thread mode (a diesel connection is only ever used by one thread at a
/// time, so SQLite's per-connection mutexes are redundant) and no memory
/// statistics (they take a process-global mutex on every allocation, which
/// kept parallel tenant migrations from using more than one core).
pub fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is only valid before SQLite initialises; the
        // Once makes this the process's first call here, and when something
        // already initialised SQLite it returns SQLITE_MISUSE and changes
        // nothing, which is harmless (only speed is at stake).
        let rc = unsafe {
            let a = libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MULTITHREAD);
            let b = libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
                0 as std::os::raw::c_int,
            );
            (a, b)
        };
        if rc != (libsqlite3_sys::SQLITE_OK, libsqlite3_sys::SQLITE_OK) {
            tracing::debug!(?rc, "SQLite was initialised already; keeping its defaults");
        }
    });
}

/// The page cache of a pooled SQLite connection: 256 KiB instead of
/// SQLite's 2 MiB. The control database is read by index lookups, the OS
/// caches the file anyway, and a dozen pooled connections with full
/// default caches would hold 24 MiB that fills up as the fleet (and the
/// task history) grows (at 512 KiB the fleet bench's peak RSS grew 1.4×
/// from 1,000 to 100,000 tenants; at 256 KiB, 1.25×; docs/benchmarks.md).
pub const SQLITE_CACHE_PRAGMA: &str = "PRAGMA cache_size = -256";

/// Pragmas every SQLite connection of ours gets: wait on locks instead of
/// failing, WAL for concurrent readers, enforced foreign keys, and a small
/// page cache (`SQLITE_CACHE_PRAGMA`).
pub fn sqlite_pragmas(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; {SQLITE_CACHE_PRAGMA};"
    ))
}

/// r2d2 manager that opens the right backend and applies the SQLite pragmas
/// on every new connection.
#[derive(Debug, Clone)]
pub struct ControlManager {
    url: String,
    kind: BackendKind,
}

impl ManageConnection for ControlManager {
    type Connection = ControlConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<ControlConnection, r2d2::Error> {
        match self.kind {
            BackendKind::Postgres => diesel::PgConnection::establish(&self.url)
                .map(ControlConnection::Postgres)
                .map_err(r2d2::Error::ConnectionError),
            BackendKind::Sqlite => {
                let path = sqlite_path(&self.url);
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(r2d2::Error::ConnectionError)?;
                sqlite_pragmas(&mut conn).map_err(r2d2::Error::QueryError)?;
                Ok(ControlConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut ControlConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut ControlConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

pub type ControlPool = Pool<ControlManager>;
pub type PooledControl = PooledConnection<ControlManager>;

/// Key of the PostgreSQL advisory lock held while control migrations run, so
/// several processes starting at once migrate one after the other.
const MIGRATION_LOCK_KEY: i64 = 0x7465_6e61_6e74_0001;

/// Handle to the control database. Cheap to clone.
#[derive(Clone)]
pub struct ControlDb {
    pool: ControlPool,
    kind: BackendKind,
}

impl std::fmt::Debug for ControlDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlDb")
            .field("kind", &self.kind)
            .finish()
    }
}

/// Connections one process's control-DB pool opens at most when not
/// configured (`TENANTPLANE_CONTROL_DB_POOL_SIZE`): SQLite has one writer
/// anyway; on PostgreSQL 16 covers a worker's executors, job runner,
/// scheduler, relay and maintenance threads, which each hold a connection
/// only for one statement or transaction at a time. docs/operations.md
/// ("Connection budget") has the sums for N APIs and M workers.
pub fn default_pool_size(kind: BackendKind) -> u32 {
    match kind {
        BackendKind::Sqlite => 8,
        BackendKind::Postgres => 16,
    }
}

impl ControlDb {
    /// Opens the pool (at its default size) and applies pending control
    /// migrations.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, None)
    }

    /// Opens the pool with at most `max_connections` connections (`None`:
    /// [`default_pool_size`]) and applies pending control migrations.
    pub fn open_with(url: &str, max_connections: Option<u32>) -> Result<Self> {
        configure_sqlite();
        let kind = backend_of(url);
        if kind == BackendKind::Sqlite {
            let path = sqlite_path(url);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::control(format!("cannot create {}", dir.display()), e))?;
            }
        }
        let manager = ControlManager {
            url: url.to_string(),
            kind,
        };
        let max_size = max_connections.unwrap_or_else(|| default_pool_size(kind));
        if max_size == 0 {
            return Err(Error::invalid(
                "the control database pool needs at least 1 connection",
            ));
        }
        let pool = Pool::builder()
            .max_size(max_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| Error::control("cannot connect", DbError::Pool(e)))?;
        let db = ControlDb { pool, kind };
        db.migrate()?;
        Ok(db)
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The most connections this process's pool opens.
    pub fn max_connections(&self) -> u32 {
        self.pool.max_size()
    }

    pub fn conn(&self) -> Result<PooledControl> {
        Ok(self.pool.get()?)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            Error::control("applying control migrations", DbError::Migration(e))
        };
        match &mut *conn {
            ControlConnection::Postgres(pg) => {
                pg.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
                let result = pg.run_pending_migrations(CONTROL_POSTGRES).map(|_| ());
                pg.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
                result.map_err(failed)
            }
            ControlConnection::Sqlite(lite) => {
                // One IMMEDIATE transaction around all pending migrations: the
                // write lock serialises concurrent starters; each migration
                // nests as a savepoint.
                lite.immediate_transaction(|c| {
                    c.run_pending_migrations(CONTROL_SQLITE)
                        .map(|_| ())
                        .map_err(diesel::result::Error::QueryBuilderError)
                })
                .map_err(|e| Error::control("applying control migrations", e))
            }
        }
    }

    /// Ready = reachable and every embedded control migration applied.
    pub fn check_ready(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let pending = match &mut *conn {
            ControlConnection::Postgres(pg) => pending_count(pg, CONTROL_POSTGRES),
            ControlConnection::Sqlite(lite) => pending_count(lite, CONTROL_SQLITE),
        };
        match pending {
            Ok(0) => Ok(()),
            Ok(n) => Err(Error::control(
                "not ready",
                DbError::State(format!("{n} control migrations pending")),
            )),
            Err(e) => Err(Error::control(
                "reading applied control migrations",
                DbError::Migration(e),
            )),
        }
    }
}

fn pending_count<C, DB>(
    conn: &mut C,
    source: EmbeddedMigrations,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    conn.pending_migrations(source).map(|p| p.len())
}

/// Makes sure a directory exists and is writable by creating and removing a
/// probe file, so a bad path fails before anything is recorded.
pub fn ensure_writable_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".tenantplane-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Runs `f` in a transaction that holds the write lock from its first
/// statement. On SQLite a deferred transaction that reads before it writes
/// fails with SQLITE_BUSY when another writer got in between (the busy timeout
/// does not apply then); taking the lock up front makes writers queue instead.
/// On PostgreSQL `serialize` additionally takes a transaction-scoped advisory
/// lock so read-then-insert sequences (placement, bootstrap) do not race.
pub fn write_tx<T, F>(conn: &mut ControlConnection, serialize: Option<i64>, f: F) -> Result<T>
where
    F: FnOnce(&mut ControlConnection) -> Result<T>,
{
    conn.transaction(|c| {
        match c {
            ControlConnection::Sqlite(lite) => {
                lite.batch_execute("UPDATE database_servers SET id = id WHERE 1 = 0")?
            }
            ControlConnection::Postgres(pg) => {
                if let Some(key) = serialize {
                    pg.batch_execute(&format!("SELECT pg_advisory_xact_lock({key})"))?
                }
            }
        }
        f(c)
    })
}

/// Advisory-lock keys of the control plane (PostgreSQL).
pub mod locks {
    pub const BOOTSTRAP: i64 = 0x7465_6e61_6e74_0002;
    pub const PLACEMENT: i64 = 0x7465_6e61_6e74_0003;
}
