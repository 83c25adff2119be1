//! Pre-migration backups in rollouts, end to end with the real binary:
//! `backup: true` backs each migrated tenant up inside its task (reason
//! `pre_migration`, the id on the task, none for skipped tenants);
//! `restore_on_failure: true` puts a tenant whose migration failed for good
//! back to that backup, data and schema version, and says so on the task;
//! `restore_on_failure` without `backup` is refused. On SQLite and on a
//! PostgreSQL schema server.

use std::process::Command;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde_json::{json, Value};
use tenantplane_migrations::catalogue;

use crate::common::{error_code, wait_for, App, AppOptions, TestPg, TOKEN};

const LONG: Duration = Duration::from_secs(120);

fn simple(id: &str) -> String {
    id.replace('-', "")
}

fn phase0() -> String {
    catalogue::phase_version(0).expect("phase 0").to_string()
}

fn head() -> String {
    catalogue::head().expect("head").to_string()
}

fn versions_upto(v: &str) -> Vec<String> {
    catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .filter(|x| x.as_str() <= v)
        .collect()
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    v: String,
}

/// Where the tenants live, to read and write their databases behind the
/// API's back.
enum Place<'a> {
    /// The app's data dir (SQLite files under `tenants/`).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL server with schema isolation, registered as `pg`.
    PgSchema(&'a TestPg),
}

impl Place<'_> {
    /// The server name to create tenants on and select them by.
    fn server(&self) -> Option<&'static str> {
        match self {
            Place::Sqlite(_) => None,
            Place::PgSchema(_) => Some("pg"),
        }
    }

    fn query(&self, tenant_id: &str, sql: &str) -> Vec<String> {
        let rows: Vec<Row> = match self {
            Place::Sqlite(dir) => {
                let path = dir
                    .join("tenants")
                    .join(format!("t_{}.db", simple(tenant_id)));
                assert!(path.exists(), "{} is missing", path.display());
                let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                diesel::sql_query(sql).load(&mut c).expect(sql)
            }
            Place::PgSchema(pg) => {
                let mut c = pg.connect();
                c.batch_execute(&format!("SET search_path TO \"t_{}\"", simple(tenant_id)))
                    .expect("search_path");
                diesel::sql_query(sql).load(&mut c).expect(sql)
            }
        };
        let mut v: Vec<String> = rows.into_iter().map(|r| r.v).collect();
        v.sort();
        v
    }

    fn exec(&self, tenant_id: &str, sql: &str) {
        match self {
            Place::Sqlite(dir) => {
                let path = dir
                    .join("tenants")
                    .join(format!("t_{}.db", simple(tenant_id)));
                let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                c.batch_execute(sql).expect(sql);
            }
            Place::PgSchema(pg) => {
                pg.connect()
                    .batch_execute(&format!(
                        "SET search_path TO \"t_{}\"; {sql}",
                        simple(tenant_id)
                    ))
                    .expect(sql);
            }
        }
    }

    fn applied(&self, tenant_id: &str) -> Vec<String> {
        self.query(
            tenant_id,
            "SELECT version AS v FROM __diesel_schema_migrations",
        )
    }

    fn names(&self, tenant_id: &str) -> Vec<String> {
        self.query(tenant_id, "SELECT name AS v FROM shop_profile")
    }

    /// Makes a later migration of the tenant fail for good, after earlier
    /// ones applied: SQLite, a table in the way of 020100 (the backup, a
    /// file copy, keeps it); PostgreSQL, a view on `users.role`, whose type
    /// 040100 changes (a view is not data: the backup leaves it out).
    fn break_tenant(&self, tenant_id: &str) -> &'static str {
        match self {
            Place::Sqlite(_) => {
                self.exec(
                    tenant_id,
                    "CREATE TABLE expense_categories (id INTEGER PRIMARY KEY)",
                );
                "20261125020100"
            }
            Place::PgSchema(_) => {
                self.exec(
                    tenant_id,
                    "CREATE VIEW user_roles AS SELECT role FROM users",
                );
                "20261125040100"
            }
        }
    }
}

