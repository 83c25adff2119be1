//! Drift detection end to end: tenants whose schema was changed by hand (an
//! index added, a column dropped, a default changed) are each reported with
//! the exact difference, on SQLite and on PostgreSQL; an untouched tenant
//! reports none; a rollout fails the drifted tenants with their differences
//! and migrates the others; `allow_drift: true` lets them through; the
//! `drift` job (from `POST /v1/drift` or a schedule) flags drifted tenants.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{json, Value};
use tenantplane_migrations::catalogue;

use crate::common::{create_tenant, error_code, wait_for, App, AppOptions, TestPg};

const LONG: Duration = Duration::from_secs(120);

/// Where the fleet starts: phase 4, so a rollout to head has work to do.
const START: &str = "phase:4";

fn head() -> String {
    catalogue::versions()
        .last()
        .map(|m| m.version.clone())
        .expect("versions")
}

fn serve() -> App {
    App::start_with(AppOptions {
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "4".into())],
        ..AppOptions::default()
    })
}

/// The four tenants of each backend and the exact differences each must
/// report.
const CASES: &[(&str, &[&str])] = &[
    ("clean", &[]),
    ("indexed", &["index sales_by_day_idx: added"]),
    ("dropped", &["column expenses.description: missing"]),
    (
        "defaulted",
        &["column sales.discount_minor default: '0' → '5'"],
    ),
];

/// Creates the four tenants (`extra`: e.g. the server); returns (slug, id).
fn fleet(app: &App, prefix: &str, extra: Value) -> Vec<(String, String)> {
    CASES
        .iter()
        .map(|(case, _)| {
            let slug = format!("{prefix}-{case}");
            let mut body = json!({"slug": slug, "name": slug, "schema": START});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            (slug, create_tenant(app, body))
        })
        .collect()
}

fn drift(app: &App, tenant: &str) -> Value {
    let (s, r) = app.call("GET", &format!("/v1/tenants/{tenant}/drift"), None);
    assert_eq!(s, 200, "{r}");
    r
}

fn texts(report: &Value) -> Vec<String> {
    report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| d["text"].as_str().expect("text").to_string())
        .collect()
}

/// Every case reports exactly its differences, and the tenant JSON flags it.
fn assert_reports(app: &App, tenants: &[(String, String)], backend: &str) {
    for ((slug, _), (_, want)) in tenants.iter().zip(CASES) {
        let r = drift(app, slug);
        assert_eq!(r["backend"], backend, "{r}");
        assert_eq!(texts(&r), *want, "{slug}: {r}");
        assert_eq!(r["drifted"], !want.is_empty(), "{r}");
        let (_, t) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
        assert_eq!(t["drift"]["drifted"], !want.is_empty(), "{t}");
        assert_eq!(t["drift"]["differences"], want.len(), "{t}");
    }
    // The structured form of one difference.
    let r = drift(app, &tenants[3].0);
    let d = &r["differences"][0];
    assert_eq!(
        (
            &d["object"],
            &d["change"],
            &d["aspect"],
            &d["expected"],
            &d["actual"]
        ),
        (
            &json!("column sales.discount_minor"),
            &json!("changed"),
            &json!("default"),
            &json!("0"),
            &json!("5")
        ),
        "{r}"
    );
}

fn rollout(app: &App, body: Value) -> Value {
    let (s, r) = app.call("POST", "/v1/rollouts", Some(body));
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().expect("id").to_string();
    wait_for("the rollout to finish", LONG, || {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{id}"), None);
        ["succeeded", "failed", "halted"]
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    })
}

fn tasks(app: &App, rollout: &Value) -> Vec<Value> {
    let id = rollout["id"].as_str().expect("id");
    let (s, page) = app.call("GET", &format!("/v1/rollouts/{id}/tasks?limit=100"), None);
    assert_eq!(s, 200, "{page}");
    page["items"].as_array().cloned().expect("items")
}

fn version_of(app: &App, slug: &str) -> Option<String> {
    let (_, t) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
    t["schema_version"].as_str().map(str::to_string)
}

