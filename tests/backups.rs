//! Backups through the API and the CLI: take, verify, restore in place and
//! as a new tenant, pin, delete, on a SQLite and a PostgreSQL schema server;
//! bad input and damaged artifacts change nothing.

use std::path::PathBuf;
use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde_json::{json, Value};

use crate::common::{error_code, App, TestPg, TOKEN};

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

const NAMES: &str = "SELECT name FROM shop_profile ORDER BY name";

fn simple(id: &str) -> String {
    id.replace('-', "")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Where a tenant's database is, to write into it behind the API's back.
enum Place<'a> {
    /// The app's data dir (SQLite files under `tenants/`).
    Sqlite(PathBuf),
    /// A PostgreSQL server with schema isolation.
    PgSchema(&'a TestPg),
}

impl Place<'_> {
    fn exec(&self, tenant_id: &str, sql: &str) {
        match self {
            Place::Sqlite(dir) => {
                let path = dir
                    .join("tenants")
                    .join(format!("t_{}.db", simple(tenant_id)));
                assert!(path.exists(), "{} is missing", path.display());
                let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                c.batch_execute(sql).expect(sql);
            }
            Place::PgSchema(pg) => {
                let mut c = pg.connect();
                c.batch_execute(&format!(
                    "SET search_path TO \"t_{}\"; {sql}",
                    simple(tenant_id)
                ))
                .expect(sql);
            }
        }
    }

    /// The shop names in the tenant's database, sorted.
    fn names(&self, tenant_id: &str) -> Vec<String> {
        let rows: Vec<Name> = match self {
            Place::Sqlite(dir) => {
                let path = dir
                    .join("tenants")
                    .join(format!("t_{}.db", simple(tenant_id)));
                let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                diesel::sql_query(NAMES).load(&mut c).expect(NAMES)
            }
            Place::PgSchema(pg) => {
                let mut c = pg.connect();
                c.batch_execute(&format!("SET search_path TO \"t_{}\"", simple(tenant_id)))
                    .expect("search_path");
                diesel::sql_query(NAMES).load(&mut c).expect(NAMES)
            }
        };
        rows.into_iter().map(|r| r.name).collect()
    }
}

fn create_tenant(app: &App, slug: &str, server: Option<&str>) -> Value {
    let mut body = json!({"slug": slug, "name": format!("Shop {slug}")});
    if let Some(s) = server {
        body["server"] = json!(s);
    }
    let (s, t) = app.call("POST", "/v1/tenants", Some(body));
    assert_eq!(s, 201, "{t}");
    t
}

fn backup(app: &App, tenant: &str) -> Value {
    let (s, b) = app.call("POST", &format!("/v1/tenants/{tenant}/backups"), None);
    assert_eq!(s, 201, "{b}");
    b
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn artifact_path(app: &App, b: &Value) -> PathBuf {
    app.data_dir
        .join("backups")
        .join(b["artifact"].as_str().expect("artifact"))
}

fn audit_actions(app: &App, tenant: &str) -> Vec<String> {
    let (s, log) = app.call("GET", &format!("/v1/audit?tenant={tenant}"), None);
    assert_eq!(s, 200, "{log}");
    log.as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_string())
        .collect()
}

