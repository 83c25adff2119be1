//! `tenantplane rollout …` against a running server: plan, start and watch,
//! status and list, controls, a halted rollout, and bad flags.

use std::process::Command;

use crate::common::{App, AppOptions, TOKEN};
use serde_json::{json, Value};

struct Run {
    ok: bool,
    code: Option<i32>,
    out: String,
    err: String,
}

fn cli_at(url: &str, args: &[&str]) -> Run {
    let out = Command::new(crate::common::bin())
        .args(args)
        .env("TENANTPLANE_URL", url)
        .env("TENANTPLANE_TOKEN", TOKEN)
        .output()
        .expect("run cli");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cli(app: &App, args: &[&str]) -> Run {
    cli_at(&app.url, args)
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", run.out, run.err))
}

/// Creates a tenant at phase 0 and returns its id.
fn tenant(app: &App, slug: &str, region: &str) -> String {
    let (s, t) = app.call(
        "POST",
        "/v1/tenants",
        Some(json!({
            "slug": slug, "name": slug, "labels": {"region": region}, "schema": "phase:0",
        })),
    );
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["phase"], 0);
    t["id"].as_str().expect("id").to_string()
}

fn phase(app: &App, slug: &str) -> Value {
    let (s, t) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
    assert_eq!(s, 200, "{t}");
    t["phase"].clone()
}

fn rollouts(app: &App) -> Vec<Value> {
    let (s, v) = app.call("GET", "/v1/rollouts", None);
    assert_eq!(s, 200, "{v}");
    v.as_array().expect("array").clone()
}

#[test]
fn plan_start_watch_status_list_and_controls() {
    let app = App::start();
    for (slug, region) in [("eu-one", "eu"), ("eu-two", "eu"), ("us-one", "us")] {
        tenant(&app, slug, region);
    }

    // plan: a table row per tenant, a summary line, nothing created.
    let run = cli(&app, &["rollout", "plan", "--target", "head", "--all"]);
    assert!(run.ok, "{}", run.err);
    let mut lines = run.out.lines();
    let header = lines.next().unwrap_or_default();
    for col in ["SLUG", "WAVE", "ACTION", "FROM", "TO", "STEPS"] {
        assert!(header.contains(col), "{}", run.out);
    }
    for slug in ["eu-one", "eu-two", "us-one"] {
        assert!(
            run.out
                .lines()
                .any(|l| l.starts_with(slug) && l.contains("migrate")),
            "{slug} planned to migrate: {}",
            run.out
        );
    }
    assert!(
        run.out.contains("3 tenants, 3 to migrate"),
        "summary: {}",
        run.out
    );
    let run = cli(
        &app,
        &[
            "rollout", "plan", "--target", "head", "--all", "--wave", "canary=1", "--wave", "50%",
            "-o", "json",
        ],
    );
    assert!(run.ok, "{}", run.err);
    let plan = json_of(&run);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["to_migrate"], 3);
    assert_eq!(plan["total"], 3);
    assert_eq!(plan["waves"][0], json!({"name": "canary", "size": 1}));
    assert_eq!(plan["waves"][1]["size"], 2, "50% of 3, rounded up: {plan}");
    assert!(plan["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["action"] == "migrate" && !t["steps"].as_array().expect("steps").is_empty()));
    assert!(rollouts(&app).is_empty(), "plan is a dry run");

    // start --watch: follows the rollout to its end, exit 0.
    let run = cli(
        &app,
        &[
            "rollout",
            "start",
            "--target",
            "head",
            "--label",
            "region=eu",
            "--wave",
            "canary=1",
            "--watch",
        ],
    );
    assert!(
        run.ok,
        "exit {:?}\nstdout: {}\nstderr: {}",
        run.code, run.out, run.err
    );
    let list = rollouts(&app);
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_str().expect("id").to_string();
    assert!(
        run.out.contains(&format!("rollout {id} succeeded")),
        "summary: {}",
        run.out
    );
    assert!(
        run.out.contains("2/2 done"),
        "progress and summary count: {}",
        run.out
    );
    assert_eq!(phase(&app, "eu-one"), 7);
    assert_eq!(phase(&app, "eu-two"), 7);
    assert_eq!(phase(&app, "us-one"), 0, "not selected");

    // status and list.
    let run = cli(&app, &["rollout", "status", &id, "-o", "json"]);
    assert!(run.ok, "{}", run.err);
    let r = json_of(&run);
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["state"], "succeeded");
    assert_eq!(r["total"], 2);
    assert_eq!(r["counts"]["succeeded"], 2);
    assert_eq!(r["selector"], json!({"labels": {"region": "eu"}}));
    let run = cli(&app, &["rollout", "status", &id]);
    assert!(run.ok, "{}", run.err);
    assert!(
        run.out.contains(&id) && run.out.contains("succeeded"),
        "{}",
        run.out
    );
    let run = cli(&app, &["rollout", "list", "-o", "json"]);
    assert!(run.ok, "{}", run.err);
    let ids: Vec<Value> = json_of(&run)
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!(id)]);
    let run = cli(
        &app,
        &["rollout", "list", "--state", "running", "-o", "json"],
    );
    assert!(run.ok, "{}", run.err);
    assert_eq!(json_of(&run), json!([]));

    // Watching a finished rollout ends at once, with its outcome.
    let run = cli(&app, &["rollout", "watch", &id]);
    assert!(run.ok, "{}", run.err);
    assert!(run.out.contains("succeeded"), "{}", run.out);

    // A finished rollout cannot be paused: the API's 409 and message.
    let run = cli(&app, &["rollout", "pause", &id]);
    assert!(!run.ok);
    assert!(
        run.err.contains("409") && run.err.contains("cannot pause"),
        "{}",
        run.err
    );
    let run = cli(&app, &["rollout", "status", "no-such-rollout"]);
    assert!(!run.ok && run.err.contains("404"), "{}", run.err);
    let run = cli(&app, &["rollout", "watch", "no-such-rollout"]);
    assert!(!run.ok && run.err.contains("404"), "{}", run.err);

    // start, then watch -o json: stdout is one JSON document.
    let run = cli(
        &app,
        &[
            "rollout", "start", "--target", "head", "--tenant", "us-one", "-o", "json",
        ],
    );
    assert!(run.ok, "{}", run.err);
    let started = json_of(&run);
    let id2 = started["id"].as_str().expect("id").to_string();
    assert_eq!(started["total"], 1);
    let run = cli(&app, &["rollout", "watch", &id2, "-o", "json"]);
    assert!(run.ok, "{}\n{}", run.out, run.err);
    let summary = json_of(&run);
    assert_eq!(summary["rollout"]["state"], "succeeded");
    assert_eq!(summary["failed_tasks"], json!([]));
    assert_eq!(phase(&app, "us-one"), 7);

    // Nothing left to migrate: the plan says skip.
    let run = cli(
        &app,
        &["rollout", "plan", "--target", "head", "--all", "-o", "json"],
    );
    assert!(run.ok, "{}", run.err);
    assert_eq!(json_of(&run)["to_migrate"], 0);

    // The API's own validation comes back as an error.
    let run = cli(
        &app,
        &["rollout", "start", "--target", "head", "--tenant", "nobody"],
    );
    assert!(!run.ok);
    assert!(
        run.err.contains("422") && run.err.contains("nobody"),
        "{}",
        run.err
    );
}

