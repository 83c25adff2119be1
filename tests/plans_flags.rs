//! Plans, schema-aware feature flags, tenant keys, self-serve plan changes
//! and the audit log, through the real binary.

use std::time::Duration;

use crate::common::{call_as, error_code, wait_for, App, AppOptions, TestPg};
use serde_json::{json, Value};
use tenantplane_migrations::catalogue;

const LONG: Duration = Duration::from_secs(120);

fn serve() -> App {
    App::start_with(AppOptions {
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "2".into())],
        ..AppOptions::default()
    })
}

fn tenant(app: &App, slug: &str, plan: &str, schema: &str) -> String {
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": slug, "name": slug, "plan": plan, "schema": schema})),
    );
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["plan"], plan);
    t["id"].as_str().expect("id").to_string()
}

fn key(app: &App, tenant: &str) -> (String, String) {
    let (s, k) = app.call(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({"name": "till-1"})),
    );
    assert_eq!(s, 201, "{k}");
    (
        k["id"].as_str().expect("id").to_string(),
        k["key"].as_str().expect("key").to_string(),
    )
}

fn feature(features: &Value, name: &str) -> (bool, String) {
    let f = features["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|f| f["feature"] == name)
        .expect("feature listed");
    (
        f["enabled"].as_bool().expect("enabled"),
        f["reason"].as_str().expect("reason").to_string(),
    )
}

fn as_tenant(app: &App, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(&app.url, Some(key), method, path, body)
}

fn audit_count(app: &App) -> usize {
    let (s, a) = app.call("GET", "/v1/audit?limit=1000", None);
    assert_eq!(s, 200, "{a}");
    a.as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn default_plans_catalogue_and_plan_crud() {
    let app = serve();
    let (_, plans) = app.call("GET", "/v1/plans", None);
    let slugs: Vec<&str> = plans
        .as_array()
        .expect("plans")
        .iter()
        .filter_map(|p| p["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["free", "standard", "pro"]);
    let (_, cat) = app.call("GET", "/v1/features", None);
    assert_eq!(
        cat.as_array().map(Vec::len),
        Some(catalogue::FEATURES.len())
    );
    assert!(cat
        .as_array()
        .expect("catalogue")
        .iter()
        .any(|f| f["feature"] == "sales_heatmap" && f["phase"] == 2 && f["requires"].is_string()));
    let before = audit_count(&app);

    let body = json!({"slug": "kiosk", "name": "Kiosk", "price_cents": 990, "currency": "EUR", "features": ["branding", "premium_ui"], "fallback": "free"});
    let (s, p) = app.call("POST", "/v1/plans", Some(body.clone()));
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["fallback"], "free");
    let (s, _) = app.call("POST", "/v1/plans", Some(body));
    assert_eq!(s, 409);
    let (s, p) = app.call("PUT", "/v1/plans/kiosk", Some(json!({"slug": "kiosk", "name": "Kiosk+", "price_cents": 1290, "currency": "EUR", "features": ["branding"]})));
    assert_eq!(
        (s, p["name"].as_str(), p["features"].clone()),
        (200, Some("Kiosk+"), json!(["branding"]))
    );
    assert_eq!(
        audit_count(&app),
        before + 2,
        "each accepted change is audited"
    );

    let bad = [
        (
            json!({"slug": "x1", "name": "X", "price_cents": -1, "currency": "USD", "features": []}),
            422,
        ),
        (
            json!({"slug": "x1", "name": "X", "price_cents": 1, "currency": "usd", "features": []}),
            422,
        ),
        (
            json!({"slug": "x1", "name": "X", "price_cents": 1, "currency": "USD", "features": ["teleport"]}),
            422,
        ),
        (
            json!({"slug": "x1", "name": "X", "price_cents": 1, "currency": "USD", "features": [], "fallback": "nope"}),
            422,
        ),
        (
            json!({"slug": "X 1", "name": "X", "price_cents": 1, "currency": "USD", "features": []}),
            422,
        ),
        (
            json!({"slug": "x1", "name": "X", "price_cents": "ten", "currency": "USD", "features": []}),
            400,
        ),
        (json!({"slug": "x1", "name": "X"}), 400),
    ];
    for (b, status) in bad {
        let (s, e) = app.call("POST", "/v1/plans", Some(b.clone()));
        assert_eq!(s, status, "{b} -> {e}");
        error_code(&e);
    }
    let (s, _) = app.call("PUT", "/v1/plans/kiosk", Some(json!({"slug": "other", "name": "K", "price_cents": 1, "currency": "EUR", "features": []})));
    assert_eq!(s, 422, "slug mismatch");
    let (s, _) = app.call("PUT", "/v1/plans/nope", Some(json!({"slug": "nope", "name": "K", "price_cents": 1, "currency": "EUR", "features": []})));
    assert_eq!(s, 404);
    let (_, plans) = app.call("GET", "/v1/plans", None);
    assert_eq!(
        plans.as_array().map(Vec::len),
        Some(4),
        "refused plans changed nothing"
    );
    assert_eq!(
        audit_count(&app),
        before + 2,
        "refused changes are not audited"
    );
}

#[test]
fn tenant_keys_reach_only_their_own_tenant() {
    let app = serve();
    let a = tenant(&app, "shop-a", "standard", "head");
    let b = tenant(&app, "shop-b", "pro", "head");
    let (a_key_id, a_key) = key(&app, &a);
    let (_, b_key) = key(&app, &b);

    let (s, me) = as_tenant(&app, &a_key, "GET", "/v1/tenant", None);
    assert_eq!((s, me["id"].as_str()), (200, Some(a.as_str())));
    let (s, f) = as_tenant(&app, &b_key, "GET", "/v1/tenant/features", None);
    assert_eq!((s, f["tenant"].as_str()), (200, Some(b.as_str())));

    // Operator routes, with another tenant's id or not: 403.
    for (method, path) in [
        ("GET", format!("/v1/tenants/{b}")),
        ("GET", format!("/v1/tenants/{b}/features")),
        ("GET", "/v1/tenants".to_string()),
        ("PATCH", format!("/v1/tenants/{a}")),
        ("POST", format!("/v1/tenants/{a}/keys")),
        ("GET", "/v1/audit".to_string()),
    ] {
        let body = (method != "GET").then(|| json!({}));
        let (s, e) = as_tenant(&app, &a_key, method, &path, body);
        assert_eq!(
            (s, error_code(&e).as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    // The operator token is not a tenant key.
    let (s, e) = app.call("GET", "/v1/tenant", None);
    assert_eq!((s, error_code(&e).as_str()), (403, "forbidden"));
    // Revocation applies at once.
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{a}/keys/{a_key_id}"), None);
    assert_eq!(s, 204);
    let (s, e) = as_tenant(&app, &a_key, "GET", "/v1/tenant/features", None);
    assert_eq!((s, error_code(&e).as_str()), (401, "unauthorized"));
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{b}/keys/{a_key_id}"), None);
    assert_eq!(s, 404, "a key is revoked through its own tenant only");

    // Stored hashed, never logged.
    drop(app.call("GET", "/healthz", None));
    let control = std::fs::read(app.data_dir.join("control.db")).expect("control db");
    let log = std::fs::read_to_string(app.data_dir.join("tenantplane.log")).unwrap_or_default();
    for k in [&a_key, &b_key] {
        assert!(
            !control.windows(k.len()).any(|w| w == k.as_bytes()),
            "key stored in clear"
        );
        assert!(!log.contains(k.as_str()), "key logged");
    }
}

#[test]
fn upgrading_from_phase_0_waits_for_the_migration_then_turns_on() {
    let app = serve();
    let id = tenant(&app, "grower", "free", "phase:0");
    let (_, k) = key(&app, &id);
    let (s, preview) = as_tenant(&app, &k, "GET", "/v1/tenant/plan/preview?plan=pro", None);
    assert_eq!(s, 200, "{preview}");
    assert_eq!(preview["migration_needed"], true);
    assert_eq!(preview["target_version"].as_str(), catalogue::head());
    assert!(preview["gained"]
        .as_array()
        .expect("gained")
        .iter()
        .any(|f| f == "webhooks"));
    assert!(preview["waiting_for_migration"]
        .as_array()
        .expect("waiting")
        .iter()
        .any(|f| f == "sales_heatmap"));

    let (s, change) = as_tenant(
        &app,
        &k,
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "pro"})),
    );
    assert_eq!(s, 202, "{change}");
    assert!(change["rollout"].is_string());
    assert!(change["waiting_for_migration"]
        .as_array()
        .expect("waiting")
        .iter()
        .any(|f| f == "webhooks"));
    // Right after the change (whatever the worker got to): never on without the migration.
    let (_, now) = as_tenant(&app, &k, "GET", "/v1/tenant/features", None);
    let (on, reason) = feature(&now, "webhooks");
    assert!(
        reason == "PENDING_MIGRATION" || (on && reason == "PLAN"),
        "{reason}"
    );
    assert_eq!(
        feature(&now, "premium_ui"),
        (true, "PLAN".into()),
        "no schema needed"
    );

    let rollout = change["rollout"].as_str().expect("rollout").to_string();
    wait_for("the upgrade migration", LONG, || {
        let (_, r) = app.call("GET", &format!("/v1/rollouts/{rollout}"), None);
        (r["state"] == "succeeded").then_some(())
    });
    let (_, r) = app.call("GET", &format!("/v1/rollouts/{rollout}"), None);
    assert_eq!(r["priority"], 100);
    let after = wait_for("the features to turn on", LONG, || {
        let (_, f) = as_tenant(&app, &k, "GET", "/v1/tenant/features", None);
        (feature(&f, "webhooks").0).then_some(f)
    });
    for f in after["features"].as_array().expect("features") {
        assert_eq!(
            (f["enabled"].clone(), f["reason"].clone()),
            (json!(true), json!("PLAN")),
            "{f}"
        );
    }

    // Downgrade: at once, no data dropped (the schema stays at head).
    let (s, down) = as_tenant(
        &app,
        &k,
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "free"})),
    );
    assert_eq!((s, down["rollout"].clone()), (200, Value::Null), "{down}");
    let (_, f) = as_tenant(&app, &k, "GET", "/v1/tenant/features", None);
    assert_eq!(feature(&f, "webhooks"), (false, "NOT_IN_PLAN".into()));
    assert_eq!(f["schema_version"].as_str(), catalogue::head());
    let (_, audit) = app.call("GET", &format!("/v1/audit?tenant={id}"), None);
    let changes: Vec<&Value> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["action"] == "tenant.plan_change")
        .collect();
    assert_eq!(changes.len(), 2);
    assert!(
        changes[0]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("tenant-key:")),
        "{}",
        changes[0]
    );
    assert!(
        changes[0]["before_state"]
            .as_str()
            .is_some_and(|b| b.contains("pro")),
        "newest first"
    );
    assert!(changes[0]["ip_address"].is_string() && changes[0]["user_agent"].is_string());
}