/// A rollout without `allow_drift` fails the three drifted tenants with
/// their differences and migrates the clean one; a second one with
/// `allow_drift: true` migrates the rest.
fn assert_rollouts(app: &App, tenants: &[(String, String)], selector: Value) {
    let start = version_of(app, &tenants[0].0);
    let r = rollout(
        app,
        json!({"target": "head", "selector": selector, "failure_budget": {"max_failed": 100}}),
    );
    assert_eq!(r["allow_drift"], false, "{r}");
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["counts"]["succeeded"], 1, "{r}");
    assert_eq!(r["counts"]["failed"], 3, "{r}");
    let tasks = tasks(app, &r);
    for ((slug, id), (_, want)) in tenants.iter().zip(CASES) {
        let task = tasks
            .iter()
            .find(|t| t["tenant_id"] == id.as_str())
            .expect("task");
        if want.is_empty() {
            assert_eq!(task["state"], "succeeded", "{task}");
            assert_eq!(version_of(app, slug), Some(head()));
            continue;
        }
        assert_eq!(task["state"], "failed", "{task}");
        assert_eq!(task["attempts"], 1, "drift is permanent: {task}");
        let error = task["last_error"].as_str().expect("error");
        assert!(error.contains("schema drift"), "{error}");
        for line in *want {
            assert!(error.contains(line), "{slug}: '{line}' not in: {error}");
        }
        assert_eq!(version_of(app, slug), start, "{slug} was not migrated");
    }

    let drifted: Vec<&str> = tenants[1..].iter().map(|(s, _)| s.as_str()).collect();
    let r = rollout(
        app,
        json!({"target": "head", "selector": {"tenants": drifted}, "allow_drift": true}),
    );
    assert_eq!(r["allow_drift"], true, "{r}");
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["counts"]["succeeded"], 3, "{r}");
    for slug in drifted {
        assert_eq!(version_of(app, slug), Some(head()), "{slug}");
    }
}

/// The changes made by hand to a SQLite tenant file.
fn tamper_sqlite(app: &App, id: &str, case: &str) {
    let path = app
        .data_dir
        .join("tenants")
        .join(format!("t_{}.db", id.replace('-', "")));
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    match case {
        "indexed" => c
            .batch_execute("CREATE INDEX sales_by_day_idx ON sales (sold_at)")
            .expect("index"),
        "dropped" => c
            .batch_execute("ALTER TABLE expenses DROP COLUMN description")
            .expect("drop"),
        "defaulted" => {
            // SQLite has no ALTER COLUMN … SET DEFAULT: edit the stored
            // CREATE text, as a hand-made table rebuild would leave it.
            c.batch_execute(
                "PRAGMA writable_schema = ON;
                 UPDATE sqlite_schema
                    SET sql = replace(sql, 'discount_minor  BIGINT    NOT NULL DEFAULT 0,',
                                           'discount_minor  BIGINT    NOT NULL DEFAULT 5,')
                  WHERE type = 'table' AND name = 'sales';
                 PRAGMA writable_schema = OFF;",
            )
            .expect("default");
            #[derive(QueryableByName)]
            struct Sql {
                #[diesel(sql_type = diesel::sql_types::Text)]
                sql: String,
            }
            let sql: Sql = diesel::sql_query("SELECT sql FROM sqlite_schema WHERE name = 'sales'")
                .get_result(
                    &mut SqliteConnection::establish(&path.to_string_lossy()).expect("open"),
                )
                .expect("sql");
            assert!(sql.sql.contains("DEFAULT 5"), "the edit took: {}", sql.sql);
        }
        _ => {}
    }
}

fn tamper_pg(conn: &mut PgConnection, schema: &str, case: &str) {
    let sql = match case {
        "indexed" => "CREATE INDEX sales_by_day_idx ON sales (sold_at)",
        "dropped" => "ALTER TABLE expenses DROP COLUMN description",
        "defaulted" => "ALTER TABLE sales ALTER COLUMN discount_minor SET DEFAULT 5",
        _ => return,
    };
    conn.batch_execute(&format!(
        "SET search_path TO \"{schema}\"; {sql}; RESET search_path"
    ))
    .expect("tamper");
}

#[test]
fn sqlite_tenants_report_their_exact_drift_and_rollouts_refuse_them() {
    let app = serve();
    let tenants = fleet(&app, "lite", json!({}));
    for ((_, id), (case, _)) in tenants.iter().zip(CASES) {
        tamper_sqlite(&app, id, case);
    }
    assert_reports(&app, &tenants, "sqlite");
    assert_rollouts(&app, &tenants, json!({"all": true}));
    // After the forced migration the drift is still there, now against head.
    assert_eq!(texts(&drift(&app, &tenants[1].0)), CASES[1].1);
    assert_eq!(texts(&drift(&app, &tenants[0].0)), Vec::<String>::new());
}