fn cli_json(app: &App, args: &[&str]) -> Value {
    let out = Command::new(crate::common::bin())
        .args(args)
        .args(["-o", "json"])
        .env("TENANTPLANE_URL", &app.url)
        .env("TENANTPLANE_TOKEN", TOKEN)
        .output()
        .expect("run cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// Backup → change the tenant → restore in place → as at the backup;
/// verify; restore as a new tenant → the same rows.
fn round_trip(app: &App, place: &Place, server: Option<&str>, kind: &str) -> (Value, Value) {
    let slug = unique("shop");
    let t = create_tenant(app, &slug, server);
    let tid = id(&t);
    place.exec(&tid, "INSERT INTO shop_profile (name) VALUES ('kept')");

    let b = backup(app, &slug);
    let bid = id(&b);
    assert_eq!(b["state"], "completed", "{b}");
    assert_eq!(b["reason"], "manual");
    assert_eq!(b["server_kind"], kind);
    assert_eq!(b["tenant_id"], tid.as_str());
    assert_eq!(b["tenant_slug"], slug.as_str());
    assert_eq!(b["schema_version"], t["schema_version"]);
    assert_eq!(b["pinned"], false);
    assert_eq!(b["row_counts"]["shop_profile"], 1, "{b}");
    assert!(b["size_bytes"].as_i64().is_some_and(|n| n > 0), "{b}");
    assert_eq!(b["sha256"].as_str().map(str::len), Some(64), "{b}");
    assert!(b["completed_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(artifact_path(app, &b).is_file());

    // Written behind the API's back after the backup.
    place.exec(
        &tid,
        "UPDATE shop_profile SET name = 'changed'; INSERT INTO shop_profile (name) VALUES ('added')",
    );
    assert_eq!(place.names(&tid), ["added", "changed"]);

    let (s, r) = app.call(
        "POST",
        &format!("/v1/backups/{bid}/restore"),
        Some(json!({"mode": "in_place"})),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["tenant"]["id"], tid.as_str());
    assert_eq!(r["tenant"]["schema_version"], t["schema_version"]);
    assert_eq!(r["backup"]["id"], bid.as_str());
    assert_eq!(r["safety_backup"]["reason"], "pre_restore", "{r}");
    assert_eq!(r["safety_backup"]["state"], "completed");
    assert_eq!(place.names(&tid), ["kept"]);

    let (s, v) = app.call("POST", &format!("/v1/backups/{bid}/verify"), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "verified", "{v}");
    assert!(v["verified_at"].as_str().is_some(), "{v}");
    assert_eq!(v["verify_error"], Value::Null);

    let copy = unique("copy");
    let mut body = json!({"mode": "new_tenant", "slug": copy});
    if let Some(s) = server {
        body["server"] = json!(s);
    }
    let (s, n) = app.call("POST", &format!("/v1/backups/{bid}/restore"), Some(body));
    assert_eq!(s, 201, "{n}");
    assert_eq!(n["tenant"]["slug"], copy.as_str());
    assert_eq!(n["tenant"]["name"], t["name"]);
    assert_eq!(n["tenant"]["schema_version"], t["schema_version"]);
    assert_eq!(n["safety_backup"], Value::Null);
    let nid = id(&n["tenant"]);
    assert_ne!(nid, tid);
    assert_eq!(place.names(&nid), ["kept"]);
    let (s, got) = app.call("GET", &format!("/v1/tenants/{copy}"), None);
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["status"], "active");

    (t, v)
}

#[test]
fn backups_round_trip_pin_and_delete_on_sqlite() {
    let app = App::start();
    let place = Place::Sqlite(app.data_dir.clone());
    let (t, b) = round_trip(&app, &place, None, "sqlite");
    let slug = t["slug"].as_str().expect("slug");
    let bid = id(&b);

    // Reads: the backup, the list with filters and pages.
    let (s, got) = app.call("GET", &format!("/v1/backups/{bid}"), None);
    assert_eq!(s, 200, "{got}");
    assert_eq!(got, b);
    let (s, page) = app.call("GET", &format!("/v1/backups?tenant={slug}"), None);
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    // The manual backup and the restore's safety copy, newest first.
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["reason"], "pre_restore");
    assert_eq!(items[1]["id"], bid.as_str());
    assert_eq!(page["next_cursor"], Value::Null);
    let (s, page) = app.call(
        "GET",
        &format!("/v1/backups?tenant={slug}&state=verified"),
        None,
    );
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let (s, first) = app.call("GET", &format!("/v1/backups?tenant={slug}&limit=1"), None);
    assert_eq!(s, 200, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (s, second) = app.call(
        "GET",
        &format!("/v1/backups?tenant={slug}&limit=1&cursor={cursor}"),
        None,
    );
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["items"][0]["id"], bid.as_str());
    assert_eq!(second["next_cursor"], Value::Null);

    // Pinned backups cannot be deleted.
    let (s, p) = app.call("PUT", &format!("/v1/backups/{bid}/pin"), None);
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["pinned"], true);
    let (s, e) = app.call("DELETE", &format!("/v1/backups/{bid}"), None);
    assert_eq!(s, 409, "{e}");
    assert_eq!(error_code(&e), "conflict");
    assert!(artifact_path(&app, &b).is_file());
    let (s, p) = app.call("DELETE", &format!("/v1/backups/{bid}/pin"), None);
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["pinned"], false);
    let (s, e) = app.call("DELETE", &format!("/v1/backups/{bid}"), None);
    assert_eq!(s, 204, "{e}");
    assert!(!artifact_path(&app, &b).exists());
    let manifest = PathBuf::from(format!(
        "{}.manifest.json",
        artifact_path(&app, &b).display()
    ));
    assert!(!manifest.exists());
    let (s, e) = app.call("GET", &format!("/v1/backups/{bid}"), None);
    assert_eq!(s, 404, "{e}");
    assert_eq!(error_code(&e), "not_found");

    let actions = audit_actions(&app, slug);
    for action in [
        "backup.create",
        "tenant.restore",
        "backup.pin",
        "backup.unpin",
        "backup.delete",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing in {actions:?}"
        );
    }

    // The CLI lists the same backups.
    let listed = cli_json(&app, &["backups", "list", "--tenant", slug]);
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["reason"], "pre_restore");
    let all = cli_json(&app, &["backups", "list"]);
    // The source's safety backup; the copy has none of its own.
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all}");
}

