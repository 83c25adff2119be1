//! The rollout engine end to end: the real binary (API and worker), real
//! tenant databases, on SQLite and PostgreSQL.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::common::{error_code, sqlite_applied, wait_for, App, AppOptions, TestPg};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{json, Value};
use tenantplane_migrations::catalogue;

const LONG: Duration = Duration::from_secs(300);

fn all_versions() -> Vec<String> {
    catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .collect()
}

fn versions_upto(v: &str) -> Vec<String> {
    all_versions()
        .into_iter()
        .filter(|x| x.as_str() <= v)
        .collect()
}

fn head() -> String {
    catalogue::head().expect("head").to_string()
}

/// Creates tenants at `schema` and returns (slug, id) pairs.
fn tenants(app: &App, prefix: &str, n: usize, schema: &str, extra: Value) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let mut body = json!({"slug": format!("{prefix}-{i:03}"), "name": format!("Shop {i}"), "schema": schema});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            let (s, t) = app.call("POST", "/v1/tenants", Some(body));
            assert_eq!(s, 201, "{t}");
            (t["slug"].as_str().expect("slug").to_string(), t["id"].as_str().expect("id").to_string())
        })
        .collect()
}

fn start(app: &App, body: Value) -> Value {
    let (s, r) = app.call("POST", "/v1/rollouts", Some(body));
    assert_eq!(s, 201, "{r}");
    r
}

fn rollout(app: &App, id: &str) -> Value {
    let (s, r) = app.call("GET", &format!("/v1/rollouts/{id}"), None);
    assert_eq!(s, 200, "{r}");
    r
}

/// Waits until the rollout's state is one of `states`.
fn wait_state(app: &App, id: &str, states: &[&str]) -> Value {
    wait_for(&format!("rollout {id} to reach {states:?}"), LONG, || {
        let r = rollout(app, id);
        states
            .contains(&r["state"].as_str().unwrap_or(""))
            .then_some(r)
    })
}

fn tasks(app: &App, id: &str, state: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut path = format!("/v1/rollouts/{id}/tasks?limit=1000");
        if let Some(s) = state {
            path += &format!("&state={s}");
        }
        if !cursor.is_empty() {
            path += &format!("&cursor={cursor}");
        }
        let (s, page) = app.call("GET", &path, None);
        assert_eq!(s, 200, "{page}");
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

/// The rollout's progress counts (kept by triggers, never counted on read)
/// agree with a full count of its task rows.
fn assert_counts_match_tasks(app: &App, id: &str) {
    let r = rollout(app, id);
    let all = tasks(app, id, None);
    for state in [
        "pending",
        "running",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
    ] {
        let rows = all.iter().filter(|t| t["state"] == state).count() as u64;
        assert_eq!(
            r["counts"][state].as_u64(),
            Some(rows),
            "{state}: counters {} vs {rows} task rows",
            r["counts"]
        );
    }
}

fn tenant_dir(app: &App) -> std::path::PathBuf {
    app.data_dir.join("tenants")
}

fn fast_worker() -> Vec<(String, String)> {
    vec![("TENANTPLANE_WORKER_THREADS".into(), "4".into())]
}

fn serve() -> App {
    App::start_with(AppOptions {
        env: fast_worker(),
        ..AppOptions::default()
    })
}

#[test]
fn upgrade_then_rollback_then_upgrade_on_sqlite() {
    let app = serve();
    let fleet = tenants(&app, "shop", 8, "phase:0", json!({}));
    let r = start(&app, json!({"target": "head", "selector": {"all": true}}));
    let done = wait_state(
        &app,
        r["id"].as_str().expect("id"),
        &["succeeded", "failed", "halted"],
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["succeeded"], 8);
    for (slug, id) in &fleet {
        let (_, t) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
        assert_eq!(t["schema_version"].as_str(), Some(head().as_str()));
        assert_eq!(
            sqlite_applied(&tenant_dir(&app), id),
            all_versions(),
            "{slug}: the tenant database itself is at head"
        );
    }

    // A target older than the tenants: the down migrations run.
    let back = start(
        &app,
        json!({"target": "phase:2", "selector": {"tenants": [fleet[0].0, fleet[1].1]}}),
    );
    let done = wait_state(
        &app,
        back["id"].as_str().expect("id"),
        &["succeeded", "failed", "halted"],
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    let p2 = catalogue::phase_version(2).expect("phase 2");
    for (slug, id) in &fleet[..2] {
        let (_, t) = app.call("GET", &format!("/v1/tenants/{slug}"), None);
        assert_eq!(
            (t["schema_version"].as_str(), t["phase"].as_u64()),
            (Some(p2), Some(2))
        );
        assert_eq!(sqlite_applied(&tenant_dir(&app), id), versions_upto(p2));
    }
    assert_eq!(
        sqlite_applied(&tenant_dir(&app), &fleet[2].1),
        all_versions(),
        "others untouched"
    );

    // And up again: only the two rolled-back tenants have work.
    let up = start(&app, json!({"target": "head", "selector": {"all": true}}));
    assert_eq!(up["counts"]["skipped"], 6, "{up}");
    let done = wait_state(
        &app,
        up["id"].as_str().expect("id"),
        &["succeeded", "failed", "halted"],
    );
    assert_eq!(done["counts"]["succeeded"], 2);
    assert_eq!(
        sqlite_applied(&tenant_dir(&app), &fleet[0].1),
        all_versions()
    );
}

#[test]
fn a_noop_rollout_completes_from_the_control_db_alone() {
    let app = serve();
    let fleet = tenants(&app, "noop", 5, "head", json!({}));
    // Remove the tenant databases: a no-op rollout must not need them.
    for (_, id) in &fleet {
        std::fs::rename(
            tenant_dir(&app).join(format!("t_{}.db", id.replace('-', ""))),
            tenant_dir(&app).join(format!("moved-{id}")),
        )
        .expect("move");
    }
    let r = start(&app, json!({"target": "head", "selector": {"all": true}}));
    assert_eq!(r["state"], "succeeded", "finished at creation: {r}");
    assert_eq!(r["counts"]["skipped"], 5);
    // verify:true connects, so it fails on the missing databases.
    let v = start(
        &app,
        json!({"target": "head", "selector": {"all": true}, "verify": true, "max_attempts": 1,
        "failure_budget": {"max_failed": 10}}),
    );
    let done = wait_state(
        &app,
        v["id"].as_str().expect("id"),
        &["succeeded", "failed", "halted"],
    );
    assert_eq!(done["counts"]["failed"], 5, "{done}");
}

#[test]
fn dry_run_plans_and_changes_nothing() {
    let app = serve();
    tenants(
        &app,
        "dry-a",
        2,
        "phase:0",
        json!({"labels": {"ring": "a"}}),
    );
    tenants(&app, "dry-b", 2, "head", json!({"labels": {"ring": "a"}}));
    let (s, plan) = app.call(
        "POST",
        "/v1/rollouts",
        Some(
            json!({"target": "head", "selector": {"labels": {"ring": "a"}},
        "dry_run": true, "waves": [{"name": "canary", "count": 1}]}),
        ),
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        (plan["total"].as_u64(), plan["to_migrate"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(plan["waves"][0], json!({"name": "canary", "size": 1}));
    let steps_to_head = (all_versions().len()
        - versions_upto(catalogue::phase_version(0).expect("p0")).len())
        as u64;
    for t in plan["tasks"].as_array().expect("tasks") {
        match t["slug"].as_str().unwrap_or("") {
            s if s.starts_with("dry-a") => {
                assert_eq!(t["action"], "migrate");
                assert_eq!(
                    t["steps"].as_array().map(|v| v.len() as u64),
                    Some(steps_to_head)
                );
                assert_eq!(t["steps"][0]["direction"], "up");
            }
            _ => assert_eq!(
                (t["action"].as_str(), t["steps"].as_array().map(Vec::len)),
                (Some("skip"), Some(0))
            ),
        }
    }
    let (_, list) = app.call("GET", "/v1/rollouts", None);
    assert_eq!(list, json!([]), "a dry run creates no rollout");
    let (_, page) = app.call("GET", "/v1/tenants?phase=0", None);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(2),
        "and migrates nothing"
    );
}

#[test]
fn waves_run_one_after_the_other() {
    let app = serve();
    tenants(&app, "wave", 10, "phase:1", json!({}));
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true}, "concurrency": 2,
        "waves": [{"name": "canary", "count": 2}, {"name": "half", "percent": 50}]}),
    );
    assert_eq!(
        r["waves"],
        json!([{"name": "canary", "size": 2}, {"name": "half", "size": 5}, {"name": "rest", "size": 3}])
    );
    let id = r["id"].as_str().expect("id");
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    let all = tasks(&app, id, None);
    let by_wave = |w: u64| {
        all.iter()
            .filter(|t| t["wave"].as_u64() == Some(w))
            .cloned()
            .collect::<Vec<_>>()
    };
    for w in 1..3u64 {
        let prev_last_finish = by_wave(w - 1)
            .iter()
            .filter_map(|t| t["finished_at"].as_str().map(str::to_string))
            .max()
            .expect("finished");
        let first_start = by_wave(w)
            .iter()
            .filter_map(|t| t["started_at"].as_str().map(str::to_string))
            .min()
            .expect("started");
        assert!(
            first_start >= prev_last_finish,
            "wave {w} started at {first_start} before wave {} finished at {prev_last_finish}",
            w - 1
        );
    }
}

