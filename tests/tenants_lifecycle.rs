//! The whole tenant lifecycle on each kind of database server, with the
//! control database on SQLite and on PostgreSQL.

use crate::common::{App, TestPg};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde_json::{json, Value};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .expect(sql)
        .n
}

fn head_migrations() -> i64 {
    tenantplane_migrations::catalogue::versions().len() as i64
}

fn simple(id: &str) -> String {
    id.replace('-', "")
}

/// How the test looks at the tenant database itself.
enum Probe<'a> {
    SqliteDir(std::path::PathBuf),
    PgSchema(&'a TestPg),
    PgDatabase(&'a TestPg),
}

impl Probe<'_> {
    /// `Some(applied migrations)` when the tenant database exists.
    fn applied(&self, tenant_id: &str) -> Option<i64> {
        let name = format!("t_{}", simple(tenant_id));
        match self {
            Probe::SqliteDir(dir) => {
                let path = dir.join(format!("{name}.db"));
                if !path.exists() {
                    return None;
                }
                let mut c =
                    SqliteConnection::establish(&path.to_string_lossy()).expect("open tenant file");
                let has: i64 = diesel::sql_query(
                    "SELECT count(*) AS n FROM sqlite_master WHERE name = '__diesel_schema_migrations'",
                )
                .get_result::<Count>(&mut c)
                .expect("sqlite_master")
                .n;
                if has == 0 {
                    return Some(0);
                }
                Some(
                    diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
                        .get_result::<Count>(&mut c)
                        .expect("count")
                        .n,
                )
            }
            Probe::PgSchema(pg) => {
                let mut c = pg.connect();
                if count(
                    &mut c,
                    &format!("SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{name}'"),
                ) == 0
                {
                    return None;
                }
                if count(&mut c, &format!("SELECT count(*) AS n FROM pg_tables WHERE schemaname = '{name}' AND tablename = '__diesel_schema_migrations'")) == 0 {
                    return Some(0);
                }
                Some(count(
                    &mut c,
                    &format!("SELECT count(*) AS n FROM \"{name}\".__diesel_schema_migrations"),
                ))
            }
            Probe::PgDatabase(pg) => {
                let mut admin = pg.connect_admin();
                if count(
                    &mut admin,
                    &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"),
                ) == 0
                {
                    return None;
                }
                let mut c =
                    PgConnection::establish(&pg.url_of(&name)).expect("connect tenant database");
                if count(&mut c, "SELECT count(*) AS n FROM pg_tables WHERE tablename = '__diesel_schema_migrations'") == 0 {
                    return Some(0);
                }
                Some(count(
                    &mut c,
                    "SELECT count(*) AS n FROM __diesel_schema_migrations",
                ))
            }
        }
    }
}

