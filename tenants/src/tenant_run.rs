//! Moving one tenant database to a rollout's target, the way the worker does
//! it: under the tenant's lock, in one outer transaction, one savepoint per
//! migration, then the verification probes.
//!
//! The outer transaction is what keeps a tenant from ever being between two
//! versions: a process killed mid-way leaves the tenant exactly where it
//! started. A migration that fails is rolled back to its savepoint and the
//! steps before it are committed, so the tenant stays at its last good
//! version. It also means one commit (one fsync) per tenant instead of one per
//! migration, which is most of the speed-up over running diesel per tenant.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use tenantplane_migrations::probes::{self, ProbeConn};
use tenantplane_migrations::{
    catalogue, runner, MigrateError, Step, StepDirection, TENANT_POSTGRES, TENANT_SQLITE,
};

use crate::tasks::{Outcome, TaskError};
use crate::tenant_db::{TenantConnection, TenantDbLocation};

/// How one run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `None` = empty schema.
    pub target: Option<String>,
    /// Run the probes after migrating.
    pub probes: bool,
    /// PostgreSQL statement timeout.
    pub timeout: Duration,
    /// SQLite: how long to wait for the tenant's lock before a transient
    /// failure (the task is retried later instead of blocking a worker).
    pub lock_wait: Duration,
    /// The tenant's advisory-lock key (PostgreSQL).
    pub lock_key: i64,
}

/// Errors a retry may cure: locks, busy databases, connections, timeouts.
pub fn is_transient(message: &str) -> bool {
    let m = message.to_lowercase();
    [
        "database is locked",
        "database table is locked",
        "database is busy",
        "could not connect",
        "connection refused",
        "connection reset",
        "server closed the connection",
        "terminating connection",
        "no connection to the server",
        "deadlock detected",
        "could not serialize",
        "canceling statement due to statement timeout",
        "too many clients",
        "the database system is starting up",
        "the database system is shutting down",
        "locked by another migration",
        "timed out",
    ]
    .iter()
    .any(|p| m.contains(p))
}

fn error(message: String, version: Option<String>) -> TaskError {
    TaskError {
        transient: is_transient(&message),
        message,
        version,
    }
}

/// The advisory-lock key of a tenant: the first 8 bytes of its uuid.
pub fn lock_key(tenant_id: &str) -> i64 {
    let hex: String = tenant_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    u64::from_str_radix(&hex, 16).map(|v| v as i64).unwrap_or(0)
}

/// Connects and runs. Connection failures are transient.
pub fn run(location: &TenantDbLocation, opts: &RunOptions) -> Outcome {
    let mut conn = match location.connect() {
        Ok(c) => c,
        Err(e) => return Outcome::failed_before_start(format!("cannot connect: {e}"), true),
    };
    run_on(&mut conn, opts)
}