fn serve() -> App {
    App::start_with(AppOptions {
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "4".into())],
        ..AppOptions::default()
    })
}

fn add_pg_server(app: &App, pg: &TestPg) {
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
}

/// Creates a tenant at `schema` (on `place`'s server) and returns its id.
fn tenant(app: &App, place: &Place, slug: &str, schema: &str) -> String {
    let mut body = json!({"slug": slug, "name": format!("Shop {slug}"), "schema": schema});
    if let Some(s) = place.server() {
        body["server"] = json!(s);
    }
    let (s, t) = app.call("POST", "/v1/tenants", Some(body));
    assert_eq!(s, 201, "{t}");
    t["id"].as_str().expect("id").to_string()
}

fn selector(place: &Place) -> Value {
    match place.server() {
        Some(s) => json!({"servers": [s]}),
        None => json!({"all": true}),
    }
}

fn start(app: &App, body: Value) -> Value {
    let (s, r) = app.call("POST", "/v1/rollouts", Some(body));
    assert_eq!(s, 201, "{r}");
    r
}

fn wait_finished(app: &App, id: &str) -> Value {
    wait_for(&format!("rollout {id} to finish"), LONG, || {
        let (s, r) = app.call("GET", &format!("/v1/rollouts/{id}"), None);
        assert_eq!(s, 200, "{r}");
        ["succeeded", "failed", "halted"]
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    })
}

fn tasks(app: &App, id: &str) -> Vec<Value> {
    let (s, page) = app.call("GET", &format!("/v1/rollouts/{id}/tasks?limit=1000"), None);
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

fn task_of<'a>(tasks: &'a [Value], slug: &str) -> &'a Value {
    tasks
        .iter()
        .find(|t| t["slug"] == slug)
        .unwrap_or_else(|| panic!("no task for {slug}: {tasks:?}"))
}

fn backup(app: &App, id: &str) -> Value {
    let (s, b) = app.call("GET", &format!("/v1/backups/{id}"), None);
    assert_eq!(s, 200, "{b}");
    b
}

/// The tenant's backups, newest first.
fn backups_of(app: &App, tenant: &str) -> Vec<Value> {
    let (s, page) = app.call("GET", &format!("/v1/backups?tenant={tenant}"), None);
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

fn schema_version(app: &App, slug: &str) -> Option<String> {
    let (s, t) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
    assert_eq!(s, 200, "{t}");
    t["schema_version"].as_str().map(str::to_string)
}

/// `backup: true`: every migrated tenant's task names a completed
/// `pre_migration` backup of it taken at its start version; a tenant
/// already at the target gets none.
fn backups_before_migrating(place: &Place, app: &App) {
    let movers: Vec<(String, String)> = (0..2)
        .map(|i| {
            let slug = format!("bk-{i}");
            let id = tenant(app, place, &slug, "phase:0");
            place.exec(
                &id,
                &format!("INSERT INTO shop_profile (name) VALUES ('kept-{i}')"),
            );
            (slug, id)
        })
        .collect();
    let there = tenant(app, place, "bk-there", "head");

    let r = start(
        app,
        json!({"target": "head", "selector": selector(place), "backup": true}),
    );
    assert_eq!(
        (&r["backup"], &r["restore_on_failure"]),
        (&json!(true), &json!(false)),
        "{r}"
    );
    let id = r["id"].as_str().expect("id");
    let done = wait_finished(app, id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        (
            done["counts"]["succeeded"].as_u64(),
            done["counts"]["skipped"].as_u64()
        ),
        (Some(2), Some(1)),
        "{done}"
    );
    let all = tasks(app, id);
    for (slug, tid) in &movers {
        let t = task_of(&all, slug);
        assert_eq!(
            (&t["state"], &t["restored"]),
            (&json!("succeeded"), &json!(false)),
            "{t}"
        );
        let bid = t["backup_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a migrated tenant's task names its backup: {t}"));
        let b = backup(app, bid);
        assert_eq!(b["tenant_id"], json!(tid), "{b}");
        assert_eq!(b["reason"], "pre_migration", "{b}");
        assert_eq!(b["state"], "completed", "{b}");
        assert_eq!(
            b["schema_version"].as_str(),
            Some(phase0().as_str()),
            "taken before the migration: {b}"
        );
        assert_eq!(
            backups_of(app, tid).len(),
            1,
            "one backup per migrated tenant"
        );
        assert_eq!(place.applied(tid), versions_upto(&head()));
    }
    let skipped = task_of(&all, "bk-there");
    assert_eq!(skipped["state"], "skipped", "{skipped}");
    assert_eq!(skipped["backup_id"], Value::Null, "{skipped}");
    assert!(
        backups_of(app, &there).is_empty(),
        "a skipped tenant is not backed up"
    );
}