#[test]
fn backups_round_trip_on_a_postgres_schema_server() {
    let Some(pg) = TestPg::new() else { return };
    let app = App::start();
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg-schemas", "kind": "postgres", "url": pg.url(), "isolation": "schema"})),
    );
    assert_eq!(s, 201, "{srv}");
    let place = Place::PgSchema(&pg);
    let (t, _) = round_trip(&app, &place, Some("pg-schemas"), "pg_schema");
    let actions = audit_actions(&app, t["slug"].as_str().expect("slug"));
    assert!(actions.iter().any(|a| a == "tenant.restore"), "{actions:?}");
}

#[test]
fn bad_input_and_damaged_backups_change_nothing() {
    let app = App::start();
    let place = Place::Sqlite(app.data_dir.clone());
    let slug = unique("shop");
    let t = create_tenant(&app, &slug, None);
    let tid = id(&t);
    place.exec(&tid, "INSERT INTO shop_profile (name) VALUES ('kept')");
    let b = backup(&app, &slug);
    let bid = id(&b);

    // Unknown things are 404s.
    let missing = uuid::Uuid::new_v4().to_string();
    for (method, path, body) in [
        ("GET", format!("/v1/backups/{missing}"), None),
        ("POST", format!("/v1/backups/{missing}/verify"), None),
        ("PUT", format!("/v1/backups/{missing}/pin"), None),
        ("DELETE", format!("/v1/backups/{missing}/pin"), None),
        ("DELETE", format!("/v1/backups/{missing}"), None),
        (
            "POST",
            format!("/v1/backups/{missing}/restore"),
            Some(json!({"mode": "in_place"})),
        ),
        ("POST", "/v1/tenants/no-such-shop/backups".to_string(), None),
        ("GET", "/v1/backups?tenant=no-such-shop".to_string(), None),
    ] {
        let (s, e) = app.call(method, &path, body);
        assert_eq!(s, 404, "{method} {path}: {e}");
        assert_eq!(error_code(&e), "not_found");
    }

    // Bad filters and bodies.
    for (path, status) in [
        ("/v1/backups?state=sideways", 422),
        ("/v1/backups?limit=0", 422),
        ("/v1/backups?limit=501", 422),
        ("/v1/backups?limit=many", 400),
        ("/v1/backups?cursor=nowhere", 422),
        ("/v1/backups?colour=blue", 400),
    ] {
        let (s, e) = app.call("GET", path, None);
        assert_eq!(s, status, "{path}: {e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{path}: {e}");
    }
    let (_, e) = app.call("GET", "/v1/backups?state=sideways", None);
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sideways")),
        "{e}"
    );
    for body in [
        json!({"mode": "sideways"}),
        json!({}),
        json!({"mode": "in_place", "slug": "x"}),
        json!({"mode": "new_tenant"}),
        json!({"mode": "new_tenant", "slug": "x", "colour": "blue"}),
    ] {
        let (s, e) = app.call(
            "POST",
            &format!("/v1/backups/{bid}/restore"),
            Some(body.clone()),
        );
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(error_code(&e), "bad_request");
    }
    let (s, e) = app.call(
        "POST",
        &format!("/v1/backups/{bid}/restore"),
        Some(json!({"mode": "new_tenant", "slug": "Not A Slug"})),
    );
    assert_eq!(s, 422, "{e}");
    let (s, e) = app.call(
        "POST",
        &format!("/v1/backups/{bid}/restore"),
        Some(json!({"mode": "new_tenant", "slug": unique("copy"), "server": "nowhere"})),
    );
    assert_eq!(s, 422, "{e}");

    // A damaged artifact: verification marks the backup failed, and a
    // restore of it is refused with the tenant untouched.
    place.exec(&tid, "INSERT INTO shop_profile (name) VALUES ('after')");
    let file = artifact_path(&app, &b);
    let mut bytes = std::fs::read(&file).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).expect("damage the artifact");
    let (s, v) = app.call("POST", &format!("/v1/backups/{bid}/verify"), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["verify_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );

    let (s, e) = app.call(
        "POST",
        &format!("/v1/backups/{bid}/restore"),
        Some(json!({"mode": "in_place"})),
    );
    assert_eq!(s, 409, "{e}");
    assert_eq!(error_code(&e), "conflict");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed")),
        "{e}"
    );
    assert_eq!(place.names(&tid), ["after", "kept"]);
    let copy = unique("copy");
    let (s, e) = app.call(
        "POST",
        &format!("/v1/backups/{bid}/restore"),
        Some(json!({"mode": "new_tenant", "slug": copy})),
    );
    assert_eq!(s, 409, "{e}");
    let (s, _) = app.call("GET", &format!("/v1/tenants/{copy}"), None);
    assert_eq!(s, 404);
    // No safety backup was taken, no restore audited.
    let (s, page) = app.call("GET", &format!("/v1/backups?tenant={slug}"), None);
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert!(!audit_actions(&app, &slug)
        .iter()
        .any(|a| a == "tenant.restore"));
    let (s, e) = app.call("POST", &format!("/v1/backups/{bid}/verify"), None);
    assert_eq!(s, 409, "{e}");

    // A failed backup can be deleted.
    let (s, e) = app.call("DELETE", &format!("/v1/backups/{bid}"), None);
    assert_eq!(s, 204, "{e}");
    assert!(!file.exists());
}

