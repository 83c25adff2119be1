//! Tenant data exports: a tenant key (or an operator) asks for one, the
//! app's worker makes it, the download URL works without credentials and
//! holds the tenant's rows only, other tenants' keys do not see it, and an
//! expired export answers 410 and its file is deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::common::{call_as, error_code, wait_for, App};

fn simple(id: &str) -> String {
    id.replace('-', "")
}

fn create_tenant(app: &App, slug: &str) -> String {
    crate::common::create_tenant(app, json!({"slug": slug, "name": format!("Shop {slug}")}))
}

use crate::common::issue_key as key;

/// Writes into a SQLite tenant's database behind the API's back.
fn exec(app: &App, tenant_id: &str, sql: &str) {
    let path = app
        .data_dir
        .join("tenants")
        .join(format!("t_{}.db", simple(tenant_id)));
    assert!(path.exists(), "{} is missing", path.display());
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    c.batch_execute(sql).expect(sql);
}

/// Reads an export until it is no longer `requested`.
fn wait_ready(what: &str, mut read: impl FnMut() -> Value) -> Value {
    wait_for(what, Duration::from_secs(60), || {
        let e = read();
        (e["state"] != "requested").then_some(e)
    })
}

/// GET without any credential: status, headers we check, body bytes.
fn fetch(url: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = match ureq::get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let disposition = resp.header("Content-Disposition").map(str::to_string);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("body");
    (status, disposition, body)
}

fn unzip(dir: &Path, bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
    let path = dir.join(format!("{}.zip", uuid::Uuid::new_v4()));
    std::fs::write(&path, bytes).expect("write zip");
    tenantplane_backup::export::read_zip(&path).expect("a zip")
}

fn control_db(app: &App) -> tenantplane_control_db::ControlDb {
    tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        app.data_dir.join("control.db").display()
    ))
    .expect("control db")
}

fn artifact(app: &App, tenant_id: &str, export_id: &str) -> PathBuf {
    app.data_dir
        .join("backups")
        .join(tenantplane_backup::export::artifact_key(
            tenant_id, export_id,
        ))
}