/// `backup` + `restore_on_failure`: the tenant whose migration fails for
/// good is put back to its pre-migration backup (schema version and data),
/// the task says so and still counts as failed; the others migrate.
fn failed_tenant_is_restored(place: &Place, app: &App) {
    let fleet: Vec<(String, String)> = (0..3)
        .map(|i| {
            let slug = format!("rs-{i}");
            let id = tenant(app, place, &slug, "phase:0");
            place.exec(
                &id,
                &format!("INSERT INTO shop_profile (name) VALUES ('kept-{i}')"),
            );
            (slug, id)
        })
        .collect();
    let (bad_slug, bad_id) = fleet[1].clone();
    let failing = place.break_tenant(&bad_id);

    let r = start(
        app,
        json!({"target": "head", "selector": selector(place), "backup": true,
               "restore_on_failure": true, "failure_budget": {"max_failed": 1},
               "allow_drift": true}),
    );
    assert_eq!(
        (&r["backup"], &r["restore_on_failure"]),
        (&json!(true), &json!(true)),
        "{r}"
    );
    let id = r["id"].as_str().expect("id");
    let done = wait_finished(app, id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(
        (
            done["counts"]["succeeded"].as_u64(),
            done["counts"]["failed"].as_u64()
        ),
        (Some(2), Some(1)),
        "the restored tenant still counts as failed: {done}"
    );
    // The restore runs once the task is failed (a restore in place refuses
    // a tenant being migrated): wait for it to be recorded.
    let bad = wait_for("the failed task to say it was restored", LONG, || {
        let t = task_of(&tasks(app, id), &bad_slug).clone();
        (t["restored"] == json!(true)).then_some(t)
    });
    assert_eq!(
        (&bad["state"], &bad["error_version"]),
        (&json!("failed"), &json!(failing)),
        "{bad}"
    );
    let err = bad["last_error"].as_str().unwrap_or("");
    assert!(err.contains(&bad_slug) && err.contains(failing), "{err}");
    assert!(
        bad["reached_version"].as_str() > Some(phase0().as_str()),
        "the run got past phase 0 before failing: {bad}"
    );

    // Back at its start version with its data, in the control DB and in its
    // database.
    assert_eq!(schema_version(app, &bad_slug), Some(phase0()));
    assert_eq!(place.applied(&bad_id), versions_upto(&phase0()));
    assert_eq!(place.names(&bad_id), vec!["kept-1".to_string()]);

    // The task's backup is the pre-migration one; the restore took a safety
    // copy of the failed state first.
    let bid = bad["backup_id"].as_str().expect("backup id");
    let b = backup(app, bid);
    assert_eq!(
        (b["reason"].as_str(), b["schema_version"].as_str()),
        (Some("pre_migration"), Some(phase0().as_str())),
        "{b}"
    );
    let mut reasons: Vec<String> = backups_of(app, &bad_id)
        .iter()
        .map(|b| b["reason"].as_str().unwrap_or("").to_string())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["pre_migration", "pre_restore"]);
    let (s, log) = app.call("GET", &format!("/v1/audit?tenant={bad_id}"), None);
    assert_eq!(s, 200, "{log}");
    assert!(
        log.as_array()
            .is_some_and(|l| l.iter().any(|e| e["action"] == "tenant.restore")),
        "the restore is audited: {log}"
    );

    // The others migrated, each with its own backup, and were not restored.
    let all = tasks(app, id);
    for (slug, tid) in fleet.iter().filter(|(s, _)| *s != bad_slug) {
        let t = task_of(&all, slug);
        assert_eq!(
            (&t["state"], &t["restored"]),
            (&json!("succeeded"), &json!(false)),
            "{t}"
        );
        assert!(t["backup_id"].is_string(), "{t}");
        assert_eq!(schema_version(app, slug), Some(head()));
        assert_eq!(place.applied(tid), versions_upto(&head()));
    }
}

