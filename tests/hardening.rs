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
    crate::common::create_tenant(app, body)
}

use crate::common::issue_key as key;

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

#[test]
fn limits_and_plan_fallback_cycles_are_refused() {
    let app = App::start();
    let t = create_tenant(&app, "limit-shop", json!({}));
    let cases = [
        (
            "POST",
            "/v1/rollouts".to_string(),
            json!({"target": "head", "selector": {"all": true}, "waves": [{"name": "x".repeat(10_000), "count": 1}]}),
            "a name is at most 64",
        ),
        (
            "POST",
            "/v1/rollouts".to_string(),
            json!({"target": "head", "selector": {"all": true}, "waves": vec![json!({"count": 1}); 10_000]}),
            "at most 100",
        ),
        (
            "POST",
            "/v1/rollouts".to_string(),
            json!({"target": "head", "selector": {"tenants": vec!["shop"; 10_001]}}),
            "at most 10000",
        ),
        (
            "PUT",
            format!("/v1/tenants/{t}/features/branding"),
            json!({"enabled": true, "expires_at": "9999-12-31T00:00:00Z"}),
            "at most 10 years",
        ),
    ];
    for (method, path, body, want) in cases {
        let (s, e) = app.call(method, &path, Some(body));
        assert_eq!(
            (s, error_code(&e)),
            (422, "invalid".to_string()),
            "{path}: {e}"
        );
        assert!(
            e["error"]["message"].as_str().unwrap_or("").contains(want),
            "{path}: {e}"
        );
    }
    let (_, list) = app.call("GET", "/v1/rollouts", None);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "nothing created: {list}"
    );

    // free → pro → free would leave an ended trial nowhere to land.
    let (s, free) = app.call("GET", "/v1/plans/free", None);
    assert_eq!(s, 200, "{free}");
    let (s, pro) = app.call("GET", "/v1/plans/pro", None);
    assert_eq!(s, 200, "{pro}");
    assert_eq!(pro["fallback"], "free", "{pro}");
    let mut looped = free.clone();
    looped["fallback"] = json!("pro");
    let body = json!({
        "slug": looped["slug"], "name": looped["name"], "price_cents": looped["price_cents"],
        "currency": looped["currency"], "features": looped["features"], "fallback": "pro",
    });
    let (s, e) = app.call("PUT", "/v1/plans/free", Some(body));
    assert_eq!((s, error_code(&e)), (422, "invalid".to_string()), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("free → pro → free"),
        "{e}"
    );
    let (_, after) = app.call("GET", "/v1/plans/free", None);
    assert_eq!(after, free, "nothing changed");
}

#[test]
fn server_registration_is_checked_before_anything_is_created() {
    let app = App::start();
    let count = |app: &App| {
        let (_, list) = app.call("GET", "/v1/servers", None);
        list.as_array().map(Vec::len).unwrap_or(0)
    };
    let before = count(&app);
    let fresh = app.data_dir.join("more-tenants");
    let nested = app.data_dir.join("tenants").join("inner");
    let cases = [
        (
            json!({"kind": "sqlite", "url": "sqlite://relative/dir"}),
            422,
        ),
        (
            json!({"kind": "sqlite", "url": format!("sqlite://{}", app.data_dir.join("tenants").display())}),
            409,
        ),
        (
            json!({"kind": "sqlite", "url": format!("sqlite://{}/tenants/../tenants", app.data_dir.display())}),
            409,
        ),
        (
            json!({"kind": "sqlite", "url": format!("sqlite://{}", nested.display())}),
            422,
        ),
        (
            json!({"kind": "sqlite", "url": format!("sqlite://{}", app.data_dir.display())}),
            422,
        ),
    ];
    for (body, status) in cases {
        let (s, e) = app.call("POST", "/v1/servers", Some(body.clone()));
        assert_eq!(s, status, "{body}: {e}");
    }
    assert_eq!(count(&app), before, "nothing registered");
    assert!(!app.data_dir.join("relative").exists(), "nothing created");
    assert!(!nested.exists(), "nothing created");

    let body =
        json!({"name": "more", "kind": "sqlite", "url": format!("sqlite://{}", fresh.display())});
    let (s, srv) = app.call("POST", "/v1/servers", Some(body));
    assert_eq!(s, 201, "{srv}");
    assert!(fresh.is_dir());
    let again = json!({"name": "more-again", "kind": "sqlite", "url": format!("sqlite://{}/", fresh.display())});
    let (s, e) = app.call("POST", "/v1/servers", Some(again));
    assert_eq!((s, error_code(&e)), (409, "conflict".to_string()), "{e}");

    // One server per PostgreSQL database and isolation, however it is spelled.
    let Some(pg) = TestPg::new() else { return };
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg-a", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let respelled = format!("{}?sslmode=disable", pg.url());
    let (s, e) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg-b", "kind": "postgres", "url": respelled})),
    );
    assert_eq!((s, error_code(&e)), (409, "conflict".to_string()), "{e}");
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg-c", "kind": "postgres", "url": pg.url(), "isolation": "database"})),
    );
    assert_eq!(s, 201, "another isolation is another server: {srv}");
}

