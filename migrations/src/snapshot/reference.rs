//! The reference schema of a version: what a tenant at that version should
//! contain, read from a scratch database migrated to it by the same embedded
//! migrations, built once per (backend, version) and kept for the life of
//! the process (24 versions × two backends: a few hundred kilobytes).
//!
//! SQLite's scratch database is in memory. PostgreSQL's is a schema created
//! inside a transaction on the connection it is given (the tenant's own, so
//! the reference comes from the same server) and rolled back: nothing is
//! left behind, even by a process killed mid-way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};

use super::{postgres, sqlite, Snapshot};
use crate::runner::{self, MigrateError};
use crate::{TENANT_POSTGRES, TENANT_SQLITE};

/// Which flavour of the tenant schema a reference is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    Sqlite,
    /// On a server of this major version.
    Postgres {
        major: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("cannot open the scratch database")]
    Open(#[source] diesel::ConnectionError),
    #[error("migrating the scratch database to {version} failed")]
    Migrate {
        version: String,
        #[source]
        source: MigrateError,
    },
    #[error("reading the scratch database's schema failed")]
    Query(#[source] diesel::result::Error),
}

type Key = (Flavour, Option<String>);

fn cache() -> &'static Mutex<HashMap<Key, Arc<Snapshot>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Snapshot>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many references this process has built (not served from the cache).
static BUILT: AtomicUsize = AtomicUsize::new(0);

/// References built so far by this process (tests and benchmarks check the
/// cache with it).
pub fn built() -> usize {
    BUILT.load(Ordering::Relaxed)
}

fn cached(key: &Key) -> Option<Arc<Snapshot>> {
    cache().lock().ok().and_then(|c| c.get(key).cloned())
}

/// Keeps the first one built when two threads raced.
fn keep(key: Key, snapshot: Snapshot) -> Arc<Snapshot> {
    BUILT.fetch_add(1, Ordering::Relaxed);
    let snapshot = Arc::new(snapshot);
    match cache().lock() {
        Ok(mut c) => c.entry(key).or_insert(snapshot).clone(),
        Err(_) => snapshot,
    }
}

/// The SQLite schema at `version` (`None` = empty).
pub fn sqlite(version: Option<&str>) -> Result<Arc<Snapshot>, ReferenceError> {
    let key = (Flavour::Sqlite, version.map(str::to_string));
    if let Some(s) = cached(&key) {
        return Ok(s);
    }
    let mut conn = SqliteConnection::establish(":memory:").map_err(ReferenceError::Open)?;
    runner::migrate(&mut conn, &TENANT_SQLITE, version, |_| {}).map_err(|e| {
        ReferenceError::Migrate {
            version: version.unwrap_or("(empty)").to_string(),
            source: e,
        }
    })?;
    let snapshot = sqlite::snapshot(&mut conn).map_err(ReferenceError::Query)?;
    Ok(keep(key, snapshot))
}

/// The PostgreSQL schema at `version` on a server of `major`, built (once)
/// in a scratch schema on `conn` inside a transaction that is rolled back.
/// `conn` must not be inside a transaction.
pub fn postgres(
    conn: &mut PgConnection,
    major: u32,
    version: Option<&str>,
) -> Result<Arc<Snapshot>, ReferenceError> {
    let key = (Flavour::Postgres { major }, version.map(str::to_string));
    if let Some(s) = cached(&key) {
        return Ok(s);
    }
    let schema = scratch_name();
    let mut built: Option<Result<Snapshot, ReferenceError>> = None;
    let _ = conn.transaction::<(), diesel::result::Error, _>(|c| {
        built = Some(build_pg(c, &schema, version));
        // Whatever happened, keep nothing.
        Err(diesel::result::Error::RollbackTransaction)
    });
    match built {
        Some(Ok(snapshot)) => Ok(keep(key, snapshot)),
        Some(Err(e)) => Err(e),
        // The transaction could not even begin.
        None => Err(ReferenceError::Query(
            diesel::result::Error::BrokenTransactionManager,
        )),
    }
}

fn build_pg(
    c: &mut PgConnection,
    schema: &str,
    version: Option<&str>,
) -> Result<Snapshot, ReferenceError> {
    c.batch_execute(&format!(
        "CREATE SCHEMA \"{schema}\"; SET LOCAL search_path TO \"{schema}\";"
    ))
    .map_err(ReferenceError::Query)?;
    runner::migrate(c, &TENANT_POSTGRES, version, |_| {}).map_err(|e| ReferenceError::Migrate {
        version: version.unwrap_or("(empty)").to_string(),
        source: e,
    })?;
    Ok(postgres::snapshot(c)
        .map_err(ReferenceError::Query)?
        .snapshot)
}

/// A schema name no tenant has (tenants are `t_<hex>`) and no concurrent
/// build shares.
fn scratch_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "drift_ref_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    #[test]
    fn sqlite_references_are_built_once_and_match_a_fresh_migration() {
        let versions = catalogue::versions();
        let head = versions.last().map(|m| m.version.clone());
        let a = sqlite(head.as_deref()).expect("reference");
        let before = built();
        let b = sqlite(head.as_deref()).expect("reference");
        assert!(Arc::ptr_eq(&a, &b), "served from the cache");
        assert_eq!(built(), before, "not built again");
        assert!(a.get("table sales").is_some());
        assert!(
            a.get("column sales.locked_by").is_some(),
            "head has phase 7"
        );
        let phase0 = sqlite(Some(&versions[6].version)).expect("reference");
        assert!(phase0.get("column sales.locked_by").is_none());
        assert!(phase0.get("table sales").is_some());
        assert!(sqlite(None).expect("empty").objects.is_empty());
    }

    #[test]
    fn a_postgres_reference_equals_a_real_schema_and_leaves_nothing() {
        let Some(pg) = tenantplane_testkit::TestPg::new() else {
            return;
        };
        let mut c = pg.connect();
        let head = catalogue::versions().last().map(|m| m.version.clone());
        c.batch_execute("CREATE SCHEMA t_0123; SET search_path TO t_0123")
            .expect("schema");
        runner::migrate(&mut c, &TENANT_POSTGRES, head.as_deref(), |_| {}).expect("migrate");
        let real = postgres::snapshot(&mut c).expect("snapshot");
        assert_eq!(real.schema, "t_0123");
        assert!(real.server_major >= 10, "{}", real.server_major);
        c.batch_execute("RESET search_path").expect("reset");
        let reference =
            super::postgres(&mut c, real.server_major, head.as_deref()).expect("reference");
        let only = |a: &Snapshot, b: &Snapshot| -> Vec<String> {
            a.objects
                .iter()
                .filter(|(k, v)| b.get(k) != Some(v))
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect()
        };
        assert_eq!(
            only(&reference, &real.snapshot),
            Vec::<String>::new(),
            "reference only"
        );
        assert_eq!(
            only(&real.snapshot, &reference),
            Vec::<String>::new(),
            "tenant only"
        );
        assert!(reference.get("type user_role").is_some());
        assert!(reference
            .get("function sales_invoice_number_assign()")
            .is_some());
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let left: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 'drift_ref_%'",
        )
        .get_result(&mut c)
        .expect("count");
        assert_eq!(left.n, 0, "the scratch schema was rolled back");
    }
}
