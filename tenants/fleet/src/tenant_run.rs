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

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text, Timestamp};
use tenantplane_control_db::error::{query_in, query_is_transient, report};
/// Which probes a run proves (re-exported for the callers that build `RunOptions`).
pub use tenantplane_migrations::probes::ProbeSet;
use tenantplane_migrations::probes::{self, Probe, ProbeConn};
use tenantplane_migrations::runner::BoxError;
use tenantplane_migrations::{
    catalogue, runner, MigrateError, Step, StepDirection, TENANT_POSTGRES, TENANT_SQLITE,
};

use crate::tenant_db::{TenantConnection, TenantDbError, TenantDbLocation};

/// What running a task came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The tenant schema's version afterwards (durably committed), when known.
    pub reached: Option<String>,
    /// False when the run failed before reading the tenant's versions: then
    /// `reached` says nothing and the control DB keeps what it had.
    pub reached_known: bool,
    /// The steps that were committed.
    pub applied: Vec<Step>,
    /// Steps the tenant had already taken that the control DB never
    /// recorded: an earlier attempt committed them and its worker died
    /// before recording them. Read from the tenant's own history.
    pub recovered: Vec<RecoveredStep>,
    pub error: Option<TaskError>,
}

/// A step found applied (or reverted) in the tenant database but missing
/// from the control DB's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredStep {
    pub version: String,
    pub direction: StepDirection,
    /// When it ran, from the tenant's `__diesel_schema_migrations.run_on`
    /// (a reverted step leaves no trace, so `None` for those).
    pub ran_at: Option<NaiveDateTime>,
}

/// The steps between what the control DB recorded and where the tenant
/// really is: up steps with their `run_on` from `history` when the tenant is
/// ahead, down steps when it is behind.
pub fn recovered_steps(
    recorded: Option<&str>,
    found: Option<&str>,
    history: &[(String, NaiveDateTime)],
) -> Vec<RecoveredStep> {
    if found > recorded {
        let mut steps: Vec<RecoveredStep> = history
            .iter()
            .filter(|(v, _)| Some(v.as_str()) > recorded && Some(v.as_str()) <= found)
            .map(|(v, at)| RecoveredStep {
                version: v.clone(),
                direction: StepDirection::Up,
                ran_at: Some(*at),
            })
            .collect();
        steps.sort_by(|a, b| a.version.cmp(&b.version));
        steps
    } else {
        catalogue::versions()
            .iter()
            .rev()
            .filter(|m| Some(m.version.as_str()) > found && Some(m.version.as_str()) <= recorded)
            .map(|m| RecoveredStep {
                version: m.version.to_string(),
                direction: StepDirection::Down,
                ran_at: None,
            })
            .collect()
    }
}

