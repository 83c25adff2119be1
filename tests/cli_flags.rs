//! `tenantplane plans|features|override|keys` against a running server.

use std::process::Command;

use crate::common::{call_as, App, TOKEN};
use serde_json::{json, Value};

fn cli(app: &App, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(crate::common::bin())
        .args(args)
        .env("TENANTPLANE_URL", &app.url)
        .env("TENANTPLANE_TOKEN", TOKEN)
        .output()
        .expect("run cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_out(app: &App, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let (ok, out, err) = cli(app, &all);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn plans_features_overrides_and_keys_from_the_cli() {
    let app = App::start();
    let (ok, out, _) = cli(&app, &["plans", "list"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SLUG") && lines.iter().any(|l| l.starts_with("pro ")),
        "{out}"
    );

    let p = json_out(
        &app,
        &[
            "plans",
            "create",
            "kiosk",
            "--name",
            "Kiosk",
            "--price-cents",
            "990",
            "--features",
            "branding,premium_ui",
            "--fallback",
            "free",
        ],
    );
    assert_eq!(p["features"], json!(["branding", "premium_ui"]));
    let p = json_out(
        &app,
        &[
            "plans",
            "edit",
            "kiosk",
            "--price-cents",
            "1290",
            "--no-fallback",
        ],
    );
    assert_eq!(
        (
            p["price_cents"].as_i64(),
            p["fallback"].clone(),
            p["name"].as_str()
        ),
        (Some(1290), Value::Null, Some("Kiosk"))
    );
    let (ok, _, err) = cli(
        &app,
        &[
            "plans",
            "create",
            "bad",
            "--name",
            "Bad",
            "--price-cents=-5",
        ],
    );
    assert!(!ok && err.contains("422"), "{err}");

    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "cli-flags", "name": "C", "plan": "kiosk"})),
    );
    assert_eq!(s, 201, "{t}");
    let (ok, out, _) = cli(&app, &["features", "cli-flags"]);
    assert!(
        ok && out.starts_with("tenant cli-flags plan kiosk"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("branding") && l.contains("PLAN")),
        "{out}"
    );
    let cat = json_out(&app, &["features", "--catalogue"]);
    assert_eq!(
        cat.as_array().map(Vec::len),
        Some(tenantplane_migrations::catalogue::FEATURES.len())
    );

    let o = json_out(
        &app,
        &[
            "override",
            "cli-flags",
            "webhooks",
            "on",
            "--reason",
            "pilot",
        ],
    );
    assert_eq!(
        (o["enabled"].as_bool(), o["reason"].as_str()),
        (Some(true), Some("pilot"))
    );
    let f = json_out(&app, &["features", "cli-flags"]);
    let webhooks = f["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|x| x["feature"] == "webhooks")
        .cloned()
        .expect("webhooks");
    assert_eq!(webhooks["reason"], "OVERRIDE_ON");
    let (ok, out, _) = cli(&app, &["override", "cli-flags", "webhooks", "clear"]);
    assert!(ok && out.contains("cleared"), "{out}");
    let (ok, _, err) = cli(&app, &["override", "cli-flags", "teleport", "on"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = cli(&app, &["override", "cli-flags", "webhooks", "sideways"]);
    assert!(!ok && err.contains("sideways"), "{err}");

    let k = json_out(&app, &["keys", "issue", "cli-flags", "--name", "till"]);
    let key = k["key"].as_str().expect("key").to_string();
    let (s, me) = call_as(&app.url, Some(&key), "GET", "/v1/tenant", None);
    assert_eq!((s, me["slug"].as_str()), (200, Some("cli-flags")));
    let (ok, out, _) = cli(
        &app,
        &["keys", "revoke", "cli-flags", k["id"].as_str().expect("id")],
    );
    assert!(ok && out.contains("revoked"), "{out}");
    assert_eq!(
        call_as(&app.url, Some(&key), "GET", "/v1/tenant", None).0,
        401
    );
}
