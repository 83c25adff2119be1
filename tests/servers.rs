//! Server lifecycle (issue 16): the default server's path relative to the
//! data directory, `PATCH /v1/servers/{id}` (capacity, active / draining /
//! retired), moving a tenant to another server (SQLite → SQLite,
//! PostgreSQL → PostgreSQL, a SIGKILL in the middle), and draining a
//! server while its tenants' features keep answering.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::{json, Value};
use tenantplane_testkit::fixture;

use crate::common::{call_as, create_tenant, error_code, wait_for, App, AppOptions, TestPg, TOKEN};

const LONG: Duration = Duration::from_secs(180);

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

fn file_name(tenant: &str) -> String {
    format!("t_{}", tenant.replace('-', ""))
}

/// Every table's row count of a SQLite tenant file, and its newest
/// migration.
fn sqlite_content(path: &Path) -> (BTreeMap<String, i64>, Option<String>) {
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open tenant");
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .load(&mut c)
    .expect("tables");
    let counts = tables
        .into_iter()
        .map(|t| {
            let n = diesel::sql_query(format!("SELECT count(*) AS n FROM \"{}\"", t.name))
                .get_result::<Count>(&mut c)
                .expect("count")
                .n;
            (t.name, n)
        })
        .collect();
    let v = diesel::sql_query("SELECT max(version) AS v FROM __diesel_schema_migrations")
        .get_result::<Version>(&mut c)
        .expect("version")
        .v;
    (counts, v)
}

/// The same for a PostgreSQL tenant schema reached by `url`.
fn pg_content(url: &str, schema: &str) -> (BTreeMap<String, i64>, Option<String>) {
    let mut c = PgConnection::establish(url).expect("connect");
    c.batch_execute(&format!("SET search_path TO \"{schema}\""))
        .expect("search_path");
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables
          WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .load(&mut c)
    .expect("tables");
    let counts = tables
        .into_iter()
        .map(|t| {
            let n = diesel::sql_query(format!("SELECT count(*) AS n FROM \"{}\"", t.name))
                .get_result::<Count>(&mut c)
                .expect("count")
                .n;
            (t.name, n)
        })
        .collect();
    let v = diesel::sql_query("SELECT max(version)::text AS v FROM __diesel_schema_migrations")
        .get_result::<Version>(&mut c)
        .expect("version")
        .v;
    (counts, v)
}

fn pg_schema_exists(url: &str, schema: &str) -> bool {
    diesel::sql_query("SELECT count(*) AS n FROM pg_namespace WHERE nspname = $1")
        .bind::<Text, _>(schema)
        .get_result::<Count>(&mut PgConnection::establish(url).expect("connect"))
        .expect("namespace")
        .n
        > 0
}

fn pg_database_exists(admin: &str, db: &str) -> bool {
    diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(db)
        .get_result::<Count>(&mut PgConnection::establish(admin).expect("connect"))
        .expect("pg_database")
        .n
        > 0
}

fn control(data: &Path) -> SqliteConnection {
    let mut c =
        SqliteConnection::establish(&data.join("control.db").to_string_lossy()).expect("control");
    c.batch_execute("PRAGMA busy_timeout = 10000")
        .expect("pragma");
    c
}

fn server_of(app: &App, tenant: &str) -> String {
    let (s, t) = app.call("GET", &format!("/v1/tenants/{tenant}"), None);
    assert_eq!(s, 200, "{t}");
    t["server_id"].as_str().expect("server_id").to_string()
}

fn add_server(app: &App, body: Value) -> String {
    let (s, srv) = app.call("POST", "/v1/servers", Some(body));
    assert_eq!(s, 201, "{srv}");
    srv["id"].as_str().expect("id").to_string()
}

fn server_id(app: &App, name: &str) -> String {
    let (s, srv) = app.call("GET", &format!("/v1/servers/{name}"), None);
    assert_eq!(s, 200, "{srv}");
    srv["id"].as_str().expect("id").to_string()
}