#[test]
fn pre_migration_backups_on_sqlite() {
    let app = serve();
    backups_before_migrating(&Place::Sqlite(app.data_dir.clone()), &app);
}

#[test]
fn pre_migration_backups_on_a_postgres_schema_server() {
    let Some(pg) = TestPg::new() else { return };
    let app = serve();
    add_pg_server(&app, &pg);
    backups_before_migrating(&Place::PgSchema(&pg), &app);
}

#[test]
fn a_failed_tenant_is_restored_on_sqlite() {
    let app = serve();
    failed_tenant_is_restored(&Place::Sqlite(app.data_dir.clone()), &app);
}

#[test]
fn a_failed_tenant_is_restored_on_a_postgres_schema_server() {
    let Some(pg) = TestPg::new() else { return };
    let app = serve();
    add_pg_server(&app, &pg);
    failed_tenant_is_restored(&Place::PgSchema(&pg), &app);
}

#[test]
fn restore_on_failure_needs_backup_through_the_api_and_the_cli() {
    let app = serve();
    let place = Place::Sqlite(app.data_dir.clone());
    tenant(&app, &place, "alone", "phase:0");
    for body in [
        json!({"target": "head", "selector": {"all": true}, "restore_on_failure": true}),
        json!({"target": "head", "selector": {"all": true}, "restore_on_failure": true, "backup": false}),
        json!({"target": "head", "selector": {"all": true}, "restore_on_failure": true, "dry_run": true}),
    ] {
        let (s, e) = app.call("POST", "/v1/rollouts", Some(body.clone()));
        assert_eq!(
            (s, error_code(&e).as_str()),
            (422, "invalid"),
            "{body}: {e}"
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("restore_on_failure")),
            "{e}"
        );
    }
    let (_, list) = app.call("GET", "/v1/rollouts", None);
    assert_eq!(list, json!([]), "no refused request created a rollout");
    assert_eq!(schema_version(&app, "alone"), Some(phase0()));

    // The CLI passes the flags through: alone it is refused by the API...
    let cli = |args: &[&str]| {
        Command::new(crate::common::bin())
            .args(args)
            .env("TENANTPLANE_URL", &app.url)
            .env("TENANTPLANE_TOKEN", TOKEN)
            .output()
            .expect("run cli")
    };
    let out = cli(&[
        "rollout",
        "plan",
        "--target",
        "head",
        "--all",
        "--restore-on-failure",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restore_on_failure"), "{err}");
    // ...and with --backup the rollout carries both.
    let out = cli(&[
        "rollout",
        "start",
        "--target",
        "head",
        "--all",
        "--backup",
        "--restore-on-failure",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (&r["backup"], &r["restore_on_failure"]),
        (&json!(true), &json!(true)),
        "{r}"
    );
    let done = wait_finished(&app, r["id"].as_str().expect("id"));
    assert_eq!(done["state"], "succeeded", "{done}");

    // Without the flags a rollout takes no backup.
    let later = tenant(&app, &place, "later", "phase:0");
    let r = start(
        &app,
        json!({"target": "head", "selector": {"tenants": ["later"]}}),
    );
    assert_eq!(
        (&r["backup"], &r["restore_on_failure"]),
        (&json!(false), &json!(false)),
        "{r}"
    );
    let id = r["id"].as_str().expect("id");
    assert_eq!(wait_finished(&app, id)["state"], "succeeded");
    assert_eq!(tasks(&app, id)[0]["backup_id"], Value::Null);
    assert!(backups_of(&app, &later).is_empty());
}
