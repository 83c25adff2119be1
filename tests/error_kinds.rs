//! Retry decisions on a real PostgreSQL: transient or permanent is decided
//! by the error's kind and where it happened, never by the words in its
//! message (PostgreSQL localises them; an application can raise any text).

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
use tenantplane_fleet::tenant_run::{self, RunOptions};
use tenantplane_migrations::catalogue;

use crate::common::TestPg;

fn head() -> String {
    catalogue::head()
        .expect("the catalogue has versions")
        .to_string()
}

fn phase0() -> String {
    catalogue::phase_version(0)
        .expect("phase 0 exists")
        .to_string()
}

fn opts(target: &str, timeout: Duration) -> RunOptions {
    RunOptions {
        target: Some(target.to_string()),
        probes: tenantplane_fleet::tenant_run::ProbeSet::Full,
        timeout,
        lock_wait: Duration::from_millis(200),
        lock_key: tenant_run::lock_key("0b9e7a4e-2f55-4c39-9a0e-1f2d3c4b5a69"),
        recorded: None,
    }
}

/// A tenant schema on `pg` at `version`.
fn tenant_at(pg: &TestPg, schema: &str, version: &str) -> TenantDbLocation {
    let location = TenantDbLocation::PgSchema {
        server_url: pg.url(),
        schema: schema.to_string(),
    };
    location.create().expect("create schema");
    location
        .connect()
        .expect("connect")
        .migrate_to(Some(version))
        .expect("migrate");
    location
}

#[test]
fn an_error_saying_locked_is_permanent_when_its_kind_is() {
    let Some(pg) = TestPg::new() else { return };
    let location = tenant_at(&pg, "t_words", &phase0());
    // The application's own trigger refuses the next migration's DDL with a
    // message full of the words the old text matcher retried on.
    pg.connect()
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS event_trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'database is locked; connection refused; timed out'; END $$; \
             CREATE EVENT TRIGGER refuse ON ddl_command_start WHEN TAG IN ('ALTER TABLE') \
             EXECUTE FUNCTION refuse();",
        )
        .expect("event trigger");
    let outcome = tenant_run::run(&location, &opts(&head(), Duration::from_secs(30)));
    let error = outcome.error.expect("the migration fails");
    assert!(!error.transient, "{error:?}");
    assert!(error.message.contains("database is locked"), "{error:?}");
    assert_eq!(outcome.reached.as_deref(), Some(phase0().as_str()));
}

#[test]
fn a_lost_connection_is_transient_whatever_it_says() {
    let Some(pg) = TestPg::new() else { return };
    let location = tenant_at(&pg, "t_lost", &phase0());
    let mut conn = location.connect().expect("connect");
    let TenantConnection::Postgres(c) = &mut conn else {
        panic!("a PostgreSQL schema gives a PostgreSQL connection")
    };
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(c)
        .expect("pid")
        .pid;
    pg.connect_admin()
        .batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .expect("terminate");
    let outcome = tenant_run::run_on(&mut conn, &opts(&head(), Duration::from_secs(30)));
    let error = outcome.error.expect("the run fails");
    assert!(error.transient, "{error:?}");
    assert!(!error.message.contains("locked"), "{error:?}");
    assert!(outcome.applied.is_empty());
}

#[test]
fn a_connection_lost_mid_migration_is_transient_and_keeps_nothing() {
    let Some(pg) = TestPg::new() else { return };
    let location = tenant_at(&pg, "t_midway", &phase0());
    // The app holds `sales`, so the run stops inside the first migration
    // that alters it; then the server ends the run's session.
    let mut app = pg.connect();
    app.batch_execute("BEGIN; LOCK TABLE t_midway.sales IN ACCESS EXCLUSIVE MODE;")
        .expect("lock");
    let run = {
        let location = location.clone();
        std::thread::spawn(move || {
            tenant_run::run(&location, &opts(&head(), Duration::from_secs(60)))
        })
    };
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        pg.name
    );
    let mut admin = pg.connect_admin();
    let waiting = crate::common::wait_for(
        "the run to wait on the lock",
        Duration::from_secs(30),
        || {
            diesel::sql_query(&sql)
                .load::<Pid>(&mut admin)
                .ok()
                .and_then(|rows| rows.into_iter().next())
        },
    );
    admin
        .batch_execute(&format!("SELECT pg_terminate_backend({})", waiting.pid))
        .expect("terminate");
    let outcome = run.join().expect("the run thread");
    app.batch_execute("ROLLBACK").expect("unlock");
    let error = outcome.error.expect("the run fails");
    assert!(error.transient, "{error:?}");
    assert!(error.version.is_some(), "{error:?}");
    // Nothing of the run was kept: the tenant is where it started.
    assert!(outcome.applied.is_empty(), "{:?}", outcome.applied);
    assert_eq!(outcome.reached, Some(phase0()));
    let applied = location
        .connect()
        .expect("reconnect")
        .applied_versions()
        .expect("versions");
    assert_eq!(applied.last(), Some(&phase0()));
}

#[test]
fn a_step_cancelled_by_the_statement_timeout_is_transient() {
    let Some(pg) = TestPg::new() else { return };
    let location = tenant_at(&pg, "t_slow", &phase0());
    // The point-of-sale app holds a lock on `sales`; the next migration
    // alters `sales` and waits until the statement timeout cancels it.
    let mut app = pg.connect();
    app.batch_execute("BEGIN; LOCK TABLE t_slow.sales IN ACCESS EXCLUSIVE MODE;")
        .expect("lock");
    let outcome = tenant_run::run(&location, &opts(&head(), Duration::from_millis(300)));
    app.batch_execute("ROLLBACK").expect("unlock");
    let error = outcome.error.expect("the run times out");
    assert!(error.transient, "{error:?}");
    assert!(error.message.contains("statement timeout"), "{error:?}");
    assert!(error.version.is_some(), "the timed-out migration is named");
    // Once the lock is gone, the retry goes through.
    let retry = tenant_run::run(&location, &opts(&head(), Duration::from_secs(30)));
    assert!(retry.error.is_none(), "{:?}", retry.error);
    assert_eq!(retry.reached, Some(head()));
}

#[test]
fn another_runs_lock_is_transient() {
    let Some(pg) = TestPg::new() else { return };
    let location = tenant_at(&pg, "t_busy", &phase0());
    let o = opts(&head(), Duration::from_secs(30));
    let mut other = pg.connect();
    other
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({});",
            o.lock_key
        ))
        .expect("lock");
    let outcome = tenant_run::run(&location, &o);
    other.batch_execute("ROLLBACK").expect("unlock");
    let error = outcome.error.expect("locked");
    assert!(error.transient, "{error:?}");
    assert!(outcome.applied.is_empty());
}