/// A body that stops arriving ends the request instead of holding the
/// connection: the server answers 400 and closes it.
#[test]
fn a_stalled_request_body_is_cut_off() {
    use std::io::{Read, Write};
    let app = App::start();
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).expect("connect");
    // A generous guard so a broken server fails the test instead of hanging it.
    sock.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .expect("timeout");
    write!(
        sock,
        "POST /v1/tenants HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"slug\":",
        crate::common::TOKEN
    )
    .expect("send");
    sock.flush().expect("flush");
    let mut answer = String::new();
    let read = sock.read_to_string(&mut answer);
    assert!(read.is_ok(), "the server closed the connection: {read:?}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");
    let (_, list) = app.call("GET", "/v1/tenants", None);
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing created"
    );
}

fn post_keyed(
    url: &str,
    token: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, Value, Option<String>) {
    let resp = match ureq::post(&format!("{url}{path}"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Idempotency-Key", key)
        .send_json(body.clone())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let replayed = resp.header("Idempotent-Replayed").map(str::to_string);
    (
        resp.status(),
        resp.into_json().unwrap_or(Value::Null),
        replayed,
    )
}

fn idempotent_posts(app: &App) {
    let token = crate::common::TOKEN;
    // A tenant, twice with one key: one tenant.
    let body = json!({"slug": "once-shop", "name": "Once"});
    let (s, first, r) = post_keyed(&app.url, token, "/v1/tenants", "k-tenant-1", &body);
    assert_eq!((s, r.as_deref()), (201, Some("false")), "{first}");
    let (s, again, r) = post_keyed(&app.url, token, "/v1/tenants", "k-tenant-1", &body);
    assert_eq!((s, r.as_deref()), (201, Some("true")), "{again}");
    assert_eq!(again["id"], first["id"]);
    // Another request under that key is a client bug.
    let (s, e, _) = post_keyed(
        &app.url,
        token,
        "/v1/tenants",
        "k-tenant-1",
        &json!({"slug": "other-shop", "name": "Other"}),
    );
    assert_eq!((s, error_code(&e)), (422, "invalid".to_string()), "{e}");
    let (_, list) = app.call("GET", "/v1/tenants", None);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // A rollout, twice with one key: one rollout.
    let body = json!({"target": "head", "selector": {"all": true}});
    let (s, r1, _) = post_keyed(&app.url, token, "/v1/rollouts", "k-rollout-1", &body);
    assert!(s == 201 || s == 200, "{r1}");
    let (s2, r2, replayed) = post_keyed(&app.url, token, "/v1/rollouts", "k-rollout-1", &body);
    assert_eq!((s2, replayed.as_deref()), (s, Some("true")));
    assert_eq!(r2, r1);
    let (_, list) = app.call("GET", "/v1/rollouts", None);
    assert!(list.as_array().map_or(0, Vec::len) <= 1, "{list}");

    // A failed request keeps nothing: the same key may be used again.
    let bad = json!({"slug": "Bad Slug", "name": "x"});
    let (s, _, _) = post_keyed(&app.url, token, "/v1/tenants", "k-tenant-2", &bad);
    assert_eq!(s, 422);
    let good = json!({"slug": "second-shop", "name": "Second"});
    let (s, made, r) = post_keyed(&app.url, token, "/v1/tenants", "k-tenant-2", &good);
    assert_eq!((s, r.as_deref()), (201, Some("false")), "{made}");
    let (s, same, r) = post_keyed(&app.url, token, "/v1/tenants", "k-tenant-2", &good);
    assert_eq!((s, r.as_deref()), (201, Some("true")));
    assert_eq!(same["id"], made["id"]);

    // A tenant's export, twice with one key: one export. Keys are per
    // credential: the operator's k-tenant-1 is not the tenant's.
    let t = first["id"].as_str().expect("id");
    let k = key(app, t);
    let body = json!({"format": "json"});
    let (s, e1, _) = post_keyed(&app.url, &k, "/v1/tenant/exports", "k-tenant-1", &body);
    assert_eq!(s, 202, "{e1}");
    let (s, e2, replayed) = post_keyed(&app.url, &k, "/v1/tenant/exports", "k-tenant-1", &body);
    assert_eq!((s, replayed.as_deref()), (202, Some("true")));
    assert_eq!(e2["id"], e1["id"]);
    // A key that is not a key.
    let (s, e, _) = post_keyed(&app.url, &k, "/v1/tenant/exports", &"x".repeat(300), &body);
    assert_eq!(s, 422, "{e}");
}

#[test]
fn idempotency_keys_replay_the_first_answer_on_sqlite() {
    idempotent_posts(&App::start());
}

#[test]
fn idempotency_keys_replay_the_first_answer_on_postgres() {
    let Some(pg) = TestPg::new() else { return };
    idempotent_posts(&App::start_with_control(Some(pg.url())));
}

/// Tenant keys are rate limited per key: over the limit, 429 with
/// Retry-After; another key and the operator are not held back.
#[test]
fn tenant_keys_are_rate_limited_one_by_one() {
    let app = App::start_with(crate::common::AppOptions {
        env: vec![("TENANTPLANE_TENANT_RATE_PER_S".into(), "1".into())],
        ..Default::default()
    });
    let a = create_tenant(&app, "busy-shop", json!({}));
    let b = create_tenant(&app, "calm-shop", json!({}));
    let (ka, kb) = (key(&app, &a), key(&app, &b));
    // A burst of two, then a request within the same second is refused.
    // A loaded machine can spread the requests over more than a second,
    // refilling a token, so the test asks until the refusal comes (50
    // requests take milliseconds each when the machine is idle).
    let mut statuses = Vec::new();
    let mut retry_after = None;
    while statuses.last() != Some(&429) && statuses.len() < 50 {
        let resp = match ureq::get(&format!("{}/v1/tenant/features", app.url))
            .set("Authorization", &format!("Bearer {ka}"))
            .call()
        {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        statuses.push(resp.status());
        if resp.status() == 429 {
            retry_after = resp.header("Retry-After").map(str::to_string);
            let body: Value = resp.into_json().expect("json");
            assert_eq!(error_code(&body), "rate_limited");
        }
    }
    assert_eq!(statuses[..2], [200, 200], "the burst passes: {statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    let (s, _) = call_as(&app.url, Some(&kb), "GET", "/v1/tenant/features", None);
    assert_eq!(s, 200, "another key has its own budget");
    for _ in 0..5 {
        let (s, _) = app.call("GET", "/v1/tenants", None);
        assert_eq!(s, 200, "operators are not limited");
    }
}

/// A tenant starts a trial of a plan once; an operator may grant another.
#[test]
fn one_self_service_trial_per_plan() {
    let app = App::start();
    let t = create_tenant(&app, "trial-shop", json!({"plan": "free"}));
    let k = key(&app, &t);
    let trial = json!({"plan": "pro", "trial_days": 14});
    let (s, first) = call_as(
        &app.url,
        Some(&k),
        "POST",
        "/v1/tenant/plan",
        Some(trial.clone()),
    );
    assert!(s == 200 || s == 202, "{first}");
    let ends = first["trial_ends_at"].clone();
    assert!(ends.is_string(), "{first}");
    // Back to free, then the same trial again: refused, nothing changed.
    let (s, _) = call_as(
        &app.url,
        Some(&k),
        "POST",
        "/v1/tenant/plan",
        Some(json!({"plan": "free"})),
    );
    assert_eq!(s, 200);
    let (s, e) = call_as(
        &app.url,
        Some(&k),
        "POST",
        "/v1/tenant/plan",
        Some(trial.clone()),
    );
    assert_eq!((s, error_code(&e)), (409, "conflict".to_string()), "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("already had a trial"));
    let (_, now) = app.call("GET", &format!("/v1/tenants/{t}"), None);
    assert_eq!(now["plan"], "free", "{now}");
    // An operator grants another.
    let (s, e) = app.call(
        "PATCH",
        &format!("/v1/tenants/{t}"),
        Some(json!({"trial_days": 30})),
    );
    assert_eq!(
        (s, error_code(&e)),
        (422, "invalid".to_string()),
        "trial_days needs a plan: {e}"
    );
    let (s, granted) = app.call(
        "PATCH",
        &format!("/v1/tenants/{t}"),
        Some(json!({"plan": "pro", "trial_days": 30})),
    );
    assert_eq!(s, 200, "{granted}");
    assert_eq!(granted["plan"], "pro");
    assert!(
        granted["trial_ends_at"].is_string() && granted["trial_ends_at"] != ends,
        "{granted}"
    );
}
