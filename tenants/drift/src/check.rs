//! One tenant's drift check: its applied versions against the version the
//! control database records, and its schema against the reference of that
//! version.
//!
//! The check reads the tenant's catalogue in one statement and compares it
//! with a reference built once per (backend, version) in this process, so a
//! check costs a connection and two queries (docs/benchmarks.md).

use chrono::Utc;
use diesel::prelude::*;
use tenantplane_api_types::drift::{Difference, DriftReport};
use tenantplane_control_db::error::{report, DbError, Error, Result};
use tenantplane_control_db::states::TenantStatus;
use tenantplane_control_db::ControlDb;
use tenantplane_fleet::registry::find_row;
use tenantplane_fleet::servers;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbError, TenantDbLocation};
use tenantplane_migrations::runner;
use tenantplane_migrations::snapshot::{self, reference};

use crate::diff::compare;
use crate::store;

/// Why a check could not be made (a failure, not a finding).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot connect")]
    Connect(#[source] TenantDbError),
    #[error("reading the applied versions failed")]
    Versions(#[source] diesel::result::Error),
    #[error("reading the schema failed")]
    Snapshot(#[source] diesel::result::Error),
    #[error("building the reference schema failed")]
    Reference(#[source] reference::ReferenceError),
}

impl CheckError {
    /// A lost or refused connection may be cured by a retry; a reference
    /// that cannot be built will not be.
    pub fn is_transient(&self) -> bool {
        match self {
            CheckError::Connect(e) => e.is_transient(),
            CheckError::Versions(e) | CheckError::Snapshot(e) => {
                tenantplane_control_db::error::query_is_transient(e)
            }
            CheckError::Reference(reference::ReferenceError::Query(e)) => {
                tenantplane_control_db::error::query_is_transient(e)
            }
            CheckError::Reference(_) => false,
        }
    }

    /// The domain error for `tenant`.
    pub fn for_tenant(self, tenant: &str) -> Error {
        let context = self.to_string();
        let source = match self {
            CheckError::Connect(e) => return e.for_tenant(tenant, "drift check"),
            CheckError::Versions(e) | CheckError::Snapshot(e) => DbError::Query(e),
            CheckError::Reference(e) => DbError::Migration(Box::new(e)),
        };
        Error::tenant_db(tenant, format!("drift check: {context}"), source)
    }
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// diesel's bookkeeping, read without diesel's harness (which would create
/// the table when it is missing: a check writes nothing).
const APPLIED: &str = "SELECT version FROM __diesel_schema_migrations ORDER BY version";

fn versions(rows: Vec<Version>) -> Vec<String> {
    rows.into_iter().map(|r| r.version).collect()
}

/// The applied versions against the recorded one: a version list that is
/// not a prefix of the catalogue, or one that ends elsewhere.
fn version_differences(applied: &[String], recorded: Option<&str>) -> Vec<Difference> {
    if let Err(e) = runner::plan(applied, None) {
        return vec![Difference::changed(
            "migrations",
            "applied",
            Some("a prefix of the catalogue".into()),
            Some(e.to_string()),
        )];
    }
    let last = applied.last().map(String::as_str);
    if last != recorded {
        return vec![Difference::changed(
            "migrations",
            "version",
            recorded.map(str::to_string),
            last.map(str::to_string),
        )];
    }
    Vec::new()
}

/// Compares the tenant schema behind `conn` with the reference of
/// `recorded` (the control database's `schema_version`). `conn` must not be
/// inside a transaction (a PostgreSQL reference is built in one, rolled
/// back). Empty = no drift.
pub fn check_connection(
    conn: &mut TenantConnection,
    recorded: Option<&str>,
) -> Result<Vec<Difference>, CheckError> {
    let applied = applied(conn)?;
    check_against(conn, &applied, recorded)
}

/// The versions applied to the tenant, from its own history.
fn applied(conn: &mut TenantConnection) -> Result<Vec<String>, CheckError> {
    Ok(versions(
        match conn {
            TenantConnection::Sqlite(c) => diesel::sql_query(APPLIED).load(c),
            TenantConnection::Postgres(c) => diesel::sql_query(APPLIED).load(c),
        }
        .map_err(CheckError::Versions)?,
    ))
}

/// `check_connection` with the applied versions already read.
fn check_against(
    conn: &mut TenantConnection,
    applied: &[String],
    recorded: Option<&str>,
) -> Result<Vec<Difference>, CheckError> {
    let (reference, actual) = match conn {
        TenantConnection::Sqlite(c) => {
            let actual = snapshot::sqlite::snapshot(c).map_err(CheckError::Snapshot)?;
            let reference = reference::sqlite(recorded).map_err(CheckError::Reference)?;
            (reference, actual)
        }
        TenantConnection::Postgres(c) => {
            let actual = snapshot::postgres::snapshot(c).map_err(CheckError::Snapshot)?;
            let reference = reference::postgres(c, actual.server_major, recorded)
                .map_err(CheckError::Reference)?;
            (reference, actual.snapshot)
        }
    };
    let mut out = version_differences(applied, recorded);
    out.extend(compare(&reference, &actual));
    Ok(out)
}

/// The wire name of a connection's backend.
pub fn backend(conn: &TenantConnection) -> &'static str {
    match conn {
        TenantConnection::Sqlite(_) => "sqlite",
        TenantConnection::Postgres(_) => "postgres",
    }
}

/// Checks one tenant now (by id or slug) and records the result.
pub fn check_tenant(db: &ControlDb, id_or_slug: &str) -> Result<DriftReport> {
    let (row, server) = {
        let mut conn = db.conn()?;
        let row = find_row(&mut conn, id_or_slug)?;
        let server = servers::find(&mut conn, &row.server_id)?;
        (row, server)
    };
    if row.status == TenantStatus::Provisioning.as_str() {
        return Err(Error::Conflict(format!(
            "tenant {} is still being provisioned",
            row.slug
        )));
    }
    let id = uuid::Uuid::parse_str(&row.id)
        .map_err(|_| Error::invalid(format!("tenant {}: malformed id", row.id)))?;
    let location = TenantDbLocation::new(&server, &id);
    let mut tenant = location
        .connect()
        .map_err(|e| CheckError::Connect(e).for_tenant(&row.id))?;
    let recorded = row.schema_version.clone();
    let differences =
        check_connection(&mut tenant, recorded.as_deref()).map_err(|e| e.for_tenant(&row.id))?;
    let report = DriftReport {
        backend: backend(&tenant).to_string(),
        tenant_id: row.id,
        slug: row.slug,
        schema_version: recorded,
        drifted: !differences.is_empty(),
        differences,
        checked_at: Utc::now().naive_utc(),
    };
    store::record(db, &report)?;
    Ok(report)
}

/// The rollout's check before migrating a tenant: `Ok(None)` when its
/// schema is the reference of the version its own history says it is at;
/// `Ok(Some(message))`, the task's error, when it drifted. Not the version
/// the control DB recorded: a tenant ahead of that record is one whose
/// worker died between the tenant's commit and the control DB's, which the
/// retry records (`Outcome::recovered`), not drift. The finding is recorded
/// (a failure to record it is logged, not fatal: the task fails either way).
pub fn gate(
    db: &ControlDb,
    tenant_id: &str,
    slug: &str,
    conn: &mut TenantConnection,
) -> Result<Option<String>, CheckError> {
    let applied = applied(conn)?;
    let recorded = applied.last().map(String::as_str);
    let differences = check_against(conn, &applied, recorded)?;
    let found = DriftReport {
        tenant_id: tenant_id.to_string(),
        slug: slug.to_string(),
        backend: backend(conn).to_string(),
        schema_version: recorded.map(str::to_string),
        drifted: !differences.is_empty(),
        differences,
        checked_at: Utc::now().naive_utc(),
    };
    if let Err(e) = store::record(db, &found) {
        tracing::warn!(tenant_id, error = %report(&e), "recording the drift check failed");
    }
    if !found.drifted {
        return Ok(None);
    }
    Ok(Some(refusal(&found)))
}

/// The task error of a drifted tenant: every difference, one per line.
pub fn refusal(r: &DriftReport) -> String {
    let lines: Vec<&str> = r.differences.iter().map(|d| d.text.as_str()).collect();
    format!(
        "schema drift from version {} ({} difference{}; a rollout with \"allow_drift\": true migrates it anyway):\n{}",
        r.schema_version.as_deref().unwrap_or("(empty)"),
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantplane_migrations::catalogue;

    #[test]
    fn versions_must_end_at_the_recorded_one() {
        let all: Vec<String> = catalogue::versions()
            .iter()
            .map(|m| m.version.clone())
            .collect();
        assert!(version_differences(&all[..3], Some(&all[2])).is_empty());
        assert!(version_differences(&[], None).is_empty());
        let d = version_differences(&all[..4], Some(&all[2]));
        assert_eq!(
            d[0].text,
            format!("migrations version: '{}' → '{}'", all[2], all[3])
        );
        let gap = vec![all[0].clone(), all[2].clone()];
        assert_eq!(
            version_differences(&gap, Some(&all[2]))[0]
                .aspect
                .as_deref(),
            Some("applied")
        );
    }

    #[test]
    fn a_real_sqlite_tenant_is_clean_until_changed_by_hand() {
        use diesel::connection::SimpleConnection;
        let dir = tempfile::tempdir().expect("dir");
        let location = TenantDbLocation::SqliteFile {
            path: dir.path().join("t_1.db"),
        };
        location.create().expect("create");
        let mut conn = location.connect().expect("connect");
        let at = catalogue::versions()[10].version.clone();
        conn.migrate_to(Some(&at)).expect("migrate");
        assert_eq!(
            check_connection(&mut conn, Some(&at)).expect("check"),
            vec![]
        );
        // Recorded elsewhere than it is: the versions say so, and the
        // reference of the recorded version shows what is extra.
        let before = catalogue::versions()[9].version.clone();
        let d = check_connection(&mut conn, Some(&before)).expect("check");
        assert_eq!(
            d[0].text,
            format!("migrations version: '{before}' → '{at}'")
        );
        assert!(d.len() > 1, "{d:?}");
        let TenantConnection::Sqlite(c) = &mut conn else {
            panic!("sqlite")
        };
        c.batch_execute(
            "DROP INDEX sales_user_id_idx; ALTER TABLE users ADD COLUMN nickname TEXT DEFAULT 'x'",
        )
        .expect("tamper");
        let texts: Vec<String> = check_connection(&mut conn, Some(&at))
            .expect("check")
            .into_iter()
            .map(|d| d.text)
            .collect();
        assert_eq!(
            texts,
            vec![
                "column users.nickname: added",
                "index sales_user_id_idx: missing"
            ]
        );
    }
}
