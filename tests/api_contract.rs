//! The API contract: health, OpenAPI, auth, errors, and bad input that must
//! change nothing.

use crate::common::{call_as, call_raw, error_code, App};
use serde_json::{json, Value};

#[test]
fn health_and_readiness_need_no_token() {
    let app = App::start();
    assert_eq!(
        call_as(&app.url, None, "GET", "/healthz", None),
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        call_as(&app.url, None, "GET", "/readyz", None),
        (200, json!({"status": "ready"}))
    );
}

#[test]
fn openapi_documents_every_route() {
    let app = App::start();
    let (s, doc) = call_as(&app.url, None, "GET", "/v1/openapi.json", None);
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/openapi.json", "get"),
        ("/metrics", "get"),
        ("/v1/tenants", "get"),
        ("/v1/tenants", "post"),
        ("/v1/tenants/{id}", "get"),
        ("/v1/tenants/{id}", "patch"),
        ("/v1/tenants/{id}", "delete"),
        ("/v1/servers", "get"),
        ("/v1/servers", "post"),
        ("/v1/servers/{id}", "get"),
        ("/v1/servers/{id}", "patch"),
        ("/v1/servers/{id}/drain", "post"),
        ("/v1/servers/{id}/drain", "get"),
        ("/v1/tenants/{id}/move", "post"),
        ("/v1/tenants/{id}/move", "get"),
        ("/v1/schedules", "get"),
        ("/v1/schedules", "post"),
        ("/v1/schedules/{name}", "get"),
        ("/v1/schedules/{name}", "patch"),
        ("/v1/schedules/{name}", "delete"),
        ("/v1/schedules/{name}/runs", "get"),
        ("/v1/rollouts", "get"),
        ("/v1/rollouts", "post"),
        ("/v1/rollouts/{id}", "get"),
        ("/v1/rollouts/{id}/tasks", "get"),
        ("/v1/rollouts/{id}/events", "get"),
        ("/v1/rollouts/{id}/pause", "post"),
        ("/v1/rollouts/{id}/resume", "post"),
        ("/v1/rollouts/{id}/cancel", "post"),
        ("/v1/rollouts/{id}/retry", "post"),
        ("/v1/rollouts/{id}/promote", "post"),
        ("/v1/plans", "get"),
        ("/v1/plans", "post"),
        ("/v1/plans/{slug}", "get"),
        ("/v1/plans/{slug}", "put"),
        ("/v1/features", "get"),
        ("/v1/tenants/{id}/features", "get"),
        ("/v1/tenants/{id}/features/{feature}", "put"),
        ("/v1/tenants/{id}/features/{feature}", "delete"),
        ("/v1/tenants/{id}/keys", "post"),
        ("/v1/tenants/{id}/keys/{key_id}", "delete"),
        ("/v1/tenant", "get"),
        ("/v1/tenant/features", "get"),
        ("/v1/tenant/plan/preview", "get"),
        ("/v1/tenant/plan", "post"),
        ("/v1/audit", "get"),
        ("/v1/tenants/{id}/backups", "post"),
        ("/v1/backups", "get"),
        ("/v1/backups/{id}", "get"),
        ("/v1/backups/{id}", "delete"),
        ("/v1/backups/{id}/verify", "post"),
        ("/v1/backups/{id}/pin", "put"),
        ("/v1/backups/{id}/pin", "delete"),
        ("/v1/backups/{id}/restore", "post"),
        ("/v1/backups/retention", "post"),
        ("/v1/tenant/exports", "post"),
        ("/v1/tenant/exports/{id}", "get"),
        ("/v1/exports/download/{token}", "get"),
        ("/v1/tenants/{id}/exports", "post"),
        ("/v1/tenants/{id}/exports/{export_id}", "get"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "patch"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/rotate-secret", "post"),
        ("/v1/webhooks/{id}/replay", "post"),
        ("/v1/outbox", "get"),
        ("/v1/outbox/{id}", "get"),
        ("/v1/outbox/{id}/retry", "post"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum::<usize>(),
        expected.len(),
        "the document lists a route this test does not know"
    );
    assert!(doc["components"]["schemas"]["Tenant"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The notification routes have their own, unique operation ids, and
    // every outbox event body is documented.
    let mut ids = std::collections::BTreeSet::new();
    for (path, methods) in paths {
        if !(path.starts_with("/v1/webhooks") || path.starts_with("/v1/outbox")) {
            continue;
        }
        for (method, op) in methods.as_object().expect("methods") {
            let id = op["operationId"].as_str().expect("operationId").to_string();
            assert!(
                ids.insert(id.clone()),
                "{method} {path}: operationId {id} twice"
            );
        }
    }
    assert_eq!(ids.len(), 10);
    for schema in [
        "WebhookPayload",
        "TenantEvent",
        "PlanChangedEvent",
        "TrialEvent",
        "RolloutEvent",
        "BackupFailedEvent",
        "RestoreCompletedEvent",
        "ExportReadyEvent",
        "EndpointFailingEvent",
        "Delivery",
        "WebhookWithSecret",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} is not in the document"
        );
    }
}

#[test]
fn operator_routes_need_the_operator_token() {
    let app = App::start();
    let routes = [
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/tenants/x"),
        ("PATCH", "/v1/tenants/x"),
        ("DELETE", "/v1/tenants/x"),
        ("GET", "/v1/servers"),
        ("POST", "/v1/servers"),
        ("GET", "/v1/servers/default"),
        ("GET", "/v1/rollouts"),
        ("POST", "/v1/rollouts"),
        ("GET", "/v1/rollouts/x"),
        ("POST", "/v1/rollouts/x/pause"),
        ("GET", "/v1/plans"),
        ("POST", "/v1/plans"),
        ("PUT", "/v1/plans/free"),
        ("GET", "/v1/features"),
        ("GET", "/v1/tenants/x/features"),
        ("PUT", "/v1/tenants/x/features/branding"),
        ("POST", "/v1/tenants/x/keys"),
        ("GET", "/v1/audit"),
        ("GET", "/metrics"),
        ("GET", "/v1/tenant"),
        ("GET", "/v1/tenant/features"),
        ("POST", "/v1/tenant/plan"),
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("DELETE", "/v1/webhooks/x"),
        ("POST", "/v1/webhooks/x/rotate-secret"),
        ("GET", "/v1/outbox"),
        ("POST", "/v1/outbox/1/retry"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token-wrong-token"), Some("")] {
            let body = (method != "GET" && method != "DELETE")
                .then(|| json!({"slug": "abc", "name": "x"}));
            let (s, e) = call_as(&app.url, token, method, path, body);
            assert_eq!(s, 401, "{method} {path} with {token:?}: {e}");
            assert_eq!(error_code(&e), "unauthorized");
        }
    }
    let (_, page) = app.call("GET", "/v1/tenants", None);
    assert_eq!(
        page["items"],
        json!([]),
        "no refused request created anything"
    );
}

#[test]
fn unknown_routes_answer_json_404() {
    let app = App::start();
    let (s, e) = app.call("GET", "/v1/nothing-here", None);
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"));
}

/// A path that exists with another method: 405 and the methods it takes.
#[test]
fn wrong_methods_answer_405_with_allow() {
    let app = App::start();
    for (method, path, allow) in [
        ("OPTIONS", "/v1/tenants", "GET, POST"),
        ("TRACE", "/v1/tenants", "GET, POST"),
        ("DELETE", "/v1/tenants", "GET, POST"),
        ("PUT", "/v1/tenants/some-shop", "GET, DELETE, PATCH"),
        ("GET", "/v1/backups/some-id/restore", "POST"),
        ("PATCH", "/v1/rollouts/abc/pause", "POST"),
        // The literal path wins over `/v1/backups/{id}`, as in the router.
        ("OPTIONS", "/v1/backups/retention", "POST"),
    ] {
        let resp = match ureq::request(method, &format!("{}{path}", app.url))
            .set("Authorization", &format!("Bearer {}", crate::common::TOKEN))
            .call()
        {
            Err(ureq::Error::Status(_, r)) => r,
            other => panic!("{method} {path}: {other:?}"),
        };
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.header("Allow"), Some(allow), "{method} {path}");
        let body: Value = resp.into_json().expect("json");
        assert_eq!(error_code(&body), "method_not_allowed");
    }
}

