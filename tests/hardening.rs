//! What an outside tester found (issue 16), reproduced and fixed: NUL
//! characters in ids and queries, garbage cursors, a suspended tenant's key
//! still writing, self-service plan changes that were not idempotent.

use serde_json::{json, Value};

use crate::common::{call_as, error_code, App, TestPg};

fn create_tenant(app: &App, slug: &str, extra: Value) -> String {
    let mut body = json!({"slug": slug, "name": format!("Shop {slug}")});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (s, t) = app.call("POST", "/v1/tenants", Some(body));
    assert_eq!(s, 201, "{t}");
    t["id"].as_str().expect("id").to_string()
}

fn key(app: &App, tenant: &str) -> String {
    let (s, k) = app.call(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({"name": "pos"})),
    );
    assert_eq!(s, 201, "{k}");
    k["key"].as_str().expect("key").to_string()
}

fn nul_and_cursors(app: &App) {
    let t = create_tenant(app, "nul-shop", json!({}));
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"tenants": [t]}, "dry_run": true})),
    );
    assert!(s == 200 || s == 201, "{r}");
    for path in [
        "/v1/tenants/%00",
        "/v1/tenants/shop%00x",
        "/v1/audit?tenant=%00",
        "/v1/tenants?cursor=%00",
        "/v1/tenants?label=a%3D%00",
        "/v1/rollouts/%00",
        "/v1/backups?tenant=%00",
    ] {
        let (s, e) = app.call("GET", path, None);
        assert_eq!(
            (s, error_code(&e)),
            (400, "bad_request".to_string()),
            "{path}: {e}"
        );
    }
    for path in ["/v1/rollouts/%00/pause", "/v1/tenants/%00/backups"] {
        let (s, e) = app.call("POST", path, None);
        assert_eq!(s, 400, "{path}: {e}");
    }
    // Garbage cursors are refused; the real one works.
    let (s, e) = app.call("GET", "/v1/tenants?cursor=garbage", None);
    assert_eq!((s, error_code(&e)), (422, "invalid".to_string()), "{e}");
    let (s, page) = app.call("GET", "/v1/tenants?limit=1", None);
    assert_eq!(s, 200, "{page}");
    if let Some(c) = page["next_cursor"].as_str() {
        let (s, next) = app.call("GET", &format!("/v1/tenants?limit=1&cursor={c}"), None);
        assert_eq!(s, 200, "{next}");
    }
    // The server is fine afterwards.
    let (s, _) = app.call("GET", &format!("/v1/tenants/{t}"), None);
    assert_eq!(s, 200);
}

#[test]
fn nul_characters_and_garbage_cursors_are_4xx_on_sqlite() {
    nul_and_cursors(&App::start());
}

#[test]
fn nul_characters_and_garbage_cursors_are_4xx_on_postgres() {
    let Some(pg) = TestPg::new() else { return };
    nul_and_cursors(&App::start_with_control(Some(pg.url())));
}

#[test]
fn a_suspended_tenants_key_reads_but_does_not_write() {
    let app = App::start();
    let t = create_tenant(&app, "paused-shop", json!({"plan": "free"}));
    let k = key(&app, &t);
    let (s, p) = app.call(
        "PATCH",
        &format!("/v1/tenants/{t}"),
        Some(json!({"status": "suspended"})),
    );
    assert_eq!(s, 200, "{p}");

    let (s, me) = call_as(&app.url, Some(&k), "GET", "/v1/tenant", None);
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["status"], "suspended");
    let (s, f) = call_as(&app.url, Some(&k), "GET", "/v1/tenant/features", None);
    assert_eq!(s, 200, "{f}");
    assert!(f["features"]
        .as_array()
        .expect("features")
        .iter()
        .all(|x| x["reason"] == "TENANT_SUSPENDED"));
    for (path, body) in [
        ("/v1/tenant/plan", json!({"plan": "pro"})),
        ("/v1/tenant/plan", json!({"plan": "pro", "trial_days": 14})),
        ("/v1/tenant/exports", json!({"format": "json"})),
    ] {
        let (s, e) = call_as(&app.url, Some(&k), "POST", path, Some(body.clone()));
        assert_eq!(
            (s, error_code(&e)),
            (403, "tenant_suspended".to_string()),
            "{path} {body}: {e}"
        );
    }
    let (_, now) = app.call("GET", &format!("/v1/tenants/{t}"), None);
    assert_eq!(now["plan"], "free", "nothing changed: {now}");
    assert_eq!(now["trial_ends_at"], Value::Null);
    let (_, log) = app.call("GET", &format!("/v1/audit?tenant={t}"), None);
    assert!(!log
        .as_array()
        .expect("entries")
        .iter()
        .any(|e| e["action"] == "tenant.plan_change"));

    // Resumed, it writes again; deleted, its key is unknown.
    app.call(
        "PATCH",
        &format!("/v1/tenants/{t}"),
        Some(json!({"status": "active"})),
    );
    let (s, c) = call_as(
        &app.url,
        Some(&k),
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "pro"})),
    );
    assert!(s == 200 || s == 202, "{c}");
    let (s, _) = app.call("DELETE", &format!("/v1/tenants/{t}"), None);
    assert_eq!(s, 204);
    let (s, e) = call_as(&app.url, Some(&k), "GET", "/v1/tenant", None);
    assert_eq!((s, error_code(&e)), (401, "unauthorized".to_string()));
}

fn one_upgrade_for_many_changes(app: &App) {
    let t = create_tenant(
        app,
        "eager-shop",
        json!({"plan": "free", "schema": "phase:0"}),
    );
    let k = key(app, &t);
    let upgrades = |app: &App| -> Vec<Value> {
        let (s, list) = app.call("GET", "/v1/rollouts?limit=100", None);
        assert_eq!(s, 200, "{list}");
        let items = list["items"]
            .as_array()
            .or(list.as_array())
            .cloned()
            .unwrap_or_default();
        items.into_iter().filter(|r| r["priority"] == 100).collect()
    };
    // 20 at once, the same change.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let (url, k) = (app.url.clone(), k.clone());
                scope.spawn(move || {
                    call_as(
                        &url,
                        Some(&k),
                        "POST",
                        "/v1/tenant/plan",
                        Some(json!({"plan": "pro"})),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request"))
            .collect()
    });
    for (s, body) in &answers {
        assert!(*s == 200 || *s == 202, "{s} {body}");
    }
    let queued = upgrades(app);
    assert_eq!(queued.len(), 1, "one upgrade rollout: {queued:?}");
    let changes = answers
        .iter()
        .filter(|(_, b)| b["previous_plan"] == "free")
        .count();
    assert_eq!(changes, 1, "one request changed the plan");
    let (_, log) = app.call("GET", &format!("/v1/audit?tenant={t}"), None);
    let audited = log
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "tenant.plan_change")
        .count();
    assert_eq!(audited, 1);

    // Asking again for the plan in effect changes and queues nothing.
    let (s, again) = call_as(
        &app.url,
        Some(&k),
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "pro"})),
    );
    assert!(s == 200 || s == 202, "{again}");
    assert_eq!(again["previous_plan"], "pro", "{again}");
    assert_eq!(upgrades(app).len(), 1);
}

#[test]
fn twenty_concurrent_plan_changes_queue_one_upgrade_on_sqlite() {
    one_upgrade_for_many_changes(&App::start());
}

#[test]
fn twenty_concurrent_plan_changes_queue_one_upgrade_on_postgres() {
    let Some(pg) = TestPg::new() else { return };
    one_upgrade_for_many_changes(&App::start_with_control(Some(pg.url())));
}