/// Without a worker a rollout stays running: pause, watch (stops, non-zero),
/// resume, cancel, watch (cancelled, non-zero), retry (nothing failed: 409).
#[test]
fn controls_and_a_paused_rollout() {
    let app = App::start_with(AppOptions {
        command: vec!["api".into()],
        ..AppOptions::default()
    });
    tenant(&app, "shop-a", "eu");
    tenant(&app, "shop-b", "eu");
    let run = cli(
        &app,
        &[
            "rollout", "start", "--target", "phase:3", "--all", "-o", "json",
        ],
    );
    assert!(run.ok, "{}", run.err);
    let r = json_of(&run);
    assert_eq!(r["state"], "running");
    assert_eq!(r["counts"]["pending"], 2);
    let id = r["id"].as_str().expect("id").to_string();

    let run = cli(&app, &["rollout", "pause", &id, "-o", "json"]);
    assert!(run.ok, "{}", run.err);
    assert_eq!(json_of(&run)["state"], "paused");

    let run = cli(&app, &["rollout", "watch", &id]);
    assert!(!run.ok, "a paused rollout is not a success: {}", run.out);
    assert!(
        run.out.contains(&format!("rollout {id} paused")),
        "{}",
        run.out
    );
    assert!(
        run.err.contains("paused") && run.err.contains(&format!("rollout resume {id}")),
        "says how to go on: {}",
        run.err
    );

    let run = cli(&app, &["rollout", "resume", &id]);
    assert!(run.ok, "{}", run.err);
    assert!(run.out.contains("running"), "{}", run.out);

    let run = cli(&app, &["rollout", "retry", &id]);
    assert!(!run.ok);
    assert!(
        run.err.contains("409") && run.err.contains("no failed task"),
        "{}",
        run.err
    );

    let run = cli(&app, &["rollout", "cancel", &id, "-o", "json"]);
    assert!(run.ok, "{}", run.err);
    let r = json_of(&run);
    assert_eq!(r["state"], "cancelled");
    assert_eq!(r["counts"]["cancelled"], 2);

    let run = cli(&app, &["rollout", "watch", &id]);
    assert!(!run.ok);
    assert!(run.out.contains("cancelled 2"), "{}", run.out);
    assert!(run.err.contains("cancelled"), "{}", run.err);
}