/// Makes migration 020100 fail permanently on a tenant: its database already
/// has a table of that name (drift an operator must fix).
fn break_tenant(app: &App, id: &str) {
    let path = tenant_dir(app).join(format!("t_{}.db", id.replace('-', "")));
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    c.batch_execute("CREATE TABLE expense_categories (id INTEGER PRIMARY KEY)")
        .expect("break");
}

/// The bodies of the outbox events of `kind` (SQLite control DB), oldest first.
fn events(app: &App, kind: &str) -> Vec<Value> {
    #[derive(diesel::QueryableByName)]
    struct Body {
        #[diesel(sql_type = diesel::sql_types::Text)]
        body: String,
    }
    let path = app.data_dir.join("control.db");
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    diesel::sql_query("SELECT body FROM outbox WHERE kind = ? ORDER BY created_at, id")
        .bind::<diesel::sql_types::Text, _>(kind)
        .load::<Body>(&mut c)
        .expect("outbox")
        .iter()
        .map(|b| serde_json::from_str(&b.body).expect("json"))
        .collect()
}

fn fix_tenant(app: &App, id: &str) {
    let path = tenant_dir(app).join(format!("t_{}.db", id.replace('-', "")));
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    c.batch_execute("DROP TABLE expense_categories")
        .expect("fix");
}

