//! Graceful shutdown: SIGTERM makes a `serve` process end its event streams
//! with a reconnect hint, stop claiming, and hand back at the end of its
//! grace the tenant runs it could not finish, so another process takes them
//! at once instead of after their lease; a CLI watcher rides through the
//! restart and ends with the right summary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};
use serde_json::json;

use crate::common::{wait_for, App, AppOptions, TestPg, TOKEN};

const LONG: Duration = Duration::from_secs(120);
const LEASE_S: i64 = 60;

#[derive(QueryableByName, Debug)]
struct Task {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    lease_owner: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    lease_expires_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn task(data: &std::path::Path, rollout: &str) -> Task {
    let mut c =
        SqliteConnection::establish(&data.join("control.db").to_string_lossy()).expect("control");
    c.batch_execute("PRAGMA busy_timeout = 10000")
        .expect("pragma");
    diesel::sql_query(
        "SELECT state, lease_owner, lease_expires_at, attempts FROM tasks WHERE rollout_id = ?",
    )
    .bind::<Text, _>(rollout)
    .get_result(&mut c)
    .expect("the task")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn serve(data: &std::path::Path, port: u16) -> App {
    App::start_with(AppOptions {
        data_dir: Some(data.to_path_buf()),
        env: vec![
            ("TENANTPLANE_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("TENANTPLANE_WORKER_LEASE_S".into(), LEASE_S.to_string()),
            ("TENANTPLANE_SHUTDOWN_GRACE_S".into(), "1".into()),
        ],
        ..AppOptions::default()
    })
}

#[test]
fn sigterm_drains_hands_back_and_the_watcher_rides_through_a_restart() {
    let Some(pg) = TestPg::new() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().to_path_buf();
    let port = free_port();
    let mut first = serve(&data, port);
    let (s, srv) = first.call(
        "POST",
        "/v1/servers",
        Some(json!({"name": "pg", "kind": "postgres", "url": pg.url()})),
    );
    assert_eq!(s, 201, "{srv}");
    let (s, t) = first.call(
        "POST",
        "/v1/tenants",
        Some(json!({"slug": "stuck", "name": "Stuck", "server": "pg", "schema": "phase:0"})),
    );
    assert_eq!(s, 201, "{t}");
    let tid = t["id"].as_str().expect("id").to_string();
    let schema = format!("t_{}", tid.replace('-', ""));

    // Another session holds the tenant's migration table: its run blocks.
    let mut blocker = pg.connect();
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".__diesel_schema_migrations IN ACCESS EXCLUSIVE MODE"
        ))
        .expect("lock");

    let (s, r) = first.call(
        "POST",
        "/v1/rollouts",
        Some(json!({"target": "head", "selector": {"tenants": [tid]}})),
    );
    assert_eq!(s, 201, "{r}");
    let rid = r["id"].as_str().expect("id").to_string();
    let held = wait_for("the task to be claimed", LONG, || {
        let t = task(&data, &rid);
        (t.state == "running" && t.lease_owner.is_some()).then_some(t)
    });
    let first_owner = held.lease_owner.clone().expect("owner");
    let first_expiry = held.lease_expires_at.expect("lease");

    // A raw event stream and the CLI's watcher, both on the first process.
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, url) = (lines.clone(), first.url.clone());
        let rid = rid.clone();
        std::thread::spawn(move || {
            let resp = ureq::get(&format!("{url}/v1/rollouts/{rid}/events"))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .call()
                .expect("events");
            for line in BufReader::new(resp.into_reader()).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("lines").push(line);
            }
        })
    };
    let watcher = Command::new(crate::common::bin())
        .args(["rollout", "watch", &rid])
        .env("TENANTPLANE_URL", &first.url)
        .env("TENANTPLANE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    wait_for("the first event", LONG, || {
        (!lines.lock().expect("lines").is_empty()).then_some(())
    });

    // SIGTERM: a clean exit after the grace, the stream told to reconnect,
    // the stuck task handed back (not charged as an attempt).
    let pid = first.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = first.child.wait().expect("exit");
    assert!(status.success(), "a graceful stop exits 0: {status}");
    reader.join().expect("reader");
    let seen = lines.lock().expect("lines").clone();
    assert!(
        seen.iter().any(|l| l == "event: shutdown"),
        "the stream ends with a shutdown event: {seen:?}"
    );
    assert!(seen.iter().any(|l| l == "retry: 1000"), "{seen:?}");
    let released = task(&data, &rid);
    assert_eq!(released.state, "pending", "{released:?}");
    assert_eq!(released.lease_owner, None);
    assert_eq!(
        released.attempts, 0,
        "the interrupted attempt is not counted"
    );

    // The next process takes it before the first one's lease would have
    // run out (by the lease timestamps, not by a stopwatch).
    let second = serve(&data, port);
    let taken = wait_for("the task to be taken over", LONG, || {
        let t = task(&data, &rid);
        t.lease_owner
            .as_ref()
            .is_some_and(|o| *o != first_owner)
            .then_some(t)
    });
    let taken_at = taken.lease_expires_at.expect("lease") - chrono::Duration::seconds(LEASE_S);
    assert!(
        taken_at < first_expiry,
        "taken over at {taken_at}, the first lease ran until {first_expiry}"
    );

    // Unblocked, the rollout finishes; the watcher reconnected and reports it.
    blocker.batch_execute("COMMIT").expect("unlock");
    let out = watcher.wait_with_output().expect("watcher");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}\n{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    let (s, r) = second.call("GET", &format!("/v1/rollouts/{rid}"), None);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "succeeded", "{r}");

    // Each migration applied once: the first process's run never committed.
    let mut c =
        SqliteConnection::establish(&data.join("control.db").to_string_lossy()).expect("control");
    let twice = diesel::sql_query(
        "SELECT count(*) AS n FROM (SELECT version FROM migration_runs WHERE tenant_id = ?
           GROUP BY version, direction HAVING count(*) > 1)",
    )
    .bind::<Text, _>(&tid)
    .get_result::<Count>(&mut c)
    .expect("runs")
    .n;
    assert_eq!(twice, 0);
    let applied = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM \"{schema}\".__diesel_schema_migrations"
    ))
    .get_result::<Count>(&mut pg.connect())
    .expect("applied")
    .n;
    assert_eq!(
        applied as usize,
        tenantplane_migrations::catalogue::versions().len(),
        "at head"
    );
}