/// JSON bodies are objects (serde would read `[null, null]` into a struct
/// field by field), a whole number written `7.0` is the integer 7, `null` is
/// no body, and an optional body that is there must parse.
#[test]
fn json_bodies_are_objects_and_integral_floats_are_integers() {
    let app = App::start();
    let (s, before) = app.call("GET", "/v1/schedules/nightly-backup", None);
    assert_eq!(s, 200, "{before}");
    let (s, e) = app.call(
        "PATCH",
        "/v1/schedules/nightly-backup",
        Some(json!([null, null])),
    );
    assert_eq!((s, error_code(&e).as_str()), (400, "bad_request"), "{e}");
    let (_, after) = app.call("GET", "/v1/schedules/nightly-backup", None);
    assert_eq!(before, after, "a refused body changes nothing");

    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "float-shop", "name": "Float", "schema": "none"})),
    );
    assert_eq!(s, 201, "{t}");
    let (s, r) = app.call(
        "POST",
        "/v1/rollouts",
        Some(
            json!({"target": "head", "selector": {"tenants": ["float-shop"]}, "dry_run": true,
            "concurrency": 4.0, "waves": [{"count": 1.0}]}),
        ),
    );
    assert_eq!(s, 200, "4.0 is the integer 4: {r}");
    let (s, e) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"all": true}, "dry_run": true, "concurrency": 4.5})),
    );
    assert_eq!((s, error_code(&e).as_str()), (400, "bad_request"), "{e}");

    let key = |body: Option<&str>| {
        let req = ureq::post(&format!("{}/v1/tenants/float-shop/keys", app.url))
            .set("Authorization", &format!("Bearer {}", crate::common::TOKEN))
            .set("Content-Type", "application/json");
        let sent = match body {
            None => req.call(),
            Some(b) => req.send_string(b),
        };
        match sent {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(key(None), 201, "no body: a key with the default name");
    assert_eq!(key(Some("null")), 201, "null is no body");
    assert_eq!(key(Some("\u{0}")), 400, "garbage is not no body");
    assert_eq!(key(Some("[1]")), 400, "not an object");
}

fn tenant_count(app: &App) -> usize {
    let (_, page) = app.call("GET", "/v1/tenants?limit=500", None);
    page["items"].as_array().expect("items").len()
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn bad_tenant_input_is_refused_clearly_and_changes_nothing() {
    let app = App::start();
    let (s, _) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "taken", "name": "First", "schema": "none"})),
    );
    assert_eq!(s, 201);
    let tenants_dir = app.data_dir.join("tenants");
    let files_before = files_in(&tenants_dir);

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"slug": "../etc", "name": "x"}), 422, "invalid"),
        (json!({"slug": "..", "name": "x"}), 422, "invalid"),
        (json!({"slug": "Upper", "name": "x"}), 422, "invalid"),
        (json!({"slug": "a", "name": "x"}), 422, "invalid"),
        (json!({"slug": "-lead", "name": "x"}), 422, "invalid"),
        (json!({"slug": "ok-slug", "name": ""}), 422, "invalid"),
        (
            json!({"slug": "ok-slug", "name": "x", "contact_email": "not-an-email"}),
            422,
            "invalid",
        ),
        (
            json!({"slug": "ok-slug", "name": "x", "labels": {"bad key": "v"}}),
            422,
            "invalid",
        ),
        (
            json!({"slug": "ok-slug", "name": "x", "server": "no-such-server"}),
            422,
            "invalid",
        ),
        (
            json!({"slug": "ok-slug", "name": "x", "schema": "phase:9"}),
            422,
            "invalid",
        ),
        (
            json!({"slug": "ok-slug", "name": "x", "schema": "latest"}),
            422,
            "invalid",
        ),
        (
            json!({"slug": "ok-slug", "name": "x", "schema": "version:1"}),
            422,
            "invalid",
        ),
        (
            json!({"slug": "ok-slug", "name": "x", "plan": "gold"}),
            422,
            "invalid",
        ),
        (json!({"slug": "taken", "name": "Second"}), 409, "conflict"),
        (
            json!({"slug": "ok-slug", "name": "x", "surprise": 1}),
            400,
            "bad_request",
        ),
        (json!({"name": "no slug"}), 400, "bad_request"),
        (json!({"slug": 42, "name": "x"}), 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let (s, e) = app.call("POST", "/v1/tenants", Some(body.clone()));
        assert_eq!(
            (s, error_code(&e).as_str()),
            (status, code),
            "{body} -> {e}"
        );
    }
    for raw in ["{", "not json", "[1,2]", ""] {
        let (s, e) = call_raw(&app.url, "POST", "/v1/tenants", "application/json", raw);
        assert_eq!(
            (s, error_code(&e).as_str()),
            (400, "bad_request"),
            "{raw:?}"
        );
    }
    let (s, e) = call_raw(
        &app.url,
        "POST",
        "/v1/tenants",
        "text/plain",
        r#"{"slug":"abc","name":"x"}"#,
    );
    assert_eq!((s, error_code(&e).as_str()), (400, "bad_request"));

    // Bad patches and queries.
    let patches = [
        (json!({"status": "deleted"}), 422),
        (json!({"name": ""}), 422),
        (json!({"labels": {"k": "a b"}}), 422),
        (json!({"contact_email": "nope"}), 422),
        (json!({"slug": "renamed"}), 400),
    ];
    for (body, status) in patches {
        let (s, e) = app.call("PATCH", "/v1/tenants/taken", Some(body.clone()));
        assert_eq!(s, status, "{body} -> {e}");
    }
    let (s, _) = app.call("PATCH", "/v1/tenants/nobody", Some(json!({"name": "x"})));
    assert_eq!(s, 404);
    for q in [
        "limit=0",
        "limit=501",
        "limit=x",
        "status=gone",
        "label=novalue",
        "phase=8",
        "phase=-1",
        "server=nope",
        "color=red",
    ] {
        let (s, e) = app.call("GET", &format!("/v1/tenants?{q}"), None);
        assert!(s == 400 || s == 422, "{q}: {s} {e}");
        error_code(&e);
    }

    // Nothing changed.
    assert_eq!(tenant_count(&app), 1);
    assert_eq!(files_in(&tenants_dir), files_before, "no stray tenant file");
    let (_, t) = app.call("GET", "/v1/tenants/taken", None);
    assert_eq!(t["name"], "First");
}

