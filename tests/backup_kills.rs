//! SIGKILL of the process taking a backup or doing a restore: after a
//! restart nothing is marked completed that is not, the tenant is intact and
//! served from one place, the control DB agrees with the tenant's database,
//! and once the sweep and the restore guard ran no scratch file, staging
//! schema or orphaned artifact is left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::{json, Value};
use tenantplane_migrations::catalogue;

use crate::common::{wait_for, App, AppOptions, TestPg};

const LONG: Duration = Duration::from_secs(180);

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    reason: String,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

fn control(data: &Path) -> SqliteConnection {
    let mut c =
        SqliteConnection::establish(&data.join("control.db").to_string_lossy()).expect("control");
    c.batch_execute("PRAGMA busy_timeout = 10000")
        .expect("pragma");
    c
}

fn backups(data: &Path, tenant_id: &str) -> Vec<Row> {
    diesel::sql_query(
        "SELECT id, state, reason FROM backups WHERE tenant_id = ? ORDER BY created_at",
    )
    .bind::<Text, _>(tenant_id)
    .load(&mut control(data))
    .expect("backups")
}

fn control_version(data: &Path, tenant_id: &str) -> Option<String> {
    diesel::sql_query("SELECT schema_version AS v FROM tenants WHERE id = ?")
        .bind::<Text, _>(tenant_id)
        .get_result::<Version>(&mut control(data))
        .expect("tenant")
        .v
}

fn store_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Rows enough that taking, or loading, the tenant takes a second or more:
/// hex of random bytes does not compress.
const BALLAST: &str = "CREATE TABLE ballast (id INTEGER PRIMARY KEY, pad TEXT NOT NULL);
    INSERT INTO ballast (id, pad)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
    SELECT i, hex(randomblob(64)) FROM n;";

/// On PostgreSQL into a table of the tenant schema: a backup holds the
/// rows of the schema's own tables (a table added by hand would make it
/// unrestorable, as verification reports).
const PG_BALLAST: &str = "INSERT INTO audit_log (action, details, created_at)
    SELECT 'ballast', md5(random()::text) || md5(random()::text) || md5(random()::text), now()
    FROM generate_series(1, 300000) AS i;";

use crate::common::create_tenant;

fn restart(data: &Path, control_db: Option<String>) -> App {
    App::start_with(AppOptions {
        data_dir: Some(data.to_path_buf()),
        control_db,
        ..AppOptions::default()
    })
}

fn sweep(data: &Path) -> tenantplane_backup::SweepReport {
    let db = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        data.join("control.db").display()
    ))
    .expect("control db");
    let store = tenantplane_backup::FileStore::new(data.join("backups")).expect("store");
    tenantplane_backup::sweep(&db, &store, tenantplane_backup::SweepAges::NOW).expect("sweep")
}

/// Sends a request that the kill will cut off; its answer does not matter.
fn fire(url: String, path: String, body: Value) {
    std::thread::spawn(move || {
        let _ = ureq::post(&format!("{url}{path}"))
            .set("Authorization", &format!("Bearer {}", crate::common::TOKEN))
            .send_json(body);
    });
}

#[test]
fn sigkill_during_a_backup_leaves_nothing_completed_and_nothing_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_path_buf();
    let mut app = restart(&data, None);
    let tid = create_tenant(&app, json!({"slug": "heavy", "name": "Heavy"}));
    let file = data
        .join("tenants")
        .join(format!("t_{}.db", tid.replace('-', "")));
    let mut shop = SqliteConnection::establish(&file.to_string_lossy()).expect("tenant");
    shop.batch_execute(BALLAST).expect("ballast");
    let count = |c: &mut SqliteConnection| {
        diesel::sql_query("SELECT count(*) AS n FROM ballast")
            .get_result::<Count>(c)
            .expect("count")
            .n
    };
    assert_eq!(count(&mut shop), 300_000);

    fire(
        app.url.clone(),
        format!("/v1/tenants/{tid}/backups"),
        json!({}),
    );
    wait_for("the backup to run", LONG, || {
        backups(&data, &tid)
            .iter()
            .any(|b| b.state == "running")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    app.child.kill().expect("SIGKILL");
    app.child.wait().expect("reap");
    let rows = backups(&data, &tid);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].state, "running",
        "the kill must land while the backup runs (make the ballast bigger if not)"
    );

    // After the restart: not completed; the tenant intact.
    let app = restart(&data, None);
    assert_eq!(backups(&data, &tid)[0].state, "running");
    let mut shop = SqliteConnection::establish(&file.to_string_lossy()).expect("tenant");
    assert_eq!(count(&mut shop), 300_000);
    let check: Vec<IntegrityRow> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut shop)
        .expect("integrity");
    assert_eq!(
        check
            .iter()
            .map(|r| r.integrity_check.as_str())
            .collect::<Vec<_>>(),
        ["ok"]
    );

    // The sweep: interrupted, and nothing of it left in the store or on disk.
    let report = sweep(&data);
    assert_eq!(report.interrupted, 1, "{report:?}");
    let rows = backups(&data, &tid);
    assert_eq!(rows[0].state, "failed");
    assert!(
        store_files(&data.join("backups")).is_empty(),
        "{:?}",
        store_files(&data.join("backups"))
    );
    let (s, b) = app.call("GET", &format!("/v1/backups/{}", rows[0].id), None);
    assert_eq!(s, 200, "{b}");
    assert!(
        b["error"].as_str().unwrap_or("").starts_with("interrupted"),
        "{b}"
    );

    // And the next backup works.
    let (s, b) = app.call("POST", &format!("/v1/tenants/{tid}/backups"), None);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["state"], "completed");
    assert_eq!(b["row_counts"]["ballast"], 300_000);
}