/// Moves a tenant and waits for its job to succeed.
fn move_and_wait(app: &App, tenant: &str, server: &str) -> Value {
    let (s, m) = app.call(
        "POST",
        &format!("/v1/tenants/{tenant}/move"),
        Some(json!({ "server": server })),
    );
    assert_eq!(s, 202, "{m}");
    wait_for("the move", LONG, || {
        let (_, m) = app.call("GET", &format!("/v1/tenants/{tenant}/move"), None);
        assert_ne!(m["state"], "dead", "{m}");
        (m["state"] == "succeeded").then_some(m)
    })
}

/// A phase-0 tenant filled with the shop fixture on `server`.
fn fixture_tenant(app: &App, slug: &str, server: &str, fill: impl FnOnce(&str, &str)) -> String {
    let id = create_tenant(
        app,
        json!({"slug": slug, "name": slug, "server": server, "schema": "phase:0"}),
    );
    fill(&id, &fixture::phase0(3, 40).sql);
    id
}

#[test]
fn moving_a_sqlite_tenant_keeps_every_row_and_its_version() {
    let app = App::start();
    let other = tempfile::tempdir().expect("dir");
    let target_dir = other.path().join("shards");
    add_server(
        &app,
        json!({"name": "second", "kind": "sqlite", "url": format!("sqlite://{}", target_dir.display())}),
    );
    let source_dir = app.data_dir.join("tenants");
    let id = fixture_tenant(&app, "mover", "default", |id, sql| {
        let path = source_dir.join(format!("{}.db", file_name(id)));
        let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("tenant");
        c.batch_execute(sql).expect("fixture");
    });
    let source = source_dir.join(format!("{}.db", file_name(&id)));
    let target = target_dir.join(format!("{}.db", file_name(&id)));
    let before = sqlite_content(&source);
    assert!(before.0["sales"] >= 120, "{before:?}");
    let (_, t) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    let version = t["schema_version"].clone();
    assert_eq!(before.1.as_deref(), version.as_str());

    let done = move_and_wait(&app, &id, "second");
    assert_eq!(done["to_server"], server_id(&app, "second"), "{done}");
    assert_eq!(server_of(&app, &id), server_id(&app, "second"));
    assert_eq!(sqlite_content(&target), before, "every row and the version");
    assert!(
        !source.exists(),
        "the source is dropped once the target is verified"
    );
    let (_, t) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(t["schema_version"], version);
    let (_, servers) = app.call("GET", "/v1/servers", None);
    let count = |name: &str| {
        servers
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .map(|s| s["tenants"].clone())
    };
    assert_eq!(count("second"), Some(json!(1)));
    assert_eq!(count("default"), Some(json!(0)));

    // The move is audited with both servers.
    let (_, log) = app.call("GET", &format!("/v1/audit?tenant={id}"), None);
    let entry = log
        .as_array()
        .and_then(|a| a.iter().find(|e| e["action"] == "tenant.move").cloned())
        .expect("tenant.move audited");
    let state = |k: &str| -> Value {
        serde_json::from_str(entry[k].as_str().unwrap_or("null")).expect("audit state")
    };
    assert_eq!(state("before_state")["server"], "default", "{entry}");
    assert_eq!(state("after_state")["server"], "second", "{entry}");
    assert_eq!(state("after_state")["schema_version"], version, "{entry}");

    // A migration reaches the tenant where it is now.
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "phase:1", "selector": {"tenants": [id]}})),
    );
    assert_eq!(s, 201, "{r}");
    let rid = r["id"].as_str().expect("id").to_string();
    let r = wait_for("the rollout", LONG, || {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{rid}"), None);
        ["succeeded", "failed", "halted"]
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    });
    assert_eq!(r["state"], "succeeded", "{r}");
    let phase1 = tenantplane_migrations::catalogue::phase_version(1).map(str::to_string);
    assert_eq!(sqlite_content(&target).1, phase1);
    assert!(!source.exists());

    // Bad moves change nothing.
    for (body, status) in [
        (json!({"server": "second"}), 409),
        (json!({"server": "nowhere"}), 422),
        (json!({"nope": 1}), 400),
    ] {
        let (s, e) = app.call(
            "POST",
            &format!("/v1/tenants/{id}/move"),
            Some(body.clone()),
        );
        assert_eq!(s, status, "{body}: {e}");
        error_code(&e);
    }
    assert_eq!(server_of(&app, &id), server_id(&app, "second"));
}