fn metrics(app: &App) -> String {
    ureq::get(&format!("{}/metrics", app.url))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text")
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_report_backups_their_age_and_schedule_lag() {
    let app = App::start();
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": unique("metered"), "name": "M"})),
    );
    assert_eq!(s, 201, "{t}");
    let before = metrics(&app);
    assert_eq!(
        metric(&before, "tenantplane_tenants_without_verified_backup "),
        Some(1.0)
    );
    assert_eq!(metric(&before, "tenantplane_backup_bytes "), Some(0.0));
    let path = format!("/v1/tenants/{}/backups", t["id"].as_str().expect("id"));
    let (s, b) = app.call("POST", &path, None);
    assert_eq!(s, 201, "{b}");
    let (s, v) = app.call(
        "POST",
        &format!("/v1/backups/{}/verify", b["id"].as_str().expect("id")),
        None,
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("verified")), "{v}");
    let after = metrics(&app);
    assert_eq!(
        metric(&after, "tenantplane_backups{state=\"verified\"} "),
        Some(1.0)
    );
    assert!(
        metric(&after, "tenantplane_backup_bytes ").is_some_and(|n| n > 0.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "tenantplane_tenants_without_verified_backup "),
        Some(0.0)
    );
    // Fresh: in the first bucket (a day), counted once.
    assert_eq!(
        metric(
            &after,
            "tenantplane_tenant_verified_backup_age_seconds_bucket{le=\"86400\"} "
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "tenantplane_tenant_verified_backup_age_seconds_count "
        ),
        Some(1.0)
    );
    // A schedule that fires every second shows how late its fire was decided.
    let (s, v) = app.call(
        "POST",
        "/v1/schedules",
        Some(json!({"name": "often", "cron": "* * * * * *", "job": "export-cleanup"})),
    );
    assert_eq!(s, 201, "{v}");
    let lag = crate::common::wait_for("a fire time", std::time::Duration::from_secs(30), || {
        metric(
            &metrics(&app),
            "tenantplane_schedule_lag_seconds{schedule=\"often\"} ",
        )
    });
    assert!(lag >= 0.0, "{lag}");
}