#[test]
fn overrides_beat_the_plan_both_ways_and_expire() {
    let app = serve();
    let id = tenant(&app, "tweaked", "standard", "head");
    let (s, o) = app.call(
        "PUT",
        &format!("/v1/tenants/{id}/features/webhooks"),
        Some(json!({"enabled": true, "reason": "beta"})),
    );
    assert_eq!((s, o["enabled"].as_bool()), (200, Some(true)), "{o}");
    app.call(
        "PUT",
        &format!("/v1/tenants/{id}/features/sales_heatmap"),
        Some(json!({"enabled": false})),
    );
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    app.call(
        "PUT",
        &format!("/v1/tenants/{id}/features/branding"),
        Some(json!({"enabled": false, "expires_at": soon})),
    );
    let (_, f) = app.call("GET", &format!("/v1/tenants/{id}/features"), None);
    assert_eq!(feature(&f, "webhooks"), (true, "OVERRIDE_ON".into()));
    assert_eq!(feature(&f, "sales_heatmap"), (false, "OVERRIDE_OFF".into()));
    assert_eq!(feature(&f, "branding"), (false, "OVERRIDE_OFF".into()));
    wait_for("the override to expire", Duration::from_secs(30), || {
        let (_, f) = app.call("GET", &format!("/v1/tenants/{id}/features"), None);
        (feature(&f, "branding") == (true, "PLAN".to_string())).then_some(())
    });
    let (s, _) = app.call(
        "DELETE",
        &format!("/v1/tenants/{id}/features/webhooks"),
        None,
    );
    assert_eq!(s, 204);
    let (_, f) = app.call("GET", &format!("/v1/tenants/{id}/features"), None);
    assert_eq!(feature(&f, "webhooks"), (false, "NOT_IN_PLAN".into()));

    // An override never turns on a feature whose migration is missing.
    let behind = tenant(&app, "behind", "free", "phase:0");
    app.call(
        "PUT",
        &format!("/v1/tenants/{behind}/features/ai_assistant"),
        Some(json!({"enabled": true})),
    );
    let (_, f) = app.call("GET", &format!("/v1/tenants/{behind}/features"), None);
    assert_eq!(
        feature(&f, "ai_assistant"),
        (false, "PENDING_MIGRATION".into())
    );
    // Suspension turns everything off.
    app.call(
        "PATCH",
        &format!("/v1/tenants/{id}"),
        Some(json!({"status": "suspended"})),
    );
    let (_, f) = app.call("GET", &format!("/v1/tenants/{id}/features"), None);
    assert!(f["features"]
        .as_array()
        .expect("features")
        .iter()
        .all(|x| x["reason"] == "TENANT_SUSPENDED" && x["enabled"] == false));

    // Bad input changes nothing and is not audited.
    let before = audit_count(&app);
    let bad = [
        (
            "PUT",
            format!("/v1/tenants/{id}/features/teleport"),
            Some(json!({"enabled": true})),
            404,
        ),
        (
            "PUT",
            format!("/v1/tenants/{id}/features/webhooks"),
            Some(json!({"enabled": "yes"})),
            400,
        ),
        (
            "PUT",
            format!("/v1/tenants/{id}/features/webhooks"),
            Some(json!({"enabled": true, "expires_at": "2001-01-01T00:00:00Z"})),
            422,
        ),
        (
            "PUT",
            "/v1/tenants/nobody/features/webhooks".to_string(),
            Some(json!({"enabled": true})),
            404,
        ),
        (
            "DELETE",
            format!("/v1/tenants/{id}/features/webhooks"),
            None,
            404,
        ),
        (
            "PATCH",
            format!("/v1/tenants/{id}"),
            Some(json!({"plan": "platinum"})),
            422,
        ),
        (
            "POST",
            "/v1/tenants".to_string(),
            Some(json!({"slug": "newbie", "name": "N", "plan": "platinum"})),
            422,
        ),
    ];
    for (method, path, body, status) in bad {
        let (s, e) = app.call(method, &path, body);
        assert_eq!(s, status, "{method} {path}: {e}");
        error_code(&e);
    }
    assert_eq!(
        audit_count(&app),
        before,
        "refused requests are not audited"
    );
    let (_, t) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(t["plan"], "standard");
}