#[derive(QueryableByName)]
struct IntegrityRow {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

#[test]
fn sigkill_during_a_restore_leaves_the_tenant_in_one_piece() {
    let Some(pg) = TestPg::new() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_path_buf();
    let mut app = restart(&data, None);
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let tid = create_tenant(
        &app,
        json!({"slug": "heavy-pg", "name": "Heavy PG", "server": "pg"}),
    );
    let schema = format!("t_{}", tid.replace('-', ""));
    let tenant = || {
        let mut c = pg.connect();
        c.batch_execute(&format!("SET search_path TO \"{schema}\""))
            .expect("search_path");
        c
    };
    tenant().batch_execute(PG_BALLAST).expect("ballast");
    let count = || {
        diesel::sql_query("SELECT count(*) AS n FROM audit_log")
            .get_result::<Count>(&mut tenant())
            .expect("count")
            .n
    };
    let tenant_version = || {
        diesel::sql_query("SELECT max(version)::text AS v FROM __diesel_schema_migrations")
            .get_result::<Version>(&mut tenant())
            .expect("version")
            .v
    };
    let head = catalogue::head().map(str::to_string);
    assert_eq!(tenant_version(), head);

    // A backup at head, then the tenant moves on: rows go, and it is
    // rolled back to phase 6 (the restore would take it back to head).
    let (s, b) = app.call("POST", &format!("/v1/tenants/{tid}/backups"), None);
    assert_eq!(s, 201, "{b}");
    let backup_id = b["id"].as_str().expect("id").to_string();
    tenant()
        .batch_execute("DELETE FROM audit_log WHERE id > 100000")
        .expect("delete");
    let phase6 = catalogue::phase_version(6).expect("phase 6").to_string();
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "phase:6", "selector": {"tenants": [tid]}})),
    );
    assert_eq!(s, 201, "{r}");
    let rid = r["id"].as_str().expect("id").to_string();
    let done = wait_for("the rollback", LONG, || {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{rid}"), None);
        ["succeeded", "failed", "halted"]
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    });
    let (_, tasks) = app.call("GET", &format!("/v1/rollouts/{rid}/tasks"), None);
    assert_eq!(done["state"], "succeeded", "{done} {tasks}");
    assert_eq!(tenant_version().as_deref(), Some(phase6.as_str()));
    assert_eq!(
        control_version(&data, &tid).as_deref(),
        Some(phase6.as_str())
    );

    // Kill the restore once its safety backup is taken: it is loading the
    // staging schema then.
    fire(
        app.url.clone(),
        format!("/v1/backups/{backup_id}/restore"),
        json!({"mode": "in_place"}),
    );
    wait_for("the safety backup", LONG, || {
        backups(&data, &tid)
            .iter()
            .any(|b| b.reason == "pre_restore" && b.state == "completed")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    app.child.kill().expect("SIGKILL");
    app.child.wait().expect("reap");
    let audit_restores = |app: &App| -> usize {
        let (_, log) = app.call("GET", &format!("/v1/audit?tenant={tid}"), None);
        log.as_array()
            .map(|a| a.iter().filter(|e| e["action"] == "tenant.restore").count())
            .unwrap_or(0)
    };

    // After the restart the guard stands by; make it due now (its delay is
    // the dead process's missing heartbeat) and let the worker run it.
    let app = restart(&data, None);
    assert_eq!(audit_restores(&app), 0, "the restore did not finish");
    let guards = diesel::sql_query(
        "UPDATE jobs SET run_at = '2000-01-01 00:00:00' WHERE kind = 'restore.guard' AND state = 'pending'",
    )
    .execute(&mut control(&data))
    .expect("guard due");
    assert_eq!(guards, 1, "one guard for the killed restore");
    wait_for("the guard to run", LONG, || {
        diesel::sql_query(
            "SELECT count(*) AS n FROM jobs WHERE kind = 'restore.guard' AND state = 'succeeded'",
        )
        .get_result::<Count>(&mut control(&data))
        .ok()
        .filter(|c| c.n == 1)
    });

    // One place, one version, agreed on by the control DB; the rows are
    // those of that version's moment (before the restore or the backup).
    let actual = tenant_version();
    assert_eq!(control_version(&data, &tid), actual);
    let rows = count();
    let completed =
        diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE kind = 'restore.completed'")
            .get_result::<Count>(&mut control(&data))
            .expect("outbox")
            .n;
    // restore.completed exactly when the swap happened (the guard announces
    // the restore its process did not live to record).
    assert_eq!(completed, i64::from(actual == head));
    if actual == head {
        assert_eq!(rows, 300_000, "restored: the backup's rows");
    } else {
        assert_eq!(actual.as_deref(), Some(phase6.as_str()));
        assert_eq!(rows, 100_000, "not restored: the rows as they were");
    }
    let staging = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 'tp\\_restore\\_%'",
    )
    .get_result::<Count>(&mut pg.connect())
    .expect("schemas")
    .n;
    assert_eq!(staging, 0, "no staging schema is left");
    // The safety backup is whole, and the sweep finds no orphan.
    let report = sweep(&data);
    assert_eq!(report.orphans_removed, 0, "{report:?}");
    let safety = backups(&data, &tid)
        .into_iter()
        .find(|b| b.reason == "pre_restore")
        .expect("safety");
    let (s, v) = app.call("POST", &format!("/v1/backups/{}/verify", safety.id), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "verified", "{v}");

    // The restore can be done again, and now it finishes.
    let (s, r) = app.call(
        "POST",
        &format!("/v1/backups/{backup_id}/restore"),
        Some(json!({"mode": "in_place"})),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(tenant_version(), head);
    assert_eq!(control_version(&data, &tid), head);
    assert_eq!(count(), 300_000);
    assert_eq!(audit_restores(&app), 1);
}