/// Runs create → read → list → patch → suspend → resume → delete against
/// `server` and checks the tenant database at each step.
fn lifecycle(app: &App, server: &str, probe: &Probe, pg: Option<&TestPg>) {
    let slug = format!("shop-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (status, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({
            "slug": slug, "name": "Corner Shop", "labels": {"region": "eu-west", "tier": "small"},
            "contact_email": "owner@corner.example", "server": server,
        })),
    );
    assert_eq!(status, 201, "{t}");
    let id = t["id"].as_str().expect("id").to_string();
    if let (Probe::PgDatabase(_), Some(pg)) = (probe, pg) {
        pg.also_drop(&format!("t_{}", simple(&id)));
    }
    assert_eq!(t["slug"], slug);
    assert_eq!(t["status"], "active");
    assert_eq!(t["server"], server);
    assert_eq!(t["labels"], json!({"region": "eu-west", "tier": "small"}));
    assert_eq!(
        t["schema_version"].as_str(),
        tenantplane_migrations::catalogue::head()
    );
    assert_eq!(t["phase"], 7);
    assert!(
        t["created_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{t}"
    );
    assert_eq!(
        probe.applied(&id),
        Some(head_migrations()),
        "tenant database migrated to head"
    );

    // Read by id and by slug.
    let (s, by_id) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(s, 200);
    let (s, by_slug) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
    assert_eq!(s, 200);
    assert_eq!(by_id, by_slug);
    assert_eq!(by_id, t);

    // List with filters.
    let (s, page) = app.call(
        "GET",
        &format!("/v1/tenants?label=region=eu-west&server={server}"),
        None,
    );
    assert_eq!(s, 200);
    assert!(page["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|i| i["id"] == id.as_str()));
    let (_, page) = app.call("GET", "/v1/tenants?label=region=us-east", None);
    assert!(!page["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|i| i["id"] == id.as_str()));

    // Patch.
    let (s, p) = app.call(
        "PATCH",
        &format!("/v1/tenants/{slug}"),
        Some(json!({
            "name": "Corner Shop Ltd", "labels": {"region": "us-east"}, "contact_email": ""
        })),
    );
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["name"], "Corner Shop Ltd");
    assert_eq!(p["labels"], json!({"region": "us-east"}));
    assert_eq!(p["contact_email"], Value::Null);

    // Suspend and resume.
    let (s, p) = app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"status": "suspended"})),
    );
    assert_eq!((s, p["status"].as_str()), (200, Some("suspended")));
    let (_, page) = app.call("GET", "/v1/tenants?status=suspended", None);
    assert!(page["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|i| i["id"] == id.as_str()));
    let (s, p) = app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"status": "active"})),
    );
    assert_eq!((s, p["status"].as_str()), (200, Some("active")));

    // The server counts it.
    let (_, servers) = app.call("GET", "/v1/servers", None);
    let srv = servers
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["name"] == server)
        .cloned()
        .expect("server listed");
    assert!(srv["tenants"].as_i64().expect("count") >= 1);

    // Soft delete: hidden, database kept, slug reserved.
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{id}"), None);
    assert_eq!(s, 204);
    let (s, e) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(
        (s, crate::common::error_code(&e).as_str()),
        (404, "not_found")
    );
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{id}"), None);
    assert_eq!(s, 404);
    let (_, page) = app.call("GET", "/v1/tenants?limit=500", None);
    assert!(!page["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|i| i["id"] == id.as_str()));
    assert_eq!(
        probe.applied(&id),
        Some(head_migrations()),
        "soft delete keeps the tenant database"
    );
    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": slug, "name": "Again", "server": server})),
    );
    assert_eq!(
        (s, crate::common::error_code(&e).as_str()),
        (409, "conflict")
    );

    // A tenant with an empty schema.
    let (s, empty) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({
            "slug": format!("{slug}-e"), "name": "Empty", "server": server, "schema": "none"
        })),
    );
    assert_eq!(s, 201, "{empty}");
    let eid = empty["id"].as_str().expect("id");
    if let (Probe::PgDatabase(_), Some(pg)) = (probe, pg) {
        pg.also_drop(&format!("t_{}", simple(eid)));
    }
    assert_eq!(empty["schema_version"], Value::Null);
    assert_eq!(empty["phase"], Value::Null);
    assert_eq!(probe.applied(eid), Some(0));
}

fn register(app: &App, body: Value) -> String {
    let (s, srv) = app.call("POST", "/v1/servers", Some(body));
    assert_eq!(s, 201, "{srv}");
    srv["name"].as_str().expect("name").to_string()
}

#[test]
fn lifecycle_on_sqlite_server_with_sqlite_control() {
    let app = App::start();
    let probe = Probe::SqliteDir(app.data_dir.join("tenants"));
    lifecycle(&app, "default", &probe, None);
}

#[test]
fn lifecycle_on_sqlite_server_with_postgres_control() {
    let Some(control) = TestPg::new() else { return };
    let app = App::start_with_control(Some(control.url()));
    let probe = Probe::SqliteDir(app.data_dir.join("tenants"));
    lifecycle(&app, "default", &probe, None);
}

#[test]
fn lifecycle_on_postgres_schema_server_with_sqlite_control() {
    let Some(pg) = TestPg::new() else { return };
    let app = App::start();
    let name = register(
        &app,
        json!({"name": "pg-schemas", "kind": "postgres", "url": pg.url(), "isolation": "schema"}),
    );
    lifecycle(&app, &name, &Probe::PgSchema(&pg), Some(&pg));
}

#[test]
fn lifecycle_on_postgres_schema_server_with_postgres_control() {
    let (Some(control), Some(pg)) = (TestPg::new(), TestPg::new()) else {
        return;
    };
    let app = App::start_with_control(Some(control.url()));
    let name = register(
        &app,
        json!({"name": "pg-schemas", "kind": "postgres", "url": pg.url()}),
    );
    lifecycle(&app, &name, &Probe::PgSchema(&pg), Some(&pg));
}

#[test]
fn lifecycle_on_postgres_database_server_with_postgres_control() {
    let (Some(control), Some(pg)) = (TestPg::new(), TestPg::new()) else {
        return;
    };
    let app = App::start_with_control(Some(control.url()));
    let name = register(
        &app,
        json!({"name": "pg-dbs", "kind": "postgres", "url": pg.url(), "isolation": "database"}),
    );
    lifecycle(&app, &name, &Probe::PgDatabase(&pg), Some(&pg));
}