#[test]
fn a_permanent_failure_fails_its_tenant_and_the_rest_succeed_then_retry_fixes_it() {
    let app = serve();
    let fleet = tenants(&app, "perm", 5, "phase:0", json!({}));
    let (bad_slug, bad_id) = fleet[3].clone();
    break_tenant(&app, &bad_id);
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true}, "failure_budget": {"max_failed": 1}, "allow_drift": true}),
    );
    let id = r["id"].as_str().expect("id");
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(
        done["state"], "failed",
        "finished, with a failure inside the budget: {done}"
    );
    assert_eq!(
        (
            done["counts"]["succeeded"].as_u64(),
            done["counts"]["failed"].as_u64()
        ),
        (Some(4), Some(1))
    );
    assert_counts_match_tasks(&app, id);
    let failed = tasks(&app, id, Some("failed"));
    assert_eq!(failed.len(), 1);
    let err = failed[0]["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains(&bad_slug)
            && err.contains("20261125020100")
            && err.contains("expense_categories"),
        "{err}"
    );
    assert_eq!(failed[0]["attempts"], 1, "a permanent error is not retried");
    let ev = events(&app, "rollout.failed");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (
            ev[0]["rollout_id"].as_str(),
            ev[0]["succeeded"].as_i64(),
            ev[0]["failed"].as_i64()
        ),
        (Some(id), Some(4), Some(1))
    );
    assert!(events(&app, "rollout.succeeded").is_empty());
    assert_eq!(failed[0]["error_version"], "20261125020100");
    // The tenant stays at its last good version, in the control DB and in its database.
    let last_good = catalogue::previous("20261125020100").expect("previous");
    let (_, t) = app.call("GET", &format!("/v1/tenants/{bad_slug}"), None);
    assert_eq!(t["schema_version"].as_str(), Some(last_good));
    assert_eq!(
        sqlite_applied(&tenant_dir(&app), &bad_id),
        versions_upto(last_good)
    );

    // Fix the drift, retry the failed tenants.
    fix_tenant(&app, &bad_id);
    let (s, again) = app.call("POST", &format!("/v1/rollouts/{id}/retry"), None);
    assert_eq!(
        (s, again["state"].as_str()),
        (200, Some("running")),
        "{again}"
    );
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_counts_match_tasks(&app, id);
    assert_eq!(sqlite_applied(&tenant_dir(&app), &bad_id), all_versions());
    let ev = events(&app, "rollout.succeeded");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["succeeded"], 5);
    let (s, e) = app.call("POST", &format!("/v1/rollouts/{id}/retry"), None);
    assert_eq!(
        (s, error_code(&e).as_str()),
        (409, "conflict"),
        "nothing left to retry"
    );
}

#[test]
fn the_failure_budget_halts_and_pending_tenants_wait() {
    let app = serve();
    let fleet = tenants(&app, "budget", 6, "phase:0", json!({}));
    for (_, id) in &fleet[..3] {
        break_tenant(&app, id);
    }
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true}, "concurrency": 1, "failure_budget": {"max_failed": 0}, "allow_drift": true}),
    );
    let id = r["id"].as_str().expect("id");
    let halted = wait_state(&app, id, &["halted", "succeeded", "failed"]);
    assert_eq!(halted["state"], "halted", "{halted}");
    assert!(halted["halt_reason"]
        .as_str()
        .unwrap_or("")
        .contains("failure budget"));
    assert_eq!(halted["counts"]["failed"], 1);
    let ev = events(&app, "rollout.halted");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(ev[0]["halt_reason"]
        .as_str()
        .unwrap_or("")
        .contains("failure budget"));
    assert!(
        halted["counts"]["pending"].as_u64().unwrap_or(0) >= 2,
        "{halted}"
    );
    let pending_before = halted["counts"]["pending"].clone();
    // Halted means no new claims: the counts stay put.
    std::thread::sleep(Duration::from_millis(1500));
    let still = rollout(&app, id);
    assert_eq!(
        (still["state"].clone(), still["counts"]["pending"].clone()),
        (json!("halted"), pending_before)
    );

    // Cancel: pending tenants are cancelled, nothing else moves.
    let (s, c) = app.call("POST", &format!("/v1/rollouts/{id}/cancel"), None);
    assert_eq!((s, c["state"].as_str()), (200, Some("cancelled")), "{c}");
    assert_eq!(c["counts"]["pending"], 0);
    assert!(c["counts"]["cancelled"].as_u64().unwrap_or(0) >= 2);
    assert_counts_match_tasks(&app, id);
    let (s, e) = app.call("POST", &format!("/v1/rollouts/{id}/resume"), None);
    assert_eq!((s, error_code(&e).as_str()), (409, "conflict"));
}

#[test]
fn pause_holds_the_rollout_and_resume_finishes_it() {
    let app = App::start_with(AppOptions {
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "1".into())],
        ..AppOptions::default()
    });
    tenants(&app, "pause", 12, "phase:0", json!({}));
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true}, "concurrency": 1}),
    );
    let id = r["id"].as_str().expect("id");
    let (s, p) = app.call("POST", &format!("/v1/rollouts/{id}/pause"), None);
    assert_eq!((s, p["state"].as_str()), (200, Some("paused")), "{p}");
    // The tenant in hand finishes; then nothing moves.
    let settled = wait_for("the running task to finish", LONG, || {
        let r = rollout(&app, id);
        (r["counts"]["running"] == 0).then_some(r)
    });
    assert!(
        settled["counts"]["pending"].as_u64().unwrap_or(0) > 0,
        "{settled}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        rollout(&app, id)["counts"],
        settled["counts"],
        "a paused rollout claims nothing"
    );
    let (s, _) = app.call("POST", &format!("/v1/rollouts/{id}/pause"), None);
    assert_eq!(s, 409, "already paused");
    let (s, r) = app.call("POST", &format!("/v1/rollouts/{id}/resume"), None);
    assert_eq!((s, r["state"].as_str()), (200, Some("running")));
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(
        (done["state"].as_str(), done["counts"]["succeeded"].as_u64()),
        (Some("succeeded"), Some(12))
    );
    assert!(done["tenants_per_second"].as_f64().is_some_and(|r| r > 0.0));
}