/// A tenant whose database already has the column phase 1 adds fails for
/// good; with no failure allowed the rollout halts, and `watch` says so.
#[test]
fn watch_reports_a_halted_rollout_and_its_failed_tenants() {
    use diesel::prelude::*;

    let app = App::start();
    let broken = tenant(&app, "broken-shop", "eu");
    tenant(&app, "fine-shop", "eu");
    let file = app
        .data_dir
        .join("tenants")
        .join(format!("t_{}.db", broken.replace('-', "")));
    let mut conn =
        diesel::SqliteConnection::establish(&file.to_string_lossy()).expect("open tenant db");
    diesel::sql_query("ALTER TABLE sales ADD COLUMN invoice_number BIGINT")
        .execute(&mut conn)
        .expect("break the tenant");
    drop(conn);

    let run = cli(
        &app,
        &[
            "rollout",
            "start",
            "--target",
            "head",
            "--all",
            "--max-failed",
            "0",
            "--max-attempts",
            "1",
            // The broken tenant's drift is what makes its migration fail.
            "--allow-drift",
            "--watch",
        ],
    );
    assert!(!run.ok, "a halted rollout is not a success: {}", run.out);
    let id = rollouts(&app)[0]["id"].as_str().expect("id").to_string();
    assert!(
        run.out.contains(&format!("rollout {id} halted")),
        "{}",
        run.out
    );
    assert!(run.out.contains("failure budget exceeded"), "{}", run.out);
    // The failed tenants, with the migration that failed and why.
    let row = run
        .out
        .lines()
        .find(|l| l.starts_with("broken-shop"))
        .unwrap_or_else(|| panic!("failed tenant listed: {}", run.out));
    assert!(
        row.contains("20261125010100") && row.contains("invoice_number"),
        "{row}"
    );
    assert!(!run.out.lines().any(|l| l.starts_with("fine-shop")));
    assert!(
        run.err.contains("halted") && run.err.contains(&format!("rollout resume {id}")),
        "{}",
        run.err
    );
    assert_eq!(phase(&app, "broken-shop"), 0);

    let run = cli(&app, &["rollout", "watch", &id, "-o", "json"]);
    assert!(!run.ok);
    let summary = json_of(&run);
    assert_eq!(summary["rollout"]["state"], "halted");
    let failed = summary["failed_tasks"].as_array().expect("failed tasks");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["slug"], "broken-shop");
    assert_eq!(failed[0]["error_version"], "20261125010100");
}

/// Flags checked before any request (the URL points nowhere).
#[test]
fn bad_flags_fail_with_a_message() {
    let nowhere = "http://127.0.0.1:9";
    let base = ["rollout", "plan", "--target", "head", "--all"];
    let cases: &[(&[&str], &str)] = &[
        (&["--wave", "0%"], "more than 0"),
        (&["--wave", "150%"], "at most 100"),
        (&["--wave", "canary=0"], "at least 1"),
        (&["--wave", "canary=ten"], "not a number"),
        (&["--wave", "=5"], "name"),
        (&["--label", "novalue"], "key=value"),
        (&["--concurrency", "many"], "invalid value"),
    ];
    for (extra, message) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let run = cli_at(nowhere, &args);
        assert!(!run.ok, "{args:?} accepted");
        assert!(
            run.err.contains(message),
            "{args:?}: {message:?} in {}",
            run.err
        );
        assert!(
            !run.err.contains("is tenantplane running"),
            "{args:?} sent a request: {}",
            run.err
        );
    }
    let run = cli_at(nowhere, &["rollout", "start", "--target", "head"]);
    assert!(!run.ok);
    assert!(run.err.contains("--all, --tenant"), "{}", run.err);
    let run = cli_at(nowhere, &["rollout", "start", "--all"]);
    assert!(!run.ok);
    assert!(run.err.contains("--target"), "{}", run.err);
}