/// `POST /v1/backups/retention` and `tenantplane backups retention`: a dry
/// run lists what would go and changes nothing; a run deletes only what a
/// newer verified backup covers, never a pinned one; bad policies are 4xx.
#[test]
fn retention_through_the_api_and_the_cli() {
    let app = App::start();
    let t = create_tenant(&app, "keeper", None);
    let tid = id(&t);
    let b: Vec<Value> = (0..4).map(|_| backup(&app, &tid)).collect();
    let (s, v) = app.call("POST", &format!("/v1/backups/{}/verify", id(&b[2])), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "verified", "{v}");
    let (s, p) = app.call("PUT", &format!("/v1/backups/{}/pin", id(&b[0])), None);
    assert_eq!(s, 200, "{p}");
    let states = |app: &App| -> Vec<(String, String)> {
        let (s, page) = app.call("GET", &format!("/v1/backups?tenant={tid}"), None);
        assert_eq!(s, 200, "{page}");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| (id(i), i["state"].as_str().expect("state").to_string()))
            .collect()
    };
    let before = states(&app);
    assert_eq!(before.len(), 4, "{before:?}");

    // Bad input: 4xx, nothing changed.
    for (body, status, code) in [
        (json!({"policy": {"keep_last": -1}}), 400, "bad_request"),
        (
            json!({"policy": {"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0}}),
            400,
            "bad_request",
        ),
        (
            json!({"selector": {"all": true}, "tenant": "keeper"}),
            422,
            "invalid",
        ),
        (json!({"tenant": "no-such-shop"}), 404, "not_found"),
        (json!({"keep_last": 2}), 400, "bad_request"),
    ] {
        let (s, e) = app.call("POST", "/v1/backups/retention", Some(body.clone()));
        assert_eq!(
            (s, error_code(&e)),
            (status, code.to_string()),
            "{body}: {e}"
        );
    }
    assert_eq!(states(&app), before);

    // keep_last 1: b[3] by the policy, b[2] as the newest verified, b[0]
    // pinned; only b[1] goes. A dry run says so and deletes nothing.
    let policy = json!({"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0});
    let (s, dry) = app.call(
        "POST",
        "/v1/backups/retention",
        Some(json!({"tenant": "keeper", "policy": policy, "dry_run": true})),
    );
    assert_eq!(s, 200, "{dry}");
    assert_eq!(
        (
            dry["dry_run"].clone(),
            dry["deleted"].clone(),
            dry["kept"].clone()
        ),
        (json!(true), json!(1), json!(3)),
        "{dry}"
    );
    let gone = &dry["tenants"][0]["deleted"];
    assert_eq!(gone.as_array().map(Vec::len), Some(1), "{dry}");
    assert_eq!(gone[0]["id"], id(&b[1]).as_str(), "{dry}");
    let reasons: Vec<(String, String)> = dry["tenants"][0]["kept"]
        .as_array()
        .expect("kept")
        .iter()
        .map(|d| (id(d), d["reason"].as_str().expect("reason").to_string()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (id(&b[3]), "keep-last".to_string()),
            (id(&b[2]), "newest verified".to_string()),
            (id(&b[0]), "pinned".to_string()),
        ]
    );
    assert_eq!(states(&app), before);
    assert!(artifact_path(&app, &b[1]).is_file());
    assert!(!audit_actions(&app, &tid)
        .iter()
        .any(|a| a == "backup.retention"));

    // The CLI runs it for real.
    let report = cli_json(
        &app,
        &[
            "backups",
            "retention",
            "--tenant",
            "keeper",
            "--keep-last",
            "1",
            "--daily",
            "0",
            "--weekly",
            "0",
            "--monthly",
            "0",
        ],
    );
    assert_eq!(
        (report["dry_run"].clone(), report["deleted"].clone()),
        (json!(false), json!(1)),
        "{report}"
    );
    let after: Vec<String> = states(&app).into_iter().map(|(i, _)| i).collect();
    assert_eq!(after, vec![id(&b[3]), id(&b[2]), id(&b[0])]);
    assert!(!artifact_path(&app, &b[1]).exists());
    assert!(artifact_path(&app, &b[0]).is_file());
    // The run over a selector is audited fleet-wide, its deletion per tenant.
    let (s, log) = app.call("GET", "/v1/audit", None);
    assert_eq!(s, 200, "{log}");
    let runs: Vec<&Value> = log
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "backup.retention")
        .collect();
    assert_eq!(runs.len(), 1, "{log}");
    assert!(audit_actions(&app, &tid)
        .iter()
        .any(|a| a == "backup.delete"));
}