#[test]
fn bad_server_input_is_refused() {
    let app = App::start();
    let file = app.data_dir.join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let cases = [
        json!({"kind": "oracle", "url": "x"}),
        json!({"kind": "sqlite", "url": "postgres://x/y"}),
        json!({"kind": "sqlite", "url": format!("sqlite://{}", file.display())}),
        json!({"kind": "sqlite", "url": "sqlite:///tmp/x", "isolation": "schema"}),
        json!({"kind": "postgres", "url": "sqlite:///tmp"}),
        json!({"kind": "postgres", "url": "postgres://postgres@127.0.0.1:1/none"}),
        json!({"kind": "postgres", "url": "postgres://postgres@127.0.0.1:5432/postgres", "isolation": "file"}),
        json!({"kind": "sqlite", "url": "sqlite:///tmp/x", "capacity": 0}),
        json!({"kind": "sqlite", "url": "sqlite:///tmp/x", "name": "Bad Name"}),
        json!({"kind": "sqlite", "url": "sqlite:///tmp/x", "name": "default"}),
    ];
    for body in cases {
        let (s, e) = app.call("POST", "/v1/servers", Some(body.clone()));
        assert!(s == 422 || s == 409, "{body} -> {s} {e}");
        error_code(&e);
    }
    let (_, servers) = app.call("GET", "/v1/servers", None);
    assert_eq!(
        servers.as_array().map(Vec::len),
        Some(1),
        "only the default server"
    );
    let (s, e) = app.call("GET", "/v1/servers/nope", None);
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"));
}