#[test]
fn moving_a_postgres_tenant_to_another_database_keeps_every_row() {
    let Some(a) = TestPg::new() else { return };
    let Some(b) = TestPg::new() else { return };
    let app = App::start();
    add_server(
        &app,
        json!({"name": "pg-a", "kind": "postgres", "url": a.url()}),
    );
    add_server(
        &app,
        json!({"name": "pg-b", "kind": "postgres", "url": b.url()}),
    );
    add_server(
        &app,
        json!({"name": "pg-own", "kind": "postgres", "url": a.url(), "isolation": "database"}),
    );
    let id = fixture_tenant(&app, "pg-mover", "pg-a", |id, sql| {
        let mut c = a.connect();
        c.batch_execute(&format!("SET search_path TO \"{}\"; {sql}", file_name(id)))
            .expect("fixture");
    });
    let schema = file_name(&id);
    a.also_drop(&schema);
    let before = pg_content(&a.url(), &schema);
    assert!(before.0["sales"] >= 120, "{before:?}");

    // Schema in database A → schema in database B.
    move_and_wait(&app, &id, "pg-b");
    assert_eq!(server_of(&app, &id), server_id(&app, "pg-b"));
    assert_eq!(pg_content(&b.url(), &schema), before);
    assert!(
        !pg_schema_exists(&a.url(), &schema),
        "the source schema is dropped"
    );

    // → a database of its own (database isolation), in `public`.
    move_and_wait(&app, &id, "pg-own");
    assert_eq!(pg_content(&a.url_of(&schema), "public"), before);
    assert!(pg_database_exists(&a.admin_url, &schema));
    assert!(!pg_schema_exists(&b.url(), &schema));

    // → back to a schema, and the tenant's own database goes.
    move_and_wait(&app, &id, "pg-a");
    assert_eq!(pg_content(&a.url(), &schema), before);
    assert!(!pg_database_exists(&a.admin_url, &schema));
    let (_, t) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(t["schema_version"].as_str(), before.1.as_deref());

    // PostgreSQL and SQLite snapshots do not mix.
    let (s, e) = app.call(
        "POST",
        &format!("/v1/tenants/{id}/move"),
        Some(json!({"server": "default"})),
    );
    assert_eq!((s, error_code(&e)), (422, "invalid".to_string()), "{e}");
}

/// Rows enough that the move takes a second or more.
const BALLAST: &str = "CREATE TABLE ballast (id INTEGER PRIMARY KEY, pad TEXT NOT NULL);
    INSERT INTO ballast (id, pad)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
    SELECT i, hex(randomblob(64)) FROM n;";

fn restart(data: &Path) -> App {
    App::start_with(AppOptions {
        data_dir: Some(data.to_path_buf()),
        // A killed worker's lease runs out fast, so the retry comes soon.
        env: vec![("TENANTPLANE_WORKER_LEASE_S".into(), "3".into())],
        ..AppOptions::default()
    })
}

fn tenant_server_in_control(data: &Path, tenant: &str) -> String {
    diesel::sql_query("SELECT server_id AS name FROM tenants WHERE id = ?")
        .bind::<Text, _>(tenant)
        .get_result::<Name>(&mut control(data))
        .expect("tenant")
        .name
}

