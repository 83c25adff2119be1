//! Several processes on one control database, and the CLI against a running
//! server.

use std::process::Command;

use crate::common::{call_as, App, AppOptions, TestPg, TOKEN};
use serde_json::Value;

#[test]
fn two_api_processes_start_at_once_on_one_postgres_control_db() {
    let Some(control) = TestPg::new() else { return };
    let start = || {
        let url = control.url();
        std::thread::spawn(move || {
            App::start_with(AppOptions {
                command: vec!["api".into()],
                control_db: Some(url),
                operator_token: None,
                ..AppOptions::default()
            })
        })
    };
    let (a, b) = (start(), start());
    let a = a.join().expect("first process");
    let b = b.join().expect("second process");
    for app in [&a, &b] {
        assert_eq!(call_as(&app.url, None, "GET", "/readyz", None).0, 200);
    }
    let tokens: Vec<String> = [&a, &b]
        .iter()
        .filter_map(|app| app.generated_token())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "exactly one process generated the operator token"
    );
    for app in [&a, &b] {
        let (s, servers) = call_as(&app.url, Some(&tokens[0]), "GET", "/v1/servers", None);
        assert_eq!(s, 200, "the token works on both");
        let defaults = servers
            .as_array()
            .expect("servers")
            .iter()
            .filter(|s| s["name"] == "default")
            .count();
        assert_eq!(defaults, 1, "one default server: {servers}");
    }
}

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

#[test]
fn cli_operator_commands() {
    let app = App::start();
    let (ok, out, err) = cli(
        &app,
        &[
            "tenants",
            "create",
            "cli-shop",
            "--name",
            "CLI Shop",
            "--label",
            "region=eu",
            "--schema",
            "phase:0",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let t: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(t["slug"], "cli-shop");
    assert_eq!(t["phase"], 0);

    let (ok, out, err) = cli(&app, &["tenants", "list"]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("SLUG") && h.contains("PHASE")),
        "{out}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("cli-shop") && l.contains("region=eu")),
        "{out}"
    );

    let (ok, out, _) = cli(
        &app,
        &["tenants", "list", "--label", "region=us", "-o", "json"],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["items"],
        serde_json::json!([])
    );

    let (ok, out, _) = cli(&app, &["tenants", "suspend", "cli-shop", "-o", "json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["status"],
        "suspended"
    );
    let (ok, out, _) = cli(&app, &["tenants", "show", "cli-shop"]);
    assert!(ok && out.contains("suspended"), "{out}");

    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().display());
    let (ok, _, err) = cli(
        &app,
        &[
            "servers", "add", "--kind", "sqlite", "--url", &url, "--name", "extra",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&app, &["servers", "list", "-o", "json"]);
    assert!(ok);
    let names: Vec<String> = serde_json::from_str::<Value>(&out)
        .expect("json")
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["default", "extra"]);

    // Errors: the API's message, a non-zero exit.
    let (ok, _, err) = cli(&app, &["tenants", "create", "cli-shop", "--name", "Again"]);
    assert!(!ok);
    assert!(err.contains("409") && err.contains("taken"), "{err}");
    let (ok, _, err) = cli(&app, &["tenants", "show", "nobody"]);
    assert!(!ok && err.contains("404"), "{err}");
    let out = Command::new(crate::common::bin())
        .args(["tenants", "list"])
        .env("TENANTPLANE_URL", &app.url)
        .env("TENANTPLANE_TOKEN", "wrong-token-wrong")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn serve_demo_creates_a_fleet_once() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = || AppOptions {
        command: vec!["serve".into(), "--demo".into()],
        data_dir: Some(dir.path().to_path_buf()),
        ..AppOptions::default()
    };
    let app = App::start_with(opts());
    let (s, page) = app.call("GET", "/v1/tenants?limit=500", None);
    assert_eq!(s, 200);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 50);
    let phases: std::collections::BTreeSet<i64> =
        items.iter().filter_map(|t| t["phase"].as_i64()).collect();
    assert!(phases.len() >= 3, "a mixed fleet: {phases:?}");
    assert!(items.iter().all(|t| t["labels"]["region"].is_string()));
    let plans: std::collections::BTreeSet<&str> =
        items.iter().filter_map(|t| t["plan"].as_str()).collect();
    assert_eq!(
        plans.into_iter().collect::<Vec<_>>(),
        ["free", "pro", "standard"]
    );
    drop(app);
    let again = App::start_with(opts());
    let (_, page) = again.call("GET", "/v1/tenants?limit=500", None);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(50),
        "no second fleet"
    );
    drop(again);
    // stderr is a file here, not a terminal: human logs without colour codes.
    let log = std::fs::read_to_string(dir.path().join("tenantplane.log")).expect("log");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in the log: {log:?}"
    );
}