#[test]
fn postgres_tenants_report_their_exact_drift_and_rollouts_refuse_them() {
    let Some(pg) = TestPg::new() else { return };
    let app = serve();
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let tenants = fleet(&app, "pg", json!({"server": "pg"}));
    let mut conn = pg.connect();
    for ((_, id), (case, _)) in tenants.iter().zip(CASES) {
        tamper_pg(&mut conn, &format!("t_{}", id.replace('-', "")), case);
    }
    assert_reports(&app, &tenants, "postgres");
    // A database per tenant (its schema is `public`): untouched, no drift.
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pgdb", "kind": "postgres", "url": pg.url(), "isolation": "database"})),
    );
    assert_eq!(s, 201, "{srv}");
    let own = create_tenant(
        &app,
        json!({"slug": "pgdb-clean", "name": "x", "server": "pgdb", "schema": START}),
    );
    pg.also_drop(&format!("t_{}", own.replace('-', "")));
    let r = drift(&app, "pgdb-clean");
    assert_eq!(texts(&r), Vec::<String>::new(), "{r}");
    // The references were built in transactions that were rolled back.
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let left: N = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 'drift_ref_%'",
    )
    .get_result(&mut conn)
    .expect("count");
    assert_eq!(left.n, 0, "no scratch schema is left behind");
    assert_rollouts(&app, &tenants, json!({"servers": ["pg"]}));
}

#[test]
fn the_drift_job_checks_a_selection_and_flags_the_drifted() {
    let app = serve();
    let clean = create_tenant(
        &app,
        json!({"slug": "job-clean", "name": "x", "labels": {"tier": "gold"}}),
    );
    let indexed = create_tenant(
        &app,
        json!({"slug": "job-indexed", "name": "x", "labels": {"tier": "gold"}}),
    );
    let other = create_tenant(
        &app,
        json!({"slug": "job-other", "name": "x", "labels": {"tier": "free"}}),
    );
    tamper_sqlite(&app, &indexed, "indexed");
    tamper_sqlite(&app, &other, "indexed");

    // Bad input changes nothing.
    for (body, status) in [
        (json!({"selector": {}}), 422),
        (json!({"selector": {"tenants": ["nobody"]}}), 422),
        (json!({"selector": {"labels": {"tier": "none"}}}), 422),
        (json!({"selector": {"all": true}, "extra": 1}), 400),
        (json!({"nothing": true}), 400),
    ] {
        let (s, e) = app.call("POST", "/v1/drift", Some(body.clone()));
        assert_eq!(s, status, "{body}: {e}");
        assert!(!error_code(&e).is_empty(), "{e}");
    }
    let (_, none) = app.call("GET", "/v1/drift", None);
    assert_eq!(none["items"], json!([]), "nothing was checked: {none}");

    let (s, q) = app.call(
        "POST",
        "/v1/drift",
        Some(json!({"selector": {"labels": {"tier": "gold"}}})),
    );
    assert_eq!(s, 202, "{q}");
    assert_eq!(q["tenants"], 2, "{q}");
    assert!(q["job_id"].as_i64().is_some(), "{q}");
    let checked = wait_for("both gold tenants to be checked", LONG, || {
        let (_, page) = app.call("GET", "/v1/drift", None);
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    });
    let by_id = |id: &str| {
        checked
            .iter()
            .find(|r| r["tenant_id"] == id)
            .cloned()
            .expect("checked")
    };
    assert_eq!(texts(&by_id(&indexed)), CASES[1].1);
    assert_eq!(by_id(&clean)["drifted"], false);
    let (_, drifted) = app.call("GET", "/v1/drift?drifted=true", None);
    let ids: Vec<&str> = drifted["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["tenant_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![indexed.as_str()],
        "only the selection was checked: {drifted}"
    );
    let (_, t) = app.call("GET", &format!("/v1/tenants/{other}"), None);
    assert_eq!(t["drift"], Value::Null, "not selected, not checked: {t}");

    // A schedule of job `drift` runs the same fan-out.
    let (s, sch) = app.call(
        "POST",
        "/v1/schedules",
        Some(
            json!({"name": "drift-free", "cron": "* * * * * *", "timezone": "UTC",
            "job": "drift", "selector": {"labels": {"tier": "free"}}}),
        ),
    );
    assert_eq!(s, 201, "{sch}");
    let t = wait_for("the scheduled check of the free tenant", LONG, || {
        let (_, t) = app.call("GET", &format!("/v1/tenants/{other}"), None);
        (!t["drift"].is_null()).then_some(t)
    });
    assert_eq!(t["drift"]["drifted"], true, "{t}");
    assert_eq!(t["drift"]["differences"], 1, "{t}");
}