#[test]
fn bad_rollout_input_is_refused_and_changes_nothing() {
    let app = serve();
    tenants(&app, "bad", 2, "phase:0", json!({"labels": {"ring": "x"}}));
    let cases = [
        (json!({"target": "tip", "selector": {"all": true}}), 422),
        (json!({"target": "phase:9", "selector": {"all": true}}), 422),
        (
            json!({"target": "version:1", "selector": {"all": true}}),
            422,
        ),
        (json!({"target": "none", "selector": {"all": true}}), 422),
        (json!({"target": "head", "selector": {}}), 422),
        (json!({"target": "head", "selector": {"all": false}}), 422),
        (
            json!({"target": "head", "selector": {"labels": {"ring": "nope"}}}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"tenants": ["nobody"]}}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"servers": ["nowhere"]}}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "concurrency": 0}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "max_attempts": 0}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "waves": [{"percent": 0}]}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "waves": [{"count": 1, "percent": 5}]}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "backoff": {"base_ms": 10, "max_ms": 1}}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "failure_budget": {"max_failed_percent": 101}}),
            422,
        ),
        (
            json!({"target": "head", "selector": {"all": true}, "concurrency": -1}),
            400,
        ),
        (
            json!({"target": "head", "selector": {"everything": true}}),
            400,
        ),
        (json!({"selector": {"all": true}}), 400),
    ];
    for (body, status) in cases {
        let (s, e) = app.call("POST", "/v1/rollouts", Some(body.clone()));
        assert_eq!(s, status, "{body} -> {e}");
        error_code(&e);
    }
    let (s, e) = app.call(
        "GET",
        "/v1/rollouts/00000000-0000-0000-0000-000000000000",
        None,
    );
    assert_eq!((s, error_code(&e).as_str()), (404, "not_found"));
    for action in ["pause", "resume", "cancel", "retry"] {
        let (s, _) = app.call("POST", &format!("/v1/rollouts/nope/{action}"), None);
        assert_eq!(s, 404, "{action}");
    }
    let (s, _) = app.call("GET", "/v1/rollouts/nope/tasks", None);
    assert_eq!(s, 404);
    let (_, list) = app.call("GET", "/v1/rollouts", None);
    assert_eq!(list, json!([]), "no refused request created a rollout");
    let (_, page) = app.call("GET", "/v1/tenants?phase=0", None);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(2),
        "and nothing was migrated"
    );

    // Controls of a finished rollout.
    let r = start(&app, json!({"target": "head", "selector": {"all": true}}));
    let id = r["id"].as_str().expect("id");
    wait_state(&app, id, &["succeeded"]);
    for action in ["pause", "resume", "cancel", "retry"] {
        let (s, e) = app.call("POST", &format!("/v1/rollouts/{id}/{action}"), None);
        assert_eq!(
            (s, error_code(&e).as_str()),
            (409, "conflict"),
            "{action} of a finished rollout"
        );
    }
    let (s, e) = app.call(
        "GET",
        &format!("/v1/rollouts/{id}/tasks?state=exploded"),
        None,
    );
    assert_eq!((s, error_code(&e).as_str()), (422, "invalid"));
}

#[test]
fn progress_streams_as_server_sent_events() {
    let app = serve();
    tenants(&app, "sse", 4, "phase:0", json!({}));
    let r = start(&app, json!({"target": "head", "selector": {"all": true}}));
    let id = r["id"].as_str().expect("id");
    let resp = ureq::get(&format!("{}/v1/rollouts/{id}/events", app.url))
        .set("Authorization", &format!("Bearer {}", crate::common::TOKEN))
        .call()
        .expect("events");
    assert_eq!(resp.content_type(), "text/event-stream");
    let text = std::io::read_to_string(resp.into_reader()).expect("read stream");
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let kind = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .expect("event line");
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data line");
            (kind, serde_json::from_str(data).expect("json data"))
        })
        .collect();
    let (last_kind, last) = events.last().expect("events");
    assert_eq!(*last_kind, "done", "the stream ends with done");
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["counts"]["succeeded"], 4);
    assert!(events[..events.len() - 1]
        .iter()
        .all(|(k, _)| *k == "progress"));
}

#[test]
fn metrics_report_tasks_and_durations() {
    let app = serve();
    tenants(&app, "metrics", 3, "phase:0", json!({}));
    let r = start(&app, json!({"target": "head", "selector": {"all": true}}));
    wait_state(&app, r["id"].as_str().expect("id"), &["succeeded"]);
    let resp = ureq::get(&format!("{}/metrics", app.url))
        .set("Authorization", &format!("Bearer {}", crate::common::TOKEN))
        .call()
        .expect("metrics");
    let text = resp.into_string().expect("text");
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        value("tenantplane_tasks{state=\"succeeded\"}"),
        3.0,
        "{text}"
    );
    assert_eq!(value("tenantplane_migration_duration_seconds_count"), 3.0);
    assert_eq!(
        value("tenantplane_migration_duration_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert_eq!(value("tenantplane_queue_depth"), 0.0);
    assert!(value("tenantplane_migration_duration_seconds_sum") > 0.0);
    assert_eq!(
        ureq::get(&format!("{}/metrics", app.url))
            .call()
            .map(|_| 200)
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(c, _) => c,
                _ => 0,
            }),
        401
    );
}