#[test]
fn generated_operator_token_is_printed_once_and_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = || crate::common::AppOptions {
        operator_token: None,
        data_dir: Some(dir.path().to_path_buf()),
        ..crate::common::AppOptions::default()
    };
    let first = App::start_with(opts());
    let token = first.generated_token().expect("first start prints a token");
    assert_eq!(
        call_as(&first.url, Some(&token), "GET", "/v1/tenants", None).0,
        200
    );
    drop(first);
    let db = std::fs::read(dir.path().join("control.db")).expect("control db");
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is not stored in clear"
    );

    let second = App::start_with(opts());
    assert_eq!(second.generated_token(), None, "printed only once");
    assert_eq!(
        call_as(&second.url, Some(&token), "GET", "/v1/tenants", None).0,
        200
    );
    assert_eq!(
        call_as(&second.url, Some("tp_op_guess"), "GET", "/v1/tenants", None).0,
        401
    );
}

#[test]
fn responses_carry_a_request_id() {
    let app = App::start();
    let resp = ureq::get(&format!("{}/healthz", app.url))
        .set("x-request-id", "abc-123")
        .call()
        .expect("healthz");
    assert_eq!(resp.header("x-request-id"), Some("abc-123"));
    let resp = ureq::get(&format!("{}/healthz", app.url))
        .call()
        .expect("healthz");
    assert!(resp.header("x-request-id").is_some_and(|v| v.len() == 32));
}

/// Secrets are never cacheable: a new tenant key's answer says no-store.
#[test]
fn answers_carrying_secrets_are_not_stored() {
    let app = App::start();
    let (s, _) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "secret-shop", "name": "Secret"})),
    );
    assert_eq!(s, 201);
    let resp = ureq::post(&format!("{}/v1/tenants/secret-shop/keys", app.url))
        .set("Authorization", &format!("Bearer {}", crate::common::TOKEN))
        .send_json(json!({"name": "pos"}))
        .expect("key");
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.header("Cache-Control"), Some("no-store"));
    let body: Value = resp.into_json().expect("json");
    assert!(body["key"].as_str().is_some_and(|k| !k.is_empty()));
}