#[test]
fn sigkill_during_a_move_leaves_the_tenant_in_one_place_and_the_retry_finishes() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let target_dir = dir.path().join("shards");
    let mut app = restart(&data);
    let second = add_server(
        &app,
        json!({"name": "second", "kind": "sqlite", "url": format!("sqlite://{}", target_dir.display())}),
    );
    let default = server_id(&app, "default");
    let id = create_tenant(
        &app,
        json!({"slug": "heavy", "name": "Heavy", "server": "default"}),
    );
    let source = data.join("tenants").join(format!("{}.db", file_name(&id)));
    let target = target_dir.join(format!("{}.db", file_name(&id)));
    SqliteConnection::establish(&source.to_string_lossy())
        .expect("tenant")
        .batch_execute(BALLAST)
        .expect("ballast");
    let before = sqlite_content(&source);
    assert_eq!(before.0["ballast"], 300_000);

    let (s, m) = app.call(
        "POST",
        &format!("/v1/tenants/{id}/move"),
        Some(json!({"server": "second"})),
    );
    assert_eq!(s, 202, "{m}");
    // Kill once the copy on the target has begun: writing and checking it
    // take a second or more (the ballast), the switch comes after.
    wait_for("the copy on the target", LONG, || {
        target.exists().then_some(())
    });
    app.child.kill().expect("SIGKILL");
    app.child.wait().expect("reap");

    // Served from exactly one place: where the control DB says, with every
    // row; the other copy, if any, is not what it serves.
    let on = tenant_server_in_control(&data, &id);
    assert!(on == default || on == second, "{on}");
    let served = if on == default { &source } else { &target };
    eprintln!(
        "killed with the tenant on {}, target copy present: {}",
        if on == default {
            "the source"
        } else {
            "the target"
        },
        target.exists()
    );
    assert_eq!(sqlite_content(served), before, "the served copy is whole");

    // The retry finishes the move and leaves one copy.
    let app = restart(&data);
    let started = std::time::Instant::now();
    let done = wait_for("the retried move", LONG, || {
        let (_, m) = app.call("GET", &format!("/v1/tenants/{id}/move"), None);
        assert_ne!(m["state"], "dead", "{m}");
        (m["state"] == "succeeded").then_some(m)
    });
    // For the report only (no timed assertion): lease expiry + the move.
    eprintln!(
        "the retried move of 300,000 rows finished {:?} after the restart",
        started.elapsed()
    );
    assert_eq!(tenant_server_in_control(&data, &id), second, "{done}");
    assert_eq!(sqlite_content(&target), before);
    assert!(!source.exists(), "the old source is gone");
    for suffix in ["-wal", "-shm"] {
        let mut p = source.clone().into_os_string();
        p.push(suffix);
        assert!(!PathBuf::from(p).exists());
    }
    let (_, log) = app.call("GET", &format!("/v1/audit?tenant={id}"), None);
    let moves = log
        .as_array()
        .map(|a| a.iter().filter(|e| e["action"] == "tenant.move").count());
    assert_eq!(moves, Some(1), "switched once");
}