#[test]
fn a_locked_sqlite_tenant_is_migrated_after_retries() {
    let app = serve();
    let fleet = tenants(&app, "locked", 2, "phase:0", json!({}));
    let (_, id) = fleet[0].clone();
    let path = tenant_dir(&app).join(format!("t_{}.db", id.replace('-', "")));
    // Another process holds the tenant database's write lock.
    let mut holder = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    holder.batch_execute("BEGIN EXCLUSIVE").expect("lock");
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true}, "max_attempts": 20,
        "backoff": {"base_ms": 100, "max_ms": 400}}),
    );
    let rid = r["id"].as_str().expect("id").to_string();
    let blocked = wait_for("an attempt to fail on the lock", LONG, || {
        tasks(&app, &rid, None).into_iter().find(|t| {
            t["tenant_id"] == id.as_str()
                && t["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("locked"))
        })
    });
    assert_ne!(blocked["state"], "failed", "a lock is transient: {blocked}");
    holder.batch_execute("COMMIT").expect("unlock");
    let done = wait_state(&app, &rid, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    let task = tasks(&app, &rid, None)
        .into_iter()
        .find(|t| t["tenant_id"] == id.as_str())
        .expect("task");
    assert!(
        task["attempts"].as_u64().unwrap_or(0) >= 2,
        "migrated after a retry: {task}"
    );
    // Every attempt is in the task's history: the retries with their
    // error, then the success.
    let history = task["history"].as_array().expect("history");
    assert_eq!(
        history.len() as u64,
        task["attempts"].as_u64().unwrap_or(0),
        "{task}"
    );
    let (last, retries) = history.split_last().expect("attempts");
    assert_eq!(last["outcome"], "succeeded", "{task}");
    assert!(
        retries.iter().all(|a| a["outcome"] == "retry"
            && a["error"].as_str().is_some_and(|e| e.contains("locked"))),
        "{task}"
    );
    assert_eq!(sqlite_applied(&tenant_dir(&app), &id), all_versions());
}

#[test]
fn a_locked_postgres_tenant_is_migrated_after_retries() {
    let Some(pg) = TestPg::new() else { return };
    let app = serve();
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let fleet = tenants(&app, "pglocked", 3, "phase:0", json!({"server": "pg"}));
    let (_, id) = fleet[1].clone();
    // Another session holds the tenant's migration lock.
    let mut holder = pg.connect();
    let key = tenantplane_fleet::tenant_run::lock_key(&id);
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({key})"))
        .expect("lock");
    let r = start(
        &app,
        json!({"target": "head", "selector": {"servers": ["pg"]}, "max_attempts": 20,
        "backoff": {"base_ms": 100, "max_ms": 400}}),
    );
    let rid = r["id"].as_str().expect("id").to_string();
    let blocked = wait_for("an attempt to fail on the lock", LONG, || {
        tasks(&app, &rid, None).into_iter().find(|t| {
            t["tenant_id"] == id.as_str()
                && t["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("locked"))
        })
    });
    assert_ne!(blocked["state"], "failed", "a lock is transient: {blocked}");
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({key})"))
        .expect("unlock");
    let done = wait_state(&app, &rid, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["succeeded"], 3, "{done}");
    let task = tasks(&app, &rid, None)
        .into_iter()
        .find(|t| t["tenant_id"] == id.as_str())
        .expect("task");
    assert!(
        task["attempts"].as_u64().unwrap_or(0) >= 2,
        "migrated after a retry: {task}"
    );
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let schema = format!("t_{}", id.replace('-', ""));
    let n = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM \"{schema}\".__diesel_schema_migrations"
    ))
    .get_result::<N>(&mut pg.connect())
    .expect("count")
    .n;
    assert_eq!(n as usize, all_versions().len());
}

/// Versions applied to a tenant schema on a PostgreSQL schema server.
fn pg_applied(pg: &TestPg, tenant_id: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let schema = format!("t_{}", tenant_id.replace('-', ""));
    let mut v: Vec<String> = diesel::sql_query(format!(
        "SELECT version FROM \"{schema}\".__diesel_schema_migrations"
    ))
    .load::<V>(&mut pg.connect())
    .map(|rows| rows.into_iter().map(|r| r.version).collect())
    .unwrap_or_default();
    v.sort();
    v
}