#[test]
fn an_expired_trial_falls_back_and_the_sweep_records_it() {
    let app = serve();
    let id = tenant(&app, "trialist", "free", "head");
    let (_, k) = key(&app, &id);
    let (s, c) = as_tenant(
        &app,
        &k,
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "pro", "trial_days": 14})),
    );
    assert_eq!(s, 200, "{c}");
    assert!(c["trial_ends_at"].is_string());
    let (_, f) = as_tenant(&app, &k, "GET", "/v1/tenant/features", None);
    assert_eq!(feature(&f, "webhooks"), (true, "PLAN".into()));
    for bad in [
        json!({"plan": "pro", "trial_days": 0}),
        json!({"plan": "pro", "trial_days": 400}),
        json!({"plan": "nope"}),
    ] {
        let (s, _) = as_tenant(&app, &k, "POST", "/v1/tenant/plan", Some(bad.clone()));
        assert_eq!(s, 422, "{bad}");
    }

    // Time passes: end the trial in the control database, as the clock would.
    let db = tenantplane_control_db::ControlDb::open(&format!(
        "sqlite://{}",
        app.data_dir.join("control.db").display()
    ))
    .expect("control");
    {
        use diesel::connection::SimpleConnection;
        let mut conn = db.conn().expect("conn");
        if let tenantplane_control_db::ControlConnection::Sqlite(c) = &mut *conn {
            c.batch_execute(&format!(
                "UPDATE tenants SET trial_ends_at = '2020-01-01 00:00:00' WHERE id = '{id}'; UPDATE change_counter SET value = value + 1;"
            ))
            .expect("expire");
        }
    }
    let expired = wait_for("the app to see the expired trial", LONG, || {
        let (_, f) = as_tenant(&app, &k, "GET", "/v1/tenant/features", None);
        (feature(&f, "webhooks").1 == "TRIAL_EXPIRED").then_some(f)
    });
    assert_eq!(expired["effective_plan"], "free");
    assert_eq!(
        feature(&expired, "invoice_numbering"),
        (true, "PLAN".into()),
        "the fallback's features stay"
    );

    // The sweep makes the fallback the recorded plan. The serving process's
    // worker runs the same sweep every 30 s and may have got there first:
    // then this call finds nothing left, and either way there is one
    // trial.expired event below.
    let swept = tenantplane_flags::plans::sweep_expired_trials(&db).expect("sweep");
    assert!(swept <= 1, "swept {swept}");
    let (_, t) = app.call("GET", &format!("/v1/tenants/{id}"), None);
    assert_eq!(
        (t["plan"].as_str(), t["trial_ends_at"].clone()),
        (Some("free"), Value::Null)
    );
    let (_, audit) = app.call("GET", "/v1/audit?tenant=trialist", None);
    assert_eq!(audit[0]["action"], "tenant.trial_expired");
    assert_eq!(audit[0]["actor"], "system:trial-sweep");
    // With its trial.expired event, written in the same transaction.
    {
        use diesel::prelude::*;
        use tenantplane_control_db::schema::outbox;
        let bodies: Vec<String> = outbox::table
            .filter(outbox::kind.eq("trial.expired"))
            .select(outbox::body)
            .load(&mut *db.conn().expect("conn"))
            .expect("outbox");
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        let e: Value = serde_json::from_str(&bodies[0]).expect("json");
        assert_eq!(
            (
                e["tenant_id"].as_str(),
                e["plan"].as_str(),
                e["fallback_plan"].as_str()
            ),
            (Some(id.as_str()), Some("pro"), Some("free"))
        );
    }
    assert_eq!(
        tenantplane_flags::plans::sweep_expired_trials(&db).expect("sweep"),
        0
    );
}