#[test]
fn draining_a_server_empties_it_while_features_keep_answering() {
    let app = App::start();
    let old_dir = tempfile::tempdir().expect("dir");
    let old = add_server(
        &app,
        json!({"name": "old", "kind": "sqlite", "url": format!("sqlite://{}", old_dir.path().display())}),
    );
    let ids: Vec<String> = (0..50)
        .map(|i| {
            create_tenant(
                &app,
                json!({"slug": format!("drain-{i}"), "name": "Drain", "server": "old", "schema": "phase:0"}),
            )
        })
        .collect();

    // Feature evaluation of every tenant, over and over, during the drain.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (url, ids, stop, answered) =
            (app.url.clone(), ids.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for id in &ids {
                    let (s, f) = call_as(
                        &url,
                        Some(TOKEN),
                        "GET",
                        &format!("/v1/tenants/{id}/features"),
                        None,
                    );
                    if s != 200 {
                        failures.push(format!("{id}: {s} {f}"));
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
            failures
        })
    };

    let (s, d) = app.call("POST", "/v1/servers/old/drain", None);
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["total"], 50, "{d}");
    let (_, srv) = app.call("GET", "/v1/servers/old", None);
    assert_eq!(srv["status"], "draining", "marked draining first");
    let started = std::time::Instant::now();
    let done = wait_for("the drain", LONG, || {
        let (s, d) = app.call("GET", "/v1/servers/old/drain", None);
        assert_eq!(s, 200, "{d}");
        assert_ne!(d["state"], "dead", "{d}");
        let (moved, remaining) = (
            d["moved"].as_i64().unwrap_or(-1),
            d["remaining"].as_i64().unwrap_or(-1),
        );
        assert_eq!(moved + remaining, 50, "{d}");
        (d["state"] == "succeeded").then_some(d)
    });
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let failures = checker.join().expect("checker");
    assert!(
        failures.is_empty(),
        "feature evaluation failed during the drain: {failures:?}"
    );
    let answered = answered.load(Ordering::SeqCst);
    assert!(answered >= 50);
    // For the report only (no timed assertion).
    eprintln!(
        "drained 50 tenants in {took:?}; {answered} feature evaluations answered 200 meanwhile"
    );
    assert_eq!(
        (done["moved"].clone(), done["remaining"].clone()),
        (json!(50), json!(0)),
        "{done}"
    );

    let default = server_id(&app, "default");
    for id in &ids {
        assert_eq!(server_of(&app, id), default);
    }
    let left: Vec<_> = std::fs::read_dir(old_dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "nothing left on the drained server: {left:?}"
    );

    // Empty now: it can be retired.
    let (s, srv) = app.call(
        "PATCH",
        &format!("/v1/servers/{old}"),
        Some(json!({"status": "retired"})),
    );
    assert_eq!((s, srv["status"].clone()), (200, json!("retired")), "{srv}");
    let (s, e) = app.call("POST", "/v1/servers/old/drain", None);
    assert_eq!(s, 409, "{e}");
}

#[test]
fn patching_servers_validates_and_draining_servers_take_no_tenants() {
    let app = App::start();
    let spare = tempfile::tempdir().expect("dir");
    add_server(
        &app,
        json!({"name": "spare", "kind": "sqlite", "url": format!("sqlite://{}", spare.path().display()), "capacity": 5}),
    );
    let t = create_tenant(
        &app,
        json!({"slug": "resident", "name": "R", "server": "default"}),
    );

    for (body, status) in [
        (json!({"status": "paused"}), 422),
        (json!({"status": ""}), 422),
        (json!({"capacity": 0}), 422),
        (json!({"capacity": "ten"}), 400),
        (json!({"colour": "red"}), 400),
    ] {
        let (s, e) = app.call("PATCH", "/v1/servers/default", Some(body.clone()));
        assert_eq!(s, status, "{body}: {e}");
        error_code(&e);
    }
    let (s, e) = app.call("PATCH", "/v1/servers/nowhere", Some(json!({"capacity": 3})));
    assert_eq!(s, 404, "{e}");

    // Retiring a server with a live tenant is refused, and changes nothing.
    let (s, e) = app.call(
        "PATCH",
        "/v1/servers/default",
        Some(json!({"status": "retired", "capacity": 7})),
    );
    assert_eq!((s, error_code(&e)), (409, "conflict".to_string()), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("drain"),
        "{e}"
    );
    let (_, srv) = app.call("GET", "/v1/servers/default", None);
    assert_eq!(
        (srv["status"].clone(), srv["capacity"].clone()),
        (json!("active"), json!(10000))
    );

    // Draining: no new tenants, neither asked for nor placed.
    let (s, srv) = app.call(
        "PATCH",
        "/v1/servers/default",
        Some(json!({"status": "draining"})),
    );
    assert_eq!(
        (s, srv["status"].clone()),
        (200, json!("draining")),
        "{srv}"
    );
    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "latecomer", "name": "L", "server": "default", "schema": "none"})),
    );
    assert_eq!(s, 409, "{e}");
    let placed = create_tenant(
        &app,
        json!({"slug": "placed", "name": "P", "schema": "none"}),
    );
    assert_eq!(server_of(&app, &placed), server_id(&app, "spare"));
    // Nor by a move.
    let (s, e) = app.call(
        "POST",
        &format!("/v1/tenants/{placed}/move"),
        Some(json!({"server": "default"})),
    );
    assert_eq!(s, 409, "{e}");
    // Its tenant still answers.
    let (s, _) = app.call("GET", &format!("/v1/tenants/{t}/features"), None);
    assert_eq!(s, 200);

    // Capacity and back to active; audited.
    let (s, srv) = app.call("PATCH", "/v1/servers/spare", Some(json!({"capacity": 1})));
    assert_eq!((s, srv["capacity"].clone()), (200, json!(1)), "{srv}");
    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "no-room", "name": "N", "server": "spare", "schema": "none"})),
    );
    assert_eq!(s, 409, "full: {e}");
    let (s, _) = app.call(
        "PATCH",
        "/v1/servers/default",
        Some(json!({"status": "active"})),
    );
    assert_eq!(s, 200);
    let (_, log) = app.call("GET", "/v1/audit?limit=1000", None);
    let updates = log
        .as_array()
        .map(|a| a.iter().filter(|e| e["action"] == "server.update").count())
        .unwrap_or(0);
    assert_eq!(updates, 3, "{log}");
}