/// `(tenant, version, direction)` → how often a worker applied it.
fn migration_run_counts(control: &Control) -> BTreeMap<(String, String, String), i64> {
    #[derive(QueryableByName)]
    struct Run {
        #[diesel(sql_type = diesel::sql_types::Text)]
        tenant_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        direction: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sql = "SELECT tenant_id, version, direction, count(*) AS n FROM migration_runs GROUP BY tenant_id, version, direction";
    let rows: Vec<Run> = match control {
        Control::Sqlite(path) => diesel::sql_query(sql)
            .load(&mut SqliteConnection::establish(&path.to_string_lossy()).expect("control")),
        Control::Postgres(pg) => diesel::sql_query(sql).load(&mut pg.connect()),
    }
    .expect("runs");
    rows.into_iter()
        .map(|r| ((r.tenant_id, r.version, r.direction), r.n))
        .collect()
}

enum Control<'a> {
    Sqlite(std::path::PathBuf),
    Postgres(&'a TestPg),
}

/// SIGKILL a worker mid-rollout, check no tenant is between versions, start
/// another worker, check the rollout completes with every migration applied
/// exactly once.
fn killed_worker_scenario(control_pg: Option<&TestPg>, tenants_pg: Option<&TestPg>, n: usize) {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_path_buf();
    let opts = |command: &str, env: Vec<(String, String)>| AppOptions {
        command: vec![command.into()],
        data_dir: Some(data.clone()),
        control_db: control_pg.map(TestPg::url),
        env,
        ..AppOptions::default()
    };
    let api = App::start_with(opts("api", Vec::new()));
    let extra = match tenants_pg {
        Some(pg) => {
            let (s, srv) = api.call(
                "POST",
                "/v1/servers",
                Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
            );
            assert_eq!(s, 201, "{srv}");
            json!({"server": "pg"})
        }
        None => json!({}),
    };
    let fleet = tenants(&api, "kill", n, "phase:0", extra);
    let applied = |tid: &str| match tenants_pg {
        Some(pg) => pg_applied(pg, tid),
        None => sqlite_applied(&data.join("tenants"), tid),
    };
    let worker_env = || {
        vec![
            ("TENANTPLANE_WORKER_THREADS".into(), "2".into()),
            ("TENANTPLANE_WORKER_LEASE_S".into(), "2".into()),
        ]
    };
    let mut worker = App::start_with(opts("worker", worker_env()));
    let r = start(
        &api,
        json!({"target": "head", "selector": {"all": true}, "concurrency": 4}),
    );
    let id = r["id"].as_str().expect("id").to_string();
    wait_for("the rollout to be under way", LONG, || {
        let r = rollout(&api, &id);
        (r["counts"]["succeeded"].as_u64().unwrap_or(0) as usize >= n / 8).then_some(())
    });
    worker.child.kill().expect("SIGKILL");
    worker.child.wait().expect("reap");
    let killed_at = rollout(&api, &id);
    assert_ne!(
        killed_at["state"], "succeeded",
        "killed mid-way: {killed_at}"
    );
    assert_counts_match_tasks(&api, &id);

    // No tenant database is between two versions.
    let p0 = versions_upto(catalogue::phase_version(0).expect("p0"));
    for (slug, tid) in &fleet {
        let v = applied(tid);
        assert!(
            v == p0 || v == all_versions(),
            "{slug} is between versions: {v:?}"
        );
    }

    // A new worker takes over once the dead worker's leases expire.
    let _restarted = App::start_with(opts("worker", worker_env()));
    let done = wait_state(&api, &id, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["succeeded"].as_u64(), Some(n as u64));
    for (slug, tid) in &fleet {
        assert_eq!(applied(tid), all_versions(), "{slug}");
    }
    let (_, page) = api.call("GET", "/v1/tenants?phase=7&limit=500", None);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(n),
        "the control DB agrees"
    );
    let control = match control_pg {
        Some(pg) => Control::Postgres(pg),
        None => Control::Sqlite(data.join("control.db")),
    };
    assert_counts_match_tasks(&api, &id);
    let runs = migration_run_counts(&control);
    let twice: Vec<_> = runs.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "migrations applied twice: {twice:?}");
    // Every step of every tenant is in the log, those a tenant committed
    // just before the kill included (recorded as recovered by the retry).
    let missing: Vec<_> = fleet
        .iter()
        .flat_map(|(slug, tid)| {
            all_versions()
                .into_iter()
                .filter(|v| !p0.contains(v))
                .filter(|v| !runs.contains_key(&(tid.clone(), v.clone(), "up".to_string())))
                .map(move |v| format!("{slug} {v}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "steps missing from migration_runs: {missing:?}"
    );
    assert_eq!(runs.len(), n * (all_versions().len() - p0.len()));
}

/// A tenant whose earlier attempt committed phases 1 to 3 but whose worker
/// died before recording them: the retry finds it ahead of the record and
/// writes those steps to `migration_runs`, marked recovered, at the time the
/// tenant's own history says they ran.
#[test]
fn a_retry_records_the_steps_an_earlier_attempt_committed() {
    let app = serve();
    let fleet = tenants(&app, "recov", 2, "phase:0", json!({}));
    let (_, tid) = &fleet[0];
    let p0 = catalogue::phase_version(0).expect("p0").to_string();
    let p3 = catalogue::phase_version(3).expect("p3").to_string();
    let path = tenant_dir(&app).join(format!("t_{}.db", tid.replace('-', "")));
    let mut tenant_db = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    tenantplane_migrations::runner::migrate(
        &mut tenant_db,
        &tenantplane_migrations::TENANT_SQLITE,
        Some(&p3),
        |_| {},
    )
    .expect("the earlier attempt's commit");

    let r = start(&app, json!({"target": "head", "selector": {"all": true}}));
    let id = r["id"].as_str().expect("id");
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");

    #[derive(QueryableByName, Debug)]
    struct Run {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        recovered: bool,
        #[diesel(sql_type = diesel::sql_types::Timestamp)]
        ran_at: chrono::NaiveDateTime,
    }
    #[derive(QueryableByName)]
    struct RunOn {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
        #[diesel(sql_type = diesel::sql_types::Timestamp)]
        run_on: chrono::NaiveDateTime,
    }
    let mut control =
        SqliteConnection::establish(&app.data_dir.join("control.db").to_string_lossy())
            .expect("control");
    let runs: Vec<Run> = diesel::sql_query(
        "SELECT version, recovered, ran_at FROM migration_runs WHERE tenant_id = ? AND direction = 'up' ORDER BY version",
    )
    .bind::<diesel::sql_types::Text, _>(tid)
    .load(&mut control)
    .expect("runs");
    let expected: Vec<String> = all_versions().into_iter().filter(|v| *v > p0).collect();
    assert_eq!(
        runs.iter().map(|r| r.version.clone()).collect::<Vec<_>>(),
        expected,
        "every step once"
    );
    let run_on: BTreeMap<String, chrono::NaiveDateTime> =
        diesel::sql_query("SELECT version, run_on FROM __diesel_schema_migrations")
            .load::<RunOn>(&mut tenant_db)
            .expect("history")
            .into_iter()
            .map(|r| (r.version, r.run_on))
            .collect();
    for r in &runs {
        assert_eq!(r.recovered, r.version <= p3, "{r:?}");
        if r.recovered {
            assert_eq!(Some(&r.ran_at), run_on.get(&r.version), "{r:?}");
        }
    }
    // The other tenant's steps were all applied by this rollout.
    let others: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM migration_runs WHERE tenant_id = ? AND recovered",
    )
    .bind::<diesel::sql_types::Text, _>(&fleet[1].1)
    .get_result::<Count>(&mut control)
    .expect("count")
    .n;
    assert_eq!(others, 0);
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A manual canary waits for promote; a timed hold opens the next wave by
/// itself, no earlier than its hold after the canary finished.
#[test]
fn canary_holds_wait_for_promote_or_their_time() {
    let app = serve();
    tenants(&app, "hold", 5, "phase:0", json!({}));
    tenants(&app, "hold-done", 3, "head", json!({}));
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true},
        "waves": [{"name": "canary", "count": 2, "manual": true}]}),
    );
    assert_eq!(
        r["waves"],
        json!([{"name": "canary", "size": 2, "manual": true}, {"name": "rest", "size": 3}])
    );
    let id = r["id"].as_str().expect("id");
    let held = wait_for("the canary to finish and hold", LONG, || {
        let r = rollout(&app, id);
        (r["counts"]["succeeded"] == 2 && r["hold"].is_object()).then_some(r)
    });
    assert_eq!(held["hold"]["wave"], "canary", "{held}");
    assert!(held["hold"]["opens_at"].is_null(), "{held}");
    assert_eq!(held["current_wave"], 0);
    // Workers advance rollouts every 2 s: after that the rest still waits.
    std::thread::sleep(Duration::from_millis(2500));
    let still = rollout(&app, id);
    assert_eq!(
        (
            still["counts"]["pending"].as_u64(),
            still["current_wave"].as_u64()
        ),
        (Some(3), Some(0)),
        "{still}"
    );
    let (s, p) = app.call("POST", &format!("/v1/rollouts/{id}/promote"), None);
    assert_eq!((s, p["current_wave"].as_u64()), (200, Some(1)), "{p}");
    assert!(p["hold"].is_null(), "{p}");
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["succeeded"], 5);
    let (s, e) = app.call("POST", &format!("/v1/rollouts/{id}/promote"), None);
    assert_eq!((s, error_code(&e).as_str()), (409, "conflict"), "{e}");

    // A timed hold: the rest starts no earlier than 2 s after the canary.
    tenants(&app, "timed", 3, "phase:0", json!({}));
    let r = start(
        &app,
        json!({"target": "head", "selector": {"all": true},
        "waves": [{"name": "canary", "count": 1, "hold_s": 2}]}),
    );
    let id = r["id"].as_str().expect("id");
    let done = wait_state(&app, id, &["succeeded", "failed", "halted"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    let all = tasks(&app, id, None);
    let at = |t: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(t[k].as_str().expect("time")).expect("rfc3339")
    };
    let canary_end = all
        .iter()
        .filter(|t| t["wave"] == 0 && t["state"] == "succeeded")
        .map(|t| at(t, "finished_at"))
        .max()
        .expect("canary");
    let rest_start = all
        .iter()
        .filter(|t| t["wave"] == 1)
        .map(|t| at(t, "started_at"))
        .min()
        .expect("rest");
    assert!(
        rest_start - canary_end >= chrono::Duration::seconds(2),
        "the rest started {} after the canary",
        rest_start - canary_end
    );

    // Both kinds of hold at once are refused.
    let (s, e) = app.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"all": true},
        "waves": [{"count": 1, "hold_s": 5, "manual": true}]})),
    );
    assert_eq!(s, 422, "{e}");
}