/// `tenantplane drift` prints each tenant's differences and exits 1 when a
/// tenant drifted; `--queue` queues the job; `--last` shows what it found.
#[test]
fn the_cli_prints_the_differences_and_fails_on_drift() {
    let app = serve();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::common::bin())
            .args(args)
            .env("TENANTPLANE_URL", &app.url)
            .env("TENANTPLANE_TOKEN", crate::common::TOKEN)
            .output()
            .expect("run cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    create_tenant(
        &app,
        json!({"slug": "cli-clean", "name": "x", "labels": {"team": "a"}}),
    );
    let indexed = create_tenant(
        &app,
        json!({"slug": "cli-indexed", "name": "x", "labels": {"team": "a"}}),
    );
    create_tenant(
        &app,
        json!({"slug": "cli-other", "name": "x", "labels": {"team": "b"}}),
    );
    tamper_sqlite(&app, &indexed, "indexed");

    let (code, out, _) = cli(&["drift", "--tenant", "cli-clean"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), format!("cli-clean: no drift from {}", head()));

    let (code, out, err) = cli(&["drift", "--label", "team=a"]);
    assert_eq!(code, Some(1), "a drifted tenant fails the command: {out}");
    assert!(
        out.contains(&format!(
            "cli-indexed: 1 differences from {}\n  index sales_by_day_idx: added",
            head()
        )),
        "{out}"
    );
    assert!(out.contains("cli-clean: no drift"), "{out}");
    assert!(
        !out.contains("cli-other"),
        "only the label's tenants: {out}"
    );
    assert!(err.contains("1 of 2 tenants drifted"), "{err}");

    let (code, out, err) = cli(&["drift"]);
    assert_ne!(code, Some(0), "which tenants must be said: {out}");
    assert!(err.contains("--all"), "{err}");

    let (code, out, _) = cli(&["drift", "--all", "--queue"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("over 3 tenants"), "{out}");
    wait_for("the queued checks", LONG, || {
        let (_, page) = app.call("GET", "/v1/drift", None);
        (page["items"].as_array().map(Vec::len) == Some(3)).then_some(())
    });
    let (code, out, _) = cli(&["--output", "json", "drift", "--last"]);
    assert_eq!(code, Some(1), "{out}");
    let reports: Value = serde_json::from_str(&out).expect("json");
    let drifted: Vec<&str> = reports
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["drifted"] == true)
        .filter_map(|r| r["slug"].as_str())
        .collect();
    assert_eq!(drifted, vec!["cli-indexed"]);
}

/// A run proves what it changed; `verify: "full"` proves every probe of the
/// target. Two phase-4 tenants lose their `recommendations` table by hand
/// (a table phase 7 does not touch; `allow_drift` lets both through the
/// drift gate): the default rollout migrates the first, whose run proves
/// only what phase 7 changed, and the full one fails the second on the
/// `recommendations` probe and leaves it at phase 4.
#[test]
fn rollouts_prove_what_each_run_changed_and_verify_full_proves_everything() {
    let app = serve();
    let start = catalogue::phase_version(4).map(str::to_string);
    let mut ids = Vec::new();
    for slug in ["proven-changed", "proven-full"] {
        let id = create_tenant(&app, json!({"slug": slug, "name": slug, "schema": START}));
        let path = app
            .data_dir
            .join("tenants")
            .join(format!("t_{}.db", id.replace('-', "")));
        SqliteConnection::establish(&path.to_string_lossy())
            .expect("open")
            .batch_execute("DROP TABLE recommendations")
            .expect("drop");
        ids.push(id);
    }

    let r = rollout(
        &app,
        json!({"target": "head", "selector": {"tenants": ["proven-changed"]}, "allow_drift": true}),
    );
    assert_eq!(
        (&r["state"], &r["verify"]),
        (&json!("succeeded"), &json!(false)),
        "{r}"
    );
    assert_eq!(version_of(&app, "proven-changed"), Some(head()));

    let r = rollout(
        &app,
        json!({"target": "head", "selector": {"tenants": ["proven-full"]}, "allow_drift": true,
               "verify": "full"}),
    );
    assert_eq!(r["verify"], true, "{r}");
    assert_eq!(r["counts"]["failed"], 1, "{r}");
    let task = &tasks(&app, &r)[0];
    let error = task["last_error"].as_str().expect("error");
    assert!(error.contains("probe recommendations failed"), "{error}");
    assert_eq!(task["attempts"], 1, "a failed probe is permanent: {task}");
    assert_eq!(version_of(&app, "proven-full"), start, "rolled back whole");

    // `verify` takes a boolean, "changed" or "full", and nothing else.
    let (s, e) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"all": true}, "verify": "most"})),
    );
    assert_eq!((s, error_code(&e).as_str()), (400, "bad_request"), "{e}");
    assert!(e.to_string().contains(r#"\"changed\" or \"full\""#), "{e}");
}