#[test]
fn exports_hold_one_tenants_rows_and_expire() {
    let app = App::start();
    let a = create_tenant(&app, "export-a");
    let b = create_tenant(&app, "export-b");
    exec(
        &app,
        &a,
        "INSERT INTO shop_profile (name) VALUES ('alpha-only'), ('alpha, \"quoted\"')",
    );
    exec(
        &app,
        &b,
        "INSERT INTO shop_profile (name) VALUES ('beta-only')",
    );
    let (ka, kb) = (key(&app, &a), key(&app, &b));
    let scratch = tempfile::tempdir().expect("tempdir");

    // Without a key: 401.
    let (s, e) = call_as(
        &app.url,
        None,
        "POST",
        "/v1/tenant/exports",
        Some(json!({"format": "json"})),
    );
    assert_eq!((s, error_code(&e).as_str()), (401, "unauthorized"));

    // The tenant asks with its key.
    let (s, e) = call_as(
        &app.url,
        Some(&ka),
        "POST",
        "/v1/tenant/exports",
        Some(json!({"format": "json"})),
    );
    assert_eq!(s, 202, "{e}");
    assert_eq!(e["state"], "requested");
    assert_eq!(e["tenant_id"], a.as_str());
    assert!(e.get("download_url").is_none(), "{e}");
    let id = e["id"].as_str().expect("id").to_string();
    let path = format!("/v1/tenant/exports/{id}");

    // Another tenant's key does not see it.
    let (s, e) = call_as(&app.url, Some(&kb), "GET", &path, None);
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"), "{e}");

    // The worker makes it ready; each read gives a fresh URL.
    let e = wait_ready("the JSON export", || {
        let (s, e) = call_as(&app.url, Some(&ka), "GET", &path, None);
        assert_eq!(s, 200, "{e}");
        e
    });
    assert_eq!(e["state"], "ready", "{e}");
    assert!(e["size_bytes"].as_i64().is_some_and(|n| n > 0), "{e}");
    assert!(e["expires_at"].is_string(), "{e}");
    let first = e["download_url"]
        .as_str()
        .expect("download_url")
        .to_string();
    let (s, e) = call_as(&app.url, Some(&ka), "GET", &path, None);
    assert_eq!(s, 200, "{e}");
    let url = e["download_url"]
        .as_str()
        .expect("download_url")
        .to_string();
    assert_ne!(first, url);
    let (s, _, body) = fetch(&first);
    assert_eq!(
        s,
        404,
        "a replaced URL stops working: {}",
        String::from_utf8_lossy(&body)
    );

    // The download needs no credential and holds tenant A's rows only.
    let (s, disposition, body) = fetch(&url);
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let disposition = disposition.expect("Content-Disposition");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(disposition.contains(&id), "{disposition}");
    let files = unzip(scratch.path(), &body);
    let shops: Value =
        serde_json::from_str(files.get("shop_profile.json").expect("shop_profile.json"))
            .expect("JSON");
    let names: Vec<&str> = shops
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"alpha-only"), "{names:?}");
    assert!(names.contains(&"alpha, \"quoted\""), "{names:?}");
    let everything = files.values().cloned().collect::<String>();
    assert!(!everything.contains("beta-only"), "tenant B's rows leaked");
    assert!(
        !files.keys().any(|f| f.starts_with("__diesel")),
        "{:?}",
        files.keys()
    );

    // An operator asks for tenant B's export as CSV.
    let (s, e) = app.call(
        "POST",
        &format!("/v1/tenants/{b}/exports"),
        Some(json!({"format": "csv"})),
    );
    assert_eq!(s, 202, "{e}");
    let b_id = e["id"].as_str().expect("id").to_string();
    let e = wait_ready("the CSV export", || {
        let (s, e) = app.call("GET", &format!("/v1/tenants/{b}/exports/{b_id}"), None);
        assert_eq!(s, 200, "{e}");
        e
    });
    assert_eq!(e["state"], "ready", "{e}");
    let (s, _, body) = fetch(e["download_url"].as_str().expect("download_url"));
    assert_eq!(s, 200);
    let files = unzip(scratch.path(), &body);
    let csv = files.get("shop_profile.csv").expect("shop_profile.csv");
    assert!(
        csv.lines()
            .next()
            .is_some_and(|h| h.split(',').any(|c| c == "name")),
        "{csv}"
    );
    assert!(csv.contains("beta-only"), "{csv}");
    assert!(
        !files.values().any(|t| t.contains("alpha-only")),
        "tenant A's rows leaked"
    );
    // Tenant A's key does not reach B's export, nor the operator's route.
    let (s, _) = call_as(
        &app.url,
        Some(&ka),
        "GET",
        &format!("/v1/tenant/exports/{b_id}"),
        None,
    );
    assert_eq!(s, 404);
    let (s, _) = app.call("GET", &format!("/v1/tenants/{a}/exports/{b_id}"), None);
    assert_eq!(s, 404);

    // Bad input.
    let (s, e) = call_as(
        &app.url,
        Some(&ka),
        "POST",
        "/v1/tenant/exports",
        Some(json!({"format": "xml"})),
    );
    assert!(s == 400 || s == 422, "{s} {e}");
    error_code(&e);
    let (s, e) = call_as(&app.url, Some(&ka), "GET", "/v1/tenant/exports/nope", None);
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"));
    let (s, _, _) = fetch(&format!("{}/v1/exports/download/tp_ex_unknown", app.url));
    assert_eq!(s, 404);

    // Expiry: past `expires_at` the URL answers 410, and the cleanup
    // deletes the file.
    let file = artifact(&app, &a, &id);
    assert!(file.exists(), "{}", file.display());
    let db = control_db(&app);
    {
        let mut conn = db.conn().expect("conn");
        if let tenantplane_control_db::ControlConnection::Sqlite(c) = &mut *conn {
            c.batch_execute(&format!(
                "UPDATE exports SET expires_at = '2000-01-01 00:00:00' WHERE id = '{id}'"
            ))
            .expect("expire");
        }
    }
    let (s, _, body) = fetch(&url);
    assert_eq!(s, 410, "{}", String::from_utf8_lossy(&body));
    let store = tenantplane_backup::FileStore::new(app.data_dir.join("backups")).expect("store");
    // The app's worker may get there first.
    let _ = tenantplane_backup::export::expire(&db, &store, chrono::Utc::now().naive_utc())
        .expect("cleanup");
    assert!(!file.exists(), "{} was not deleted", file.display());
    let (s, e) = call_as(&app.url, Some(&ka), "GET", &path, None);
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["state"], "expired", "{e}");
    assert!(e.get("download_url").is_none(), "{e}");
    let (s, _, _) = fetch(&url);
    assert_eq!(s, 410);
    // Tenant B's export is untouched.
    assert!(artifact(&app, &b, &b_id).exists());

    // A suspended tenant's key may read but not request.
    let (s, t) = app.call(
        "PATCH",
        &format!("/v1/tenants/{a}"),
        Some(json!({"status": "suspended"})),
    );
    assert_eq!(s, 200, "{t}");
    let (s, e) = call_as(
        &app.url,
        Some(&ka),
        "POST",
        "/v1/tenant/exports",
        Some(json!({"format": "csv"})),
    );
    assert_eq!(
        (s, error_code(&e)),
        (403, "tenant_suspended".to_string()),
        "{e}"
    );
}

#[test]
fn exports_work_with_a_postgres_control_database() {
    let Some(pg) = crate::common::TestPg::new() else {
        return;
    };
    let app = App::start_with_control(Some(pg.url()));
    let t = create_tenant(&app, "export-pg");
    exec(
        &app,
        &t,
        "INSERT INTO shop_profile (name) VALUES ('on-pg-control')",
    );
    let k = key(&app, &t);
    let (s, e) = call_as(
        &app.url,
        Some(&k),
        "POST",
        "/v1/tenant/exports",
        Some(json!({"format": "csv"})),
    );
    assert_eq!(s, 202, "{e}");
    let path = format!("/v1/tenant/exports/{}", e["id"].as_str().expect("id"));
    let e = wait_ready("the export", || {
        let (s, e) = call_as(&app.url, Some(&k), "GET", &path, None);
        assert_eq!(s, 200, "{e}");
        e
    });
    assert_eq!(e["state"], "ready", "{e}");
    let (s, _, body) = fetch(e["download_url"].as_str().expect("download_url"));
    assert_eq!(s, 200);
    let scratch = tempfile::tempdir().expect("tempdir");
    let files = unzip(scratch.path(), &body);
    assert!(
        files
            .get("shop_profile.csv")
            .is_some_and(|c| c.contains("on-pg-control")),
        "{files:?}"
    );
}