/// Runs on an open connection; `reached` is `None` when the start version
/// could not be read (nothing was changed then).
pub fn run_on(conn: &mut TenantConnection, opts: &RunOptions) -> Outcome {
    match conn {
        TenantConnection::Sqlite(c) => {
            let setup = format!(
                "PRAGMA busy_timeout = {}; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;",
                opts.lock_wait.as_millis()
            );
            if let Err(e) = c.batch_execute(&setup) {
                return failed_before_start(e.to_string());
            }
            let mut state = RunState::default();
            let result = c.exclusive_transaction(|c| {
                state.body(c, &TENANT_SQLITE, opts, |c, v| {
                    probes::run(ProbeConn::Sqlite(c), v)
                })
            });
            state.finish(result)
        }
        TenantConnection::Postgres(c) => {
            let mut state = RunState::default();
            let result = c.transaction(|c| {
                #[derive(QueryableByName)]
                struct Locked {
                    #[diesel(sql_type = Bool)]
                    locked: bool,
                }
                let got: Locked = diesel::sql_query(format!(
                    "SELECT pg_try_advisory_xact_lock({}) AS locked",
                    opts.lock_key
                ))
                .get_result(c)?;
                if !got.locked {
                    state.error = Some(error(
                        "the tenant is locked by another migration".into(),
                        None,
                    ));
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                c.batch_execute(&format!(
                    "SET LOCAL statement_timeout = {}",
                    opts.timeout.as_millis().max(1)
                ))?;
                state.body(c, &TENANT_POSTGRES, opts, |c, v| {
                    probes::run(ProbeConn::Postgres(c), v)
                })
            });
            state.finish(result)
        }
    }
}

fn failed_before_start(message: String) -> Outcome {
    let transient = is_transient(&message);
    Outcome::failed_before_start(message, transient)
}

#[derive(Default)]
struct RunState {
    start: Option<String>,
    /// Whether the start version was read (else `reached` is unknown).
    known: bool,
    reached: Option<String>,
    applied: Vec<Step>,
    error: Option<TaskError>,
}

impl RunState {
    /// Inside the outer transaction. `Ok` commits what was applied; `Err`
    /// rolls everything back.
    fn body<C, DB>(
        &mut self,
        c: &mut C,
        source: &diesel_migrations::EmbeddedMigrations,
        opts: &RunOptions,
        probe: impl FnOnce(&mut C, Option<&str>) -> Result<Vec<&'static str>, probes::ProbeError>,
    ) -> Result<(), diesel::result::Error>
    where
        DB: diesel::backend::Backend,
        C: diesel_migrations::MigrationHarness<DB>,
        diesel_migrations::EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
    {
        let applied = match runner::applied_versions(c) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(error(e.to_string(), None));
                return Err(diesel::result::Error::RollbackTransaction);
            }
        };
        let mut applied = applied;
        applied.sort();
        self.start = applied.last().cloned();
        self.reached = self.start.clone();
        self.known = true;
        let (reached, steps) = (&mut self.reached, &mut self.applied);
        let result = runner::migrate(c, source, opts.target.as_deref(), |step| {
            *reached = match step.direction {
                StepDirection::Up => Some(step.version.clone()),
                StepDirection::Down => catalogue::previous(&step.version).map(str::to_string),
            };
            steps.push(step.clone());
        });
        match result {
            Ok(_) => {}
            Err(MigrateError::Step {
                version,
                direction,
                message,
            }) => {
                let what = if direction == StepDirection::Up {
                    "migration"
                } else {
                    "rollback of migration"
                };
                self.error = Some(error(
                    format!("{what} {version} failed: {message}"),
                    Some(version),
                ));
                // Keep the steps before the failed one.
                return Ok(());
            }
            Err(e) => {
                self.error = Some(error(e.to_string(), None));
                return Ok(());
            }
        }
        if opts.probes {
            if let Err(e) = probe(c, self.reached.as_deref()) {
                self.error = Some(TaskError {
                    message: format!("verification failed, nothing kept: {e}"),
                    version: self.reached.clone(),
                    transient: false,
                });
                return Err(diesel::result::Error::RollbackTransaction);
            }
        }
        Ok(())
    }

    fn finish(mut self, result: Result<(), diesel::result::Error>) -> Outcome {
        match result {
            Ok(()) => {}
            Err(e) => {
                // Rolled back: the tenant is where it started.
                if self.error.is_none() {
                    self.error = Some(error(e.to_string(), None));
                }
                self.applied.clear();
                self.reached = self.start.clone();
            }
        }
        Outcome {
            reached: self.reached,
            reached_known: self.known,
            applied: self.applied,
            error: self.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        assert!(is_transient("database is locked"));
        assert!(is_transient(
            "could not connect to server: Connection refused"
        ));
        assert!(is_transient(
            "ERROR: canceling statement due to statement timeout"
        ));
        assert!(!is_transient(
            "UNIQUE constraint failed: sales.shop_id, sales.invoice_number"
        ));
        assert!(!is_transient(
            "schema drift: version 1 is applied but unknown"
        ));
    }

    #[test]
    fn lock_keys_come_from_the_id() {
        assert_eq!(lock_key("00000000-0000-0001-ffff-ffffffffffff"), 1);
        assert_ne!(
            lock_key("0b9e7a4e-2f55-4c39-9a0e-1f2d3c4b5a69"),
            lock_key("1b9e7a4e-2f55-4c39-9a0e-1f2d3c4b5a69")
        );
    }
}