#[test]
fn two_api_processes_share_changes_through_the_control_db() {
    let Some(control) = TestPg::new() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let opts = || AppOptions {
        command: vec!["api".into()],
        control_db: Some(control.url()),
        data_dir: Some(dir.path().to_path_buf()),
        ..AppOptions::default()
    };
    let a = App::start_with(opts());
    let b = App::start_with(opts());
    let id = tenant(&a, "shared", "free", "head");
    let (_, k) = key(&a, &id);
    // B sees A's writes through the change counter its refresher polls
    // (every 250 ms); how stale it gets is a measurement, not asserted here.
    let seen = |app: &App, what: &str, check: &dyn Fn(&Value) -> bool| {
        wait_for(what, LONG, || {
            let (s, f) = as_tenant(app, &k, "GET", "/v1/tenant/features", None);
            (s == 200 && check(&f)).then_some(())
        });
    };
    seen(&b, "the new key and tenant on B", &|_| true);
    a.call(
        "PUT",
        &format!("/v1/tenants/{id}/features/webhooks"),
        Some(json!({"enabled": true})),
    );
    seen(&b, "the override on B", &|f| {
        feature(f, "webhooks") == (true, "OVERRIDE_ON".to_string())
    });
    let (s, _) = b.call(
        "DELETE",
        &format!("/v1/tenants/{id}/keys/{}", key_id_of(&a, &id)),
        None,
    );
    assert_eq!(s, 204);
    wait_for("the revocation on A", LONG, || {
        let (s, _) = as_tenant(&a, &k, "GET", "/v1/tenant/features", None);
        (s == 401).then_some(())
    });
}

fn key_id_of(app: &App, tenant: &str) -> String {
    let (_, audit) = app.call("GET", &format!("/v1/audit?tenant={tenant}"), None);
    audit
        .as_array()
        .expect("audit")
        .iter()
        .find(|e| e["action"] == "key.issue")
        .and_then(|e| e["resource_id"].as_str())
        .expect("issued key")
        .to_string()
}