#[test]
fn a_copied_data_dir_serves_its_tenants_from_the_copy() {
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).expect("dir");
    let mut app = App::start_with(AppOptions {
        data_dir: Some(first.clone()),
        ..AppOptions::default()
    });
    let id = create_tenant(
        &app,
        json!({"slug": "travels", "name": "T", "schema": "phase:0"}),
    );
    let phase0 = tenantplane_migrations::catalogue::phase_version(0).map(str::to_string);
    app.child.kill().expect("stop");
    app.child.wait().expect("reap");
    // Stored relative to the data dir.
    let url = diesel::sql_query("SELECT url AS name FROM database_servers WHERE name = 'default'")
        .get_result::<Name>(&mut control(&first))
        .expect("default server")
        .name;
    assert_eq!(url, "sqlite://tenants");

    let copy = dir.path().join("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&first)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let app = App::start_with(AppOptions {
        data_dir: Some(copy.clone()),
        ..AppOptions::default()
    });
    let (_, srv) = app.call("GET", "/v1/servers/default", None);
    assert_eq!(
        srv["url"],
        json!(format!("sqlite://{}", copy.join("tenants").display())),
        "resolved against the copy: {srv}"
    );
    // A migration and a new tenant land in the copy; the first dir is untouched.
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "phase:1", "selector": {"tenants": [id]}})),
    );
    assert_eq!(s, 201, "{r}");
    let rid = r["id"].as_str().expect("id").to_string();
    let r = wait_for("the rollout", LONG, || {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{rid}"), None);
        ["succeeded", "failed", "halted"]
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    });
    assert_eq!(r["state"], "succeeded", "{r}");
    let phase1 = tenantplane_migrations::catalogue::phase_version(1).map(str::to_string);
    let file = |root: &Path| root.join("tenants").join(format!("{}.db", file_name(&id)));
    assert_eq!(sqlite_content(&file(&copy)).1, phase1);
    assert_eq!(
        sqlite_content(&file(&first)).1,
        phase0,
        "the old dir is not written"
    );
    let other = create_tenant(
        &app,
        json!({"slug": "newcomer", "name": "N", "schema": "none"}),
    );
    assert!(file(&copy)
        .with_file_name(format!("{}.db", file_name(&other)))
        .exists());
    assert!(!file(&first)
        .with_file_name(format!("{}.db", file_name(&other)))
        .exists());
}