#[test]
fn lifecycle_on_postgres_database_server_with_sqlite_control() {
    let Some(pg) = TestPg::new() else { return };
    let app = App::start();
    let name = register(
        &app,
        json!({"name": "pg-dbs", "kind": "postgres", "url": pg.url(), "isolation": "database"}),
    );
    lifecycle(&app, &name, &Probe::PgDatabase(&pg), Some(&pg));
}

#[test]
fn new_tenants_go_to_the_server_with_most_free_capacity() {
    let app = App::start();
    let dir = tempfile::tempdir().expect("dir");
    let roomy = register(
        &app,
        json!({"name": "roomy", "kind": "sqlite",
        "url": format!("sqlite://{}", dir.path().display()), "capacity": 100000}),
    );
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "placed-1", "name": "P", "schema": "none"})),
    );
    assert_eq!(s, 201, "{t}");
    assert_eq!(
        t["server"],
        roomy.as_str(),
        "roomy has more free capacity than default (10000)"
    );
    let probe = Probe::SqliteDir(dir.path().to_path_buf());
    assert_eq!(probe.applied(t["id"].as_str().expect("id")), Some(0));

    // A full server refuses an explicit placement.
    let small_dir = tempfile::tempdir().expect("dir");
    let tiny = register(
        &app,
        json!({"name": "tiny", "kind": "sqlite",
        "url": format!("sqlite://{}", small_dir.path().display()), "capacity": 1}),
    );
    let (s, _) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "tiny-1", "name": "T", "server": tiny, "schema": "none"})),
    );
    assert_eq!(s, 201);
    let (s, e) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "tiny-2", "name": "T", "server": tiny, "schema": "none"})),
    );
    assert_eq!(
        (s, crate::common::error_code(&e).as_str()),
        (409, "conflict"),
        "{e}"
    );
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("full"));
}

#[test]
fn pagination_and_filters() {
    let app = App::start();
    for i in 0..7 {
        let schema = if i % 2 == 0 { "none" } else { "phase:0" };
        let (s, t) = app.call(
            "POST",
            "/v1/tenants",
            Some(json!({
                "slug": format!("page-{i:02}"), "name": format!("Shop {i}"),
                "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}, "schema": schema,
            })),
        );
        assert_eq!(s, 201, "{t}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants?limit=3&cursor={c}"),
            None => "/v1/tenants?limit=3".to_string(),
        };
        let (s, page) = app.call("GET", &path, None);
        assert_eq!(s, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|i| i["slug"].as_str().expect("slug").to_string()),
        );
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..7).map(|i| format!("page-{i:02}")).collect();
    assert_eq!(seen, want, "every tenant exactly once, in slug order");

    let slugs = |path: &str| -> Vec<String> {
        let (s, page) = app.call("GET", path, None);
        assert_eq!(s, 200, "{path}: {page}");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["slug"].as_str().expect("slug").to_string())
            .collect()
    };
    assert_eq!(
        slugs("/v1/tenants?label=parity=odd"),
        ["page-01", "page-03", "page-05"]
    );
    assert_eq!(
        slugs("/v1/tenants?label=parity=odd&label=parity=even"),
        Vec::<String>::new()
    );
    assert_eq!(
        slugs("/v1/tenants?phase=0"),
        ["page-01", "page-03", "page-05"]
    );
    assert_eq!(slugs("/v1/tenants?phase=3"), Vec::<String>::new());
    assert_eq!(slugs("/v1/tenants?server=default&status=active").len(), 7);
}

#[test]
fn create_migrates_to_the_requested_schema_target() {
    use tenantplane_migrations::catalogue;
    let app = App::start();
    let probe = Probe::SqliteDir(app.data_dir.join("tenants"));
    let position = |v: &str| {
        catalogue::versions()
            .iter()
            .position(|m| m.version == v)
            .expect("known") as i64
            + 1
    };
    let third = catalogue::versions()[2].version.clone();
    let cases = [
        (
            "phase:2",
            catalogue::phase_version(2).map(str::to_string),
            Some(2),
        ),
        (
            "phase:5",
            catalogue::phase_version(5).map(str::to_string),
            Some(6),
        ),
        (&*format!("version:{third}"), Some(third.clone()), None),
        ("head", catalogue::head().map(str::to_string), Some(7)),
    ];
    for (i, (schema, version, phase)) in cases.into_iter().enumerate() {
        let (s, t) = app.call(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": format!("target-{i}"), "name": "T", "schema": schema})),
        );
        assert_eq!(s, 201, "{schema}: {t}");
        assert_eq!(t["schema_version"].as_str(), version.as_deref(), "{schema}");
        assert_eq!(t["phase"].as_u64().map(|p| p as u8), phase, "{schema}");
        let id = t["id"].as_str().expect("id");
        assert_eq!(
            probe.applied(id),
            version.as_deref().map(position),
            "{schema}: migrations applied"
        );
    }
}