impl Outcome {
    /// Nothing was changed: the run failed before it read the tenant's
    /// versions.
    pub fn failed_before_start(message: String, transient: bool) -> Outcome {
        Outcome {
            reached: None,
            reached_known: false,
            applied: Vec::new(),
            recovered: Vec::new(),
            error: Some(TaskError {
                message,
                version: None,
                transient,
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskError {
    pub message: String,
    /// The migration version that failed, when one did.
    pub version: Option<String>,
    /// Worth retrying (locked, busy, connection trouble, timeouts).
    pub transient: bool,
}

/// How one run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `None` = empty schema.
    pub target: Option<String>,
    /// Which probes run after migrating (`ProbeSet::Changed`: what the run
    /// changed; `Full`: every probe of the version reached).
    pub probes: ProbeSet,
    /// PostgreSQL statement timeout.
    pub timeout: Duration,
    /// SQLite: how long to wait for the tenant's lock before a transient
    /// failure (the task is retried later instead of blocking a worker).
    pub lock_wait: Duration,
    /// The tenant's advisory-lock key (PostgreSQL).
    pub lock_key: i64,
    /// The version the control DB has recorded for the tenant. When the run
    /// finds the tenant elsewhere, it reads the tenant's history to report
    /// the unrecorded steps (`Outcome::recovered`).
    pub recorded: Option<String>,
}

/// Why a tenant run failed. Each variant keeps the driver's error as its
/// source and says, by kind, whether a retry may cure it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect")]
    Connect(#[source] TenantDbError),
    #[error("setting up the connection failed")]
    Setup(#[source] diesel::result::Error),
    /// Another run holds the tenant's lock: PostgreSQL's try-lock said no.
    #[error("the tenant is locked by another migration")]
    Locked,
    /// SQLite could not begin the exclusive transaction within the lock wait
    /// (the only way `BEGIN EXCLUSIVE` fails on a healthy file is busy).
    #[error("the tenant database stayed locked for the whole lock wait")]
    Busy(#[source] diesel::result::Error),
    #[error("reading the applied versions failed")]
    Versions(#[source] MigrateError),
    /// Drift or an unknown target: nothing a retry changes.
    #[error(transparent)]
    Plan(MigrateError),
    #[error("{what} {version} failed")]
    Step {
        what: &'static str,
        version: String,
        #[source]
        source: BoxError,
    },
    /// A step failed and the connection no longer answers: the server went
    /// away or the session was terminated (told by the connection's own
    /// error kind on a follow-up query, since diesel_migrations hides the
    /// step's error behind a private type).
    #[error("{what} {version} failed: the connection was lost")]
    Lost {
        what: &'static str,
        version: String,
        #[source]
        source: diesel::result::Error,
    },
    /// A step ran for the whole statement timeout (PostgreSQL): told by the
    /// clock, since diesel does not expose SQLSTATE 57014.
    #[error("{what} {version} hit the statement timeout")]
    Timeout {
        what: &'static str,
        version: String,
        #[source]
        source: BoxError,
    },
    #[error("verification failed, nothing kept")]
    Probe(#[source] probes::ProbeError),
    #[error("the tenant's transaction failed")]
    Transaction(#[source] diesel::result::Error),
}

impl RunError {
    /// Whether a retry may cure this, by kind: lock waits, timeouts, lost
    /// or refused connections and serialization failures are transient;
    /// failing SQL, drift and failed probes are not.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Connect(e) => e.is_transient(),
            RunError::Locked
            | RunError::Busy(_)
            | RunError::Timeout { .. }
            | RunError::Lost { .. } => true,
            RunError::Setup(e) | RunError::Transaction(e) => query_is_transient(e),
            RunError::Versions(MigrateError::Read(e)) => {
                query_in(e.as_ref()).is_some_and(query_is_transient)
            }
            RunError::Versions(_)
            | RunError::Plan(_)
            | RunError::Step { .. }
            | RunError::Probe(_) => false,
        }
    }

    fn version(&self) -> Option<String> {
        match self {
            RunError::Step { version, .. }
            | RunError::Timeout { version, .. }
            | RunError::Lost { version, .. } => Some(version.clone()),
            _ => None,
        }
    }

    /// The record kept in the control DB: the whole chain as text, the
    /// failed version, and the classification.
    pub fn to_task_error(&self) -> TaskError {
        TaskError {
            message: report(self),
            version: self.version(),
            transient: self.is_transient(),
        }
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

/// Takes the tenant's lock for the rest of the session (PostgreSQL: the
/// same advisory key the run takes per transaction; the pool's reset or
/// closing the connection releases it): `false` when another session holds
/// it. SQLite tenants are locked by their file's write lock inside each run:
/// always `true` here.
pub fn try_lock_session(
    conn: &mut TenantConnection,
    tenant_id: &str,
) -> Result<bool, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    match conn {
        TenantConnection::Sqlite(_) => Ok(true),
        TenantConnection::Postgres(c) => {
            let got: Locked = diesel::sql_query(format!(
                "SELECT pg_try_advisory_lock({}) AS locked",
                lock_key(tenant_id)
            ))
            .get_result(c)?;
            Ok(got.locked)
        }
    }
}

/// Connects (a PostgreSQL tenant schema on a connection reused across the
/// tenants of its server) and runs.
pub fn run(location: &TenantDbLocation, opts: &RunOptions) -> Outcome {
    let mut conn = match location.connect_pooled() {
        Ok(c) => c,
        Err(e) => return failed_before_start(RunError::Connect(e)),
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
                return failed_before_start(RunError::Setup(e));
            }
            let mut state = RunState::new(opts, true);
            let result = c.exclusive_transaction(|c| {
                state.entered = true;
                state.body(c, &TENANT_SQLITE, opts, history, |c, chosen| {
                    probes::run_probes(ProbeConn::Sqlite(c), chosen)
                })
            });
            state.finish(result)
        }
        TenantConnection::Postgres(c) => {
            let mut state = RunState::new(opts, false);
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
                state.entered = true;
                if !got.locked {
                    state.error = Some(RunError::Locked);
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                c.batch_execute(&format!(
                    "SET LOCAL statement_timeout = {}",
                    opts.timeout.as_millis().max(1)
                ))?;
                state.body(c, &TENANT_POSTGRES, opts, history, |c, chosen| {
                    probes::run_probes(ProbeConn::Postgres(c), chosen)
                })
            });
            state.finish(result)
        }
    }
}

#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Timestamp)]
    run_on: NaiveDateTime,
}

/// The tenant's applied versions with their `run_on`.
fn history<C>(c: &mut C) -> Result<Vec<(String, NaiveDateTime)>, diesel::result::Error>
where
    for<'a> diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'a, C, Applied>,
{
    let rows: Vec<Applied> =
        diesel::sql_query("SELECT version, run_on FROM __diesel_schema_migrations").load(c)?;
    Ok(rows.into_iter().map(|r| (r.version, r.run_on)).collect())
}

fn failed_before_start(e: RunError) -> Outcome {
    let TaskError {
        message, transient, ..
    } = e.to_task_error();
    Outcome::failed_before_start(message, transient)
}

struct RunState {
    /// Whether the transaction began: on SQLite `BEGIN EXCLUSIVE` fails only
    /// when the lock wait ran out.
    entered: bool,
    sqlite: bool,
    start: Option<String>,
    /// Whether the start version was read (else `reached` is unknown).
    known: bool,
    reached: Option<String>,
    applied: Vec<Step>,
    recovered: Vec<RecoveredStep>,
    error: Option<RunError>,
    /// When the step now running started (for telling timeouts apart).
    step_started: Instant,
    timeout: Duration,
}

impl RunState {
    fn new(opts: &RunOptions, sqlite: bool) -> Self {
        RunState {
            entered: false,
            sqlite,
            start: None,
            known: false,
            reached: None,
            applied: Vec::new(),
            recovered: Vec::new(),
            error: None,
            step_started: Instant::now(),
            timeout: opts.timeout,
        }
    }

    /// Inside the outer transaction. `Ok` commits what was applied; `Err`
    /// rolls everything back.
    fn body<C, DB>(
        &mut self,
        c: &mut C,
        source: &diesel_migrations::EmbeddedMigrations,
        opts: &RunOptions,
        history: impl FnOnce(&mut C) -> Result<Vec<(String, NaiveDateTime)>, diesel::result::Error>,
        probe: impl FnOnce(&mut C, &[&'static Probe]) -> Result<Vec<&'static str>, probes::ProbeError>,
    ) -> Result<(), diesel::result::Error>
    where
        DB: diesel::backend::Backend,
        C: diesel_migrations::MigrationHarness<DB> + SimpleConnection,
        diesel_migrations::EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
    {
        let mut applied = match runner::applied_versions(c) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(RunError::Versions(e));
                return Err(diesel::result::Error::RollbackTransaction);
            }
        };
        applied.sort();
        self.start = applied.last().cloned();
        self.reached = self.start.clone();
        self.known = true;
        // Only when the tenant is not where the control DB thinks: one more
        // query in the rare run after a crash, none otherwise.
        if self.start != opts.recorded {
            match history(c) {
                Ok(h) => {
                    self.recovered =
                        recovered_steps(opts.recorded.as_deref(), self.start.as_deref(), &h)
                }
                Err(e) => {
                    self.error = Some(RunError::Versions(MigrateError::Read(Box::new(e))));
                    return Err(diesel::result::Error::RollbackTransaction);
                }
            }
        }
        self.step_started = Instant::now();
        let (reached, steps, step_started) =
            (&mut self.reached, &mut self.applied, &mut self.step_started);
        let result = runner::migrate(c, source, opts.target.as_deref(), |step| {
            *reached = match step.direction {
                StepDirection::Up => Some(step.version.clone()),
                StepDirection::Down => catalogue::previous(&step.version).map(str::to_string),
            };
            steps.push(step.clone());
            *step_started = Instant::now();
        });
        match result {
            Ok(_) => {}
            Err(MigrateError::Step {
                version,
                direction,
                source,
            }) => {
                let what = if direction == StepDirection::Up {
                    "migration"
                } else {
                    "rollback of migration"
                };
                // A PostgreSQL step that ran for the whole statement timeout
                // was cancelled by it (SQLite has no statement timeout). A
                // connection that no longer answers was lost mid-step.
                let timed_out = !self.sqlite && self.step_started.elapsed() >= self.timeout;
                let alive = c.batch_execute("SELECT 1");
                self.error = Some(match alive {
                    Err(lost) if query_is_transient(&lost) => RunError::Lost {
                        what,
                        version,
                        source: lost,
                    },
                    _ if timed_out => RunError::Timeout {
                        what,
                        version,
                        source,
                    },
                    _ => RunError::Step {
                        what,
                        version,
                        source,
                    },
                });
                // Keep the steps before the failed one.
                return Ok(());
            }
            Err(e) => {
                self.error = Some(RunError::Plan(e));
                return Ok(());
            }
        }
        let chosen = probes::select(opts.probes, self.start.as_deref(), self.reached.as_deref());
        if let Err(e) = probe(c, &chosen) {
            self.error = Some(RunError::Probe(e));
            return Err(diesel::result::Error::RollbackTransaction);
        }
        Ok(())
    }

    fn finish(mut self, result: Result<(), diesel::result::Error>) -> Outcome {
        if let Err(e) = result {
            // Rolled back: the tenant is where it started.
            if self.error.is_none() {
                self.error = Some(if self.sqlite && !self.entered {
                    RunError::Busy(e)
                } else {
                    RunError::Transaction(e)
                });
            }
            self.applied.clear();
            self.reached = self.start.clone();
        }
        let error = self.error.as_ref().map(|e| {
            let mut te = e.to_task_error();
            // A probe failure names the version it verified.
            if matches!(e, RunError::Probe(_)) {
                te.version = self.reached.clone();
            }
            te
        });
        Outcome {
            reached: self.reached,
            reached_known: self.known,
            applied: self.applied,
            recovered: self.recovered,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_kind() {
        assert!(RunError::Locked.is_transient());
        assert!(RunError::Connect(TenantDbError::new(
            "cannot connect to PostgreSQL",
            diesel::ConnectionError::BadConnection("connection refused".into()),
        ))
        .is_transient());
        // A missing SQLite file does not appear by retrying.
        assert!(!RunError::Connect(TenantDbError::new(
            "cannot open the tenant database",
            tenantplane_control_db::DbError::State("t_1.db does not exist".into()),
        ))
        .is_transient());
        assert!(!RunError::Plan(MigrateError::Drift(
            "version 1 is applied but unknown".into()
        ))
        .is_transient());
        let failing_sql: BoxError = Box::new(diesel::result::Error::NotFound);
        let step = RunError::Step {
            what: "migration",
            version: "20261125010000".into(),
            source: failing_sql,
        };
        assert!(!step.is_transient());
        let te = step.to_task_error();
        assert_eq!(te.version.as_deref(), Some("20261125010000"));
        assert!(
            te.message.starts_with("migration 20261125010000 failed: "),
            "{}",
            te.message
        );
    }

    #[test]
    fn recovered_steps_are_those_between_the_record_and_the_tenant() {
        let vs: Vec<&str> = catalogue::versions()
            .iter()
            .map(|m| m.version.as_str())
            .collect();
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0)
            .unwrap()
            .naive_utc();
        let history: Vec<(String, NaiveDateTime)> =
            vs[..5].iter().map(|v| (v.to_string(), at)).collect();
        let names = |r: &[RecoveredStep]| r.iter().map(|s| s.version.clone()).collect::<Vec<_>>();

        // Recorded at the 2nd, found at the 5th: the 3rd to the 5th ran unrecorded.
        let up = recovered_steps(Some(vs[1]), Some(vs[4]), &history);
        assert_eq!(names(&up), vs[2..5]);
        assert!(up
            .iter()
            .all(|s| s.direction == StepDirection::Up && s.ran_at == Some(at)));
        // Nothing recorded yet.
        assert_eq!(
            names(&recovered_steps(None, Some(vs[1]), &history)),
            vs[..2]
        );
        // Behind the record: the steps reverted, newest first, no time known.
        let down = recovered_steps(Some(vs[4]), Some(vs[2]), &history[..3]);
        assert_eq!(names(&down), [vs[4], vs[3]]);
        assert!(down
            .iter()
            .all(|s| s.direction == StepDirection::Down && s.ran_at.is_none()));
        // Where the record says: nothing.
        assert!(recovered_steps(Some(vs[2]), Some(vs[2]), &history).is_empty());
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