#[test]
fn an_absolute_default_path_inside_the_data_dir_becomes_relative() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_path_buf();
    let mut app = App::start_with(AppOptions {
        data_dir: Some(data.clone()),
        ..AppOptions::default()
    });
    let id = create_tenant(
        &app,
        json!({"slug": "old-style", "name": "O", "schema": "none"}),
    );
    app.child.kill().expect("stop");
    app.child.wait().expect("reap");
    // As releases before this one stored it.
    let absolute = format!("sqlite://{}", data.join("tenants").display());
    diesel::sql_query("UPDATE database_servers SET url = ? WHERE name = 'default'")
        .bind::<Text, _>(&absolute)
        .execute(&mut control(&data))
        .expect("update");
    let app = App::start_with(AppOptions {
        data_dir: Some(data.clone()),
        ..AppOptions::default()
    });
    let url = diesel::sql_query("SELECT url AS name FROM database_servers WHERE name = 'default'")
        .get_result::<Name>(&mut control(&data))
        .expect("default server")
        .name;
    assert_eq!(url, "sqlite://tenants");
    let (s, t) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(s, 200, "{t}");
}

#[test]
fn moves_and_drains_work_on_a_postgres_control_db() {
    let Some(control) = TestPg::new() else { return };
    let app = App::start_with_control(Some(control.url()));
    let old_dir = tempfile::tempdir().expect("dir");
    add_server(
        &app,
        json!({"name": "old", "kind": "sqlite", "url": format!("sqlite://{}", old_dir.path().display())}),
    );
    let ids: Vec<String> = (0..5)
        .map(|i| {
            create_tenant(
                &app,
                json!({"slug": format!("pgc-{i}"), "name": "P", "server": "old", "schema": "phase:0"}),
            )
        })
        .collect();
    let default = server_id(&app, "default");
    move_and_wait(&app, &ids[0], "default");
    assert_eq!(server_of(&app, &ids[0]), default);

    let (s, d) = app.call("POST", "/v1/servers/old/drain", None);
    assert_eq!((s, d["total"].clone()), (202, json!(4)), "{d}");
    let done = wait_for("the drain", LONG, || {
        let (_, d) = app.call("GET", "/v1/servers/old/drain", None);
        assert_ne!(d["state"], "dead", "{d}");
        (d["state"] == "succeeded").then_some(d)
    });
    assert_eq!(done["job_id"], d["job_id"], "{done}");
    assert_eq!(
        (done["moved"].clone(), done["remaining"].clone()),
        (json!(4), json!(0))
    );
    for id in &ids {
        assert_eq!(server_of(&app, id), default);
    }
    let (s, srv) = app.call(
        "PATCH",
        "/v1/servers/old",
        Some(json!({"status": "retired"})),
    );
    assert_eq!((s, srv["status"].clone()), (200, json!("retired")), "{srv}");
}

fn cli(app: &App, args: &[&str]) -> Value {
    let out = std::process::Command::new(crate::common::bin())
        .args(args)
        .args(["-o", "json"])
        .env("TENANTPLANE_URL", &app.url)
        .env("TENANTPLANE_TOKEN", TOKEN)
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_cli_updates_drains_and_moves() {
    let app = App::start();
    let extra = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", extra.path().display());
    cli(
        &app,
        &[
            "servers", "add", "--kind", "sqlite", "--url", &url, "--name", "extra",
        ],
    );
    let id = create_tenant(
        &app,
        json!({"slug": "cli-mover", "name": "C", "server": "default", "schema": "none"}),
    );

    let m = cli(&app, &["tenants", "move", "cli-mover", "--server", "extra"]);
    assert_eq!(m["to_server"], json!(server_id(&app, "extra")), "{m}");
    wait_for("the move", LONG, || {
        (server_of(&app, &id) == server_id(&app, "extra")).then_some(())
    });

    let s = cli(&app, &["servers", "update", "default", "--capacity", "42"]);
    assert_eq!(
        (s["capacity"].clone(), s["status"].clone()),
        (json!(42), json!("active")),
        "{s}"
    );
    let d = cli(&app, &["servers", "drain", "extra"]);
    assert_eq!(d["total"], 1, "{d}");
    wait_for("the drain", LONG, || {
        let d = cli(&app, &["servers", "drain", "extra", "--status"]);
        (d["state"] == "succeeded").then_some(())
    });
    assert_eq!(server_of(&app, &id), server_id(&app, "default"));
    let s = cli(&app, &["servers", "update", "extra", "--status", "retired"]);
    assert_eq!(s["status"], "retired", "{s}");
}
