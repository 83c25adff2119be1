//! The worker's probe endpoints (`tenantplane worker --health-addr`):
//! liveness answers from the process alone, readiness follows the control
//! database — unreachable or missing a control migration is 503, and back
//! to 200 once it is whole again — while liveness stays 200 throughout.

use std::process::Command;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde_json::Value;

use crate::common::{call_as, error_code, wait_for, App, AppOptions, TestPg};

fn probe(base: &str, path: &str) -> (u16, Value) {
    call_as(base, None, "GET", path, None)
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

#[test]
fn worker_liveness_and_readiness_are_distinct() {
    let Some(control) = TestPg::new() else { return };
    let worker = App::start_with(AppOptions {
        command: vec![
            "worker".into(),
            "--health-addr".into(),
            "127.0.0.1:0".into(),
        ],
        control_db: Some(control.url()),
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "3".into())],
        ..AppOptions::default()
    });
    let base = worker
        .stdout_lines
        .iter()
        .find_map(|l| l.strip_prefix("tenantplane worker health on "))
        .expect("the health address is printed")
        .to_string();

    let (s, live) = probe(&base, "/healthz");
    assert_eq!(s, 200, "{live}");
    assert_eq!(live["status"], "ok");
    assert_eq!(live["executors"], 3);
    assert_eq!(live["expected_executors"], 3);
    let (s, ready) = probe(&base, "/readyz");
    assert_eq!((s, &ready["status"]), (200, &Value::from("ready")));
    let (s, v) = probe(&base, "/metrics");
    assert_eq!(s, 404);
    assert_eq!(error_code(&v), "not_found");
    let (s, v) = call_as(&base, None, "POST", "/healthz", None);
    assert_eq!(s, 405);
    assert_eq!(error_code(&v), "method_not_allowed");

    // A control migration missing (an older schema than this binary's):
    // not ready, still live.
    let mut admin = control.connect();
    let newest: Version = diesel::sql_query(
        "SELECT version FROM __diesel_schema_migrations ORDER BY version DESC LIMIT 1",
    )
    .get_result(&mut admin)
    .expect("newest control migration");
    admin
        .batch_execute(&format!(
            "DELETE FROM __diesel_schema_migrations WHERE version = '{}'",
            newest.version
        ))
        .expect("forget it");
    let (s, v) = probe(&base, "/readyz");
    assert_eq!(s, 503, "{v}");
    assert_eq!(error_code(&v), "not_ready");
    assert!(
        !v.to_string().contains("__diesel"),
        "no database text in the body: {v}"
    );
    assert_eq!(probe(&base, "/healthz").0, 200);
    admin
        .batch_execute(&format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{}')",
            newest.version
        ))
        .expect("restore it");
    assert_eq!(probe(&base, "/readyz").0, 200);

    // The control database refusing connections (the worker's sessions
    // ended): not ready, still live; ready again once it is back.
    drop(admin);
    let mut server = control.connect_admin();
    server
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false",
            control.name
        ))
        .expect("close the control DB");
    // `pg_terminate_backend` only signals a session, and a session the
    // worker's pool was opening while the database closed can outlive one
    // round of it: end the sessions (waiting up to 5 s for each to exit)
    // until a probe finds the database gone.
    let terminate = format!(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{}'",
        control.name
    );
    let v = wait_for("readiness to fail", Duration::from_secs(60), || {
        server.batch_execute(&terminate).expect("end the sessions");
        let (s, v) = probe(&base, "/readyz");
        (s == 503).then_some(v)
    });
    assert_eq!(error_code(&v), "not_ready", "{v}");
    let (s, live) = probe(&base, "/healthz");
    assert_eq!(s, 200, "a database outage must not fail liveness: {live}");
    server
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
            control.name
        ))
        .expect("reopen the control DB");
    wait_for("ready again", Duration::from_secs(60), || {
        (probe(&base, "/readyz").0 == 200).then_some(())
    });
    drop(worker);
}

#[test]
fn a_bad_health_address_stops_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(crate::common::bin())
        .args(["worker", "--health-addr", "8081"])
        .env_clear()
        .env("TENANTPLANE_DATA_DIR", dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--health-addr") && err.contains("host:port"),
        "{err}"
    );
    // Nothing was opened: the control database is not even created.
    assert!(!dir.path().join("control.db").exists());
}
