//! A tenant whose database cannot be provisioned leaves nothing behind: no
//! row, no file, no schema, no database.

use crate::common::{error_code, App, TestPg};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::json;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn assert_no_tenants(app: &App) {
    let (s, page) = app.call("GET", "/v1/tenants?limit=500", None);
    assert_eq!(s, 200);
    assert_eq!(page["items"], json!([]), "no tenant row was kept");
    let (_, e) = app.call("GET", "/v1/tenants/doomed", None);
    assert_eq!(error_code(&e), "not_found");
    let (_, servers) = app.call("GET", "/v1/servers", None);
    for s in servers.as_array().expect("servers") {
        assert_eq!(s["tenants"], 0, "{s}");
    }
}

#[test]
fn unwritable_sqlite_directory() {
    let app = App::start();
    let dir = app.data_dir.join("shards");
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({
            "name": "shards", "kind": "sqlite", "url": format!("sqlite://{}", dir.display())
        })),
    );
    assert_eq!(s, 201, "{srv}");
    // The directory turns into a file (root ignores permission bits, so a
    // chmod would not make it unwritable here).
    std::fs::remove_dir(&dir).expect("rmdir");
    std::fs::write(&dir, b"not a directory").expect("write");

    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "doomed", "name": "D", "server": "shards"})),
    );
    assert_eq!(
        (s, error_code(&e).as_str()),
        (503, "tenant_database"),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("doomed"),
        "the error names the tenant: {e}"
    );
    assert_no_tenants(&app);
    // The slug is free again.
    std::fs::remove_file(&dir).expect("rm");
    std::fs::create_dir(&dir).expect("mkdir");
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "doomed", "name": "D", "server": "shards"})),
    );
    assert_eq!(s, 201, "{t}");
}

#[test]
fn postgres_server_gone() {
    let Some(pg) = TestPg::new() else { return };
    let app = App::start();
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    pg.connect_admin()
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", pg.name))
        .expect("drop");
    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "doomed", "name": "D", "server": "pg"})),
    );
    assert_eq!(
        (s, error_code(&e).as_str()),
        (503, "tenant_database"),
        "{e}"
    );
    assert_no_tenants(&app);
}

#[test]
fn postgres_migration_fails_half_way() {
    let Some(pg) = TestPg::new() else { return };
    // An event trigger in the server's database makes every CREATE TABLE fail,
    // so the schema gets created and the first migration fails.
    pg.connect()
        .batch_execute(
            "CREATE FUNCTION refuse_tables() RETURNS event_trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'tables are refused here'; END $$; \
             CREATE EVENT TRIGGER refuse_tables ON ddl_command_end WHEN TAG IN ('CREATE TABLE') \
             EXECUTE FUNCTION refuse_tables();",
        )
        .expect("event trigger");
    let app = App::start();
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "doomed", "name": "D", "server": "pg"})),
    );
    assert_eq!(
        (s, error_code(&e).as_str()),
        (503, "tenant_database"),
        "{e}"
    );
    // The body names the tenant and what failed, in our words (here diesel's
    // own bookkeeping table is the first CREATE TABLE refused); the server's
    // text (the event trigger's message) stays in the log.
    let message = e["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("tenant doomed: migrating failed: "),
        "{message}"
    );
    assert!(!message.contains("tables are refused here"), "{message}");
    assert_no_tenants(&app);
    let schemas =
        diesel::sql_query("SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 't\\_%'")
            .get_result::<Count>(&mut pg.connect())
            .expect("count")
            .n;
    assert_eq!(schemas, 0, "the half-created schema was dropped");
}