#[test]
fn a_killed_worker_loses_nothing_on_sqlite() {
    killed_worker_scenario(None, None, 300);
}

#[test]
fn a_killed_worker_loses_nothing_on_postgres() {
    let (Some(control), Some(tenants_pg)) = (TestPg::new(), TestPg::new()) else {
        return;
    };
    killed_worker_scenario(Some(&control), Some(&tenants_pg), 60);
}

#[test]
fn postgres_schemas_fail_alone_roll_back_and_halt_by_budget() {
    let Some(pg) = TestPg::new() else { return };
    let app = serve();
    let (s, srv) = app.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let fleet = tenants(&app, "pgf", 5, "phase:0", json!({"server": "pg"}));
    let (bad_slug, bad_id) = fleet[2].clone();
    let schema = format!("t_{}", bad_id.replace('-', ""));
    pg.connect()
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".expense_categories (id int)"
        ))
        .expect("break");
    let r = start(
        &app,
        json!({"target": "head", "selector": {"servers": ["pg"]}, "failure_budget": {"max_failed": 1}, "allow_drift": true}),
    );
    let id = r["id"].as_str().expect("id").to_string();
    let done = wait_state(&app, &id, &["succeeded", "failed", "halted"]);
    assert_eq!(
        (done["state"].as_str(), done["counts"]["succeeded"].as_u64()),
        (Some("failed"), Some(4)),
        "{done}"
    );
    let failed = tasks(&app, &id, Some("failed"));
    let err = failed[0]["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains(&bad_slug) && err.contains("20261125020100"),
        "{err}"
    );
    let last_good = catalogue::previous("20261125020100").expect("previous");
    assert_eq!(
        pg_applied(&pg, &bad_id),
        versions_upto(last_good),
        "the failed schema stays at its last good version"
    );
    assert_eq!(pg_applied(&pg, &fleet[0].1), all_versions());

    // Roll the good ones back to phase 1 through the down migrations.
    let good: Vec<&str> = fleet
        .iter()
        .filter(|(s, _)| *s != bad_slug)
        .map(|(s, _)| s.as_str())
        .collect();
    let back = start(
        &app,
        json!({"target": "phase:1", "selector": {"tenants": good}}),
    );
    let done = wait_state(
        &app,
        back["id"].as_str().expect("id"),
        &["succeeded", "failed", "halted"],
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    let p1 = catalogue::phase_version(1).expect("p1");
    assert_eq!(pg_applied(&pg, &fleet[0].1), versions_upto(p1));

    // Three broken schemas and a budget of one: the rollout halts.
    for (_, tid) in &fleet[3..] {
        let schema = format!("t_{}", tid.replace('-', ""));
        pg.connect()
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".expense_categories (id int)"
            ))
            .expect("break");
    }
    let again = start(
        &app,
        json!({"target": "head", "selector": {"servers": ["pg"]}, "concurrency": 1, "failure_budget": {"max_failed": 1}, "allow_drift": true}),
    );
    let halted = wait_state(
        &app,
        again["id"].as_str().expect("id"),
        &["halted", "failed", "succeeded"],
    );
    assert_eq!(halted["state"], "halted", "{halted}");
}

#[test]
fn two_workers_share_a_rollout_on_a_postgres_control_db() {
    let Some(control) = TestPg::new() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_path_buf();
    let opts = |command: &str| AppOptions {
        command: vec![command.into()],
        control_db: Some(control.url()),
        data_dir: Some(data.clone()),
        env: vec![("TENANTPLANE_WORKER_THREADS".into(), "2".into())],
        ..AppOptions::default()
    };
    let api = App::start_with(opts("api"));
    let fleet = tenants(&api, "pair", 60, "phase:0", json!({}));
    let _w1 = App::start_with(opts("worker"));
    let _w2 = App::start_with(opts("worker"));
    let r = start(
        &api,
        json!({"target": "head", "selector": {"all": true}, "concurrency": 4}),
    );
    let done = wait_state(
        &api,
        r["id"].as_str().expect("id"),
        &["succeeded", "failed", "halted"],
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    for (slug, tid) in &fleet {
        assert_eq!(
            sqlite_applied(&data.join("tenants"), tid),
            all_versions(),
            "{slug}"
        );
    }
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        tenant_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        worker: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT tenant_id, version, worker FROM migration_runs WHERE direction = 'up'",
    )
    .load(&mut control.connect())
    .expect("runs");
    let p0 = versions_upto(catalogue::phase_version(0).expect("p0")).len();
    assert_eq!(
        rows.len(),
        60 * (all_versions().len() - p0),
        "every step once"
    );
    let distinct: HashSet<(String, String)> = rows
        .iter()
        .map(|r| (r.tenant_id.clone(), r.version.clone()))
        .collect();
    assert_eq!(
        distinct.len(),
        rows.len(),
        "each tenant migrated exactly once"
    );
    let per_tenant_workers: BTreeMap<&str, HashSet<&str>> =
        rows.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.tenant_id.as_str())
                .or_insert_with(HashSet::new)
                .insert(r.worker.as_str());
            m
        });
    assert!(
        per_tenant_workers.values().all(|w| w.len() == 1),
        "one worker per tenant"
    );
    let workers: HashSet<&str> = rows.iter().map(|r| r.worker.as_str()).collect();
    eprintln!("workers that took part: {}", workers.len());
}

/// Two tenants of one PostgreSQL database, migrated back to back on one
/// pooled connection: the second sees its own schema and a fresh session —
/// none of the first's `search_path`, temporary tables, settings or
/// session advisory locks.
#[test]
fn pooled_postgres_connections_leak_nothing_between_tenants() {
    use tenantplane_fleet::pg_pool::PooledTenant;
    use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
    use tenantplane_fleet::tenant_run::{self, RunOptions};

    let Some(pg) = TestPg::new() else { return };
    let url = pg.url();
    pg.connect()
        .batch_execute("CREATE SCHEMA t_first; CREATE SCHEMA t_second;")
        .expect("schemas");
    let location = |schema: &str| TenantDbLocation::PgSchema {
        server_url: url.clone(),
        schema: schema.to_string(),
    };
    let opts = RunOptions {
        target: Some(head()),
        probes: tenantplane_fleet::tenant_run::ProbeSet::Full,
        timeout: Duration::from_secs(60),
        lock_wait: Duration::from_secs(1),
        lock_key: 1,
        recorded: None,
    };
    #[derive(QueryableByName)]
    struct Session {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
        #[diesel(sql_type = diesel::sql_types::Text)]
        schema: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        timeout: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        app: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        temp_tables: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        advisory_locks: i64,
    }
    let session = |c: &mut PooledTenant| -> Session {
        let TenantConnection::Postgres(c) = &mut **c else {
            panic!("a PostgreSQL connection")
        };
        diesel::sql_query(
            "SELECT pg_backend_pid() AS pid, current_schema() AS schema,
                    current_setting('statement_timeout') AS timeout,
                    current_setting('application_name') AS app,
                    (SELECT count(*) FROM pg_class WHERE relpersistence = 't') AS temp_tables,
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks",
        )
        .get_result(c)
        .expect("session")
    };

    let first_pid = {
        let mut first = location("t_first").connect_pooled().expect("connect");
        let outcome = tenant_run::run_on(&mut first, &opts);
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        // What a migration or a probe could leave behind in the session.
        let TenantConnection::Postgres(c) = &mut *first else {
            panic!("a PostgreSQL connection")
        };
        c.batch_execute(
            "CREATE TEMP TABLE leftover (x int); SET statement_timeout = 1234; \
             SET application_name = 'first-tenant'; SELECT pg_advisory_lock(4242);",
        )
        .expect("session state");
        let s = session(&mut first);
        assert_eq!(
            (s.schema.as_str(), s.temp_tables, s.advisory_locks),
            ("t_first", 1, 1)
        );
        s.pid
    };
    assert_eq!(PooledTenant::idle_count(&url), 1, "returned to the pool");

    let mut second = location("t_second").connect_pooled().expect("connect");
    let s = session(&mut second);
    assert_eq!(s.pid, first_pid, "the same connection, reused");
    assert_eq!(s.schema, "t_second");
    assert_eq!(s.timeout, "0", "settings reset");
    assert_ne!(s.app, "first-tenant", "settings reset");
    assert_eq!(s.temp_tables, 0, "temporary tables dropped");
    assert_eq!(s.advisory_locks, 0, "session locks released");
    let outcome = tenant_run::run_on(&mut second, &opts);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    drop(second);

    // Each schema got its own tables; nothing landed in the other or in public.
    #[derive(QueryableByName)]
    struct Tables {
        #[diesel(sql_type = diesel::sql_types::Text)]
        schema: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let tables: Vec<Tables> = diesel::sql_query(
        "SELECT table_schema AS schema, count(*) AS n FROM information_schema.tables
          WHERE table_schema IN ('t_first', 't_second', 'public') GROUP BY table_schema ORDER BY 1",
    )
    .load(&mut pg.connect())
    .expect("tables");
    assert_eq!(tables.len(), 2, "no tables in public");
    assert_eq!(tables[0].n, tables[1].n, "the same tables in both schemas");
    assert_eq!(
        (tables[0].schema.as_str(), tables[1].schema.as_str()),
        ("t_first", "t_second")
    );
}
