//! Scale-out (issue 14): several `api` and `worker` processes of the real
//! binary on one PostgreSQL control database, tenants spread over three
//! PostgreSQL databases and the SQLite server.
//!
//! - A rollout over 600 tenants with 3 APIs and 3 workers, one worker
//!   stopped with SIGTERM (its unfinished tasks taken over long before its
//!   lease would have run out) and one killed with SIGKILL (its tasks taken
//!   over once its short lease ran out): every tenant at head, each
//!   migration applied once, every replica reporting the same counts.
//! - A per-second schedule on 3 workers, one restarted: every fire time
//!   decided once and its job run once.
//! - A rolling restart of the APIs under a `rollout watch` attached through a
//!   TCP proxy (as a Service would route it): the watcher moves to another
//!   replica and ends with the right summary.
//! - The connection budget: tenant-DB connections per server never above
//!   the rollout's `per_server_concurrency`, nor above the worker's
//!   `TENANTPLANE_TENANT_DB_POOL_SIZE`; control-DB connections within the
//!   sum of the pools.
//!
//! Waits have deadlines only; the assertions are on rows and timestamps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use serde_json::{json, Value};

use crate::common::{call_as, wait_for, App, AppOptions, TestPg, TOKEN};

const LONG: Duration = Duration::from_secs(600);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `tenantplane <command>` on the shared data dir and control DB.
fn start(data: &Path, control: &str, command: &str, env: &[(&str, String)]) -> App {
    let mut all: Vec<(String, String)> = vec![
        // Small pools: these tests run many processes beside other tests
        // on one PostgreSQL server (max_connections 100).
        ("TENANTPLANE_CONTROL_DB_POOL_SIZE".into(), "4".into()),
        ("TENANTPLANE_SHUTDOWN_GRACE_S".into(), "1".into()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    App::start_with(AppOptions {
        command: vec![command.into()],
        control_db: Some(control.into()),
        data_dir: Some(data.to_path_buf()),
        env: all,
        ..AppOptions::default()
    })
}

fn api_on(data: &Path, control: &str, port: u16) -> App {
    start(
        data,
        control,
        "api",
        &[("TENANTPLANE_LISTEN", format!("127.0.0.1:{port}"))],
    )
}

fn signal(app: &App, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &app.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// SIGTERM and wait for the exit.
fn sigterm(app: &mut App) -> ExitStatus {
    signal(app, "-TERM");
    app.child.wait().expect("exit")
}

/// The lease owner names of a worker process contain `-<pid>-`.
fn owner_tag(app: &App) -> String {
    format!("-{}-", app.child.id())
}

fn post(app: &App, path: &str, body: Value) -> Value {
    let (s, v) = app.call("POST", path, Some(body));
    assert!(s == 200 || s == 201, "POST {path}: {s} {v}");
    v
}

fn rollout(app: &App, id: &str) -> Value {
    let (s, r) = app.call("GET", &format!("/v1/rollouts/{id}"), None);
    assert_eq!(s, 200, "{r}");
    r
}

fn register_pg(app: &App, name: &str, pg: &TestPg) {
    post(
        app,
        "/v1/servers",
        json!({"name": name, "kind": "postgres", "url": pg.url(), "isolation": "schema",
               "capacity": 100000}),
    );
}

/// Creates `n` phase-0 tenants round-robin over `servers` through the
/// `apis`, several at once; returns (id, server name) in slug order.
fn create_tenants(apis: &[&App], servers: &[&str], n: usize) -> Vec<(String, String)> {
    let urls: Vec<String> = apis.iter().map(|a| a.url.clone()).collect();
    let made = Mutex::new(BTreeMap::new());
    let threads = 6;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (urls, made) = (&urls, &made);
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let server = servers[i % servers.len()];
                    let (st, v) = call_as(
                        &urls[i % urls.len()],
                        Some(TOKEN),
                        "POST",
                        "/v1/tenants",
                        Some(
                            json!({"slug": format!("shop-{i:04}"), "name": format!("Shop {i}"),
                                    "server": server, "schema": "phase:0"}),
                        ),
                    );
                    assert_eq!(st, 201, "{v}");
                    let id = v["id"].as_str().expect("id").to_string();
                    made.lock().unwrap().insert(i, (id, server.to_string()));
                }
            });
        }
    });
    made.into_inner().unwrap().into_values().collect()
}

fn schema_of(tenant: &str) -> String {
    format!("t_{}", tenant.replace('-', ""))
}

#[derive(QueryableByName, Debug, Clone)]
struct TaskRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    lease_owner: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    lease_expires_at: Option<NaiveDateTime>,
}

fn tasks(c: &mut PgConnection, rollout: &str) -> Vec<TaskRow> {
    diesel::sql_query(
        "SELECT id, tenant_id, state, lease_owner, lease_expires_at FROM tasks
          WHERE rollout_id = $1 ORDER BY id",
    )
    .bind::<Text, _>(rollout)
    .load(c)
    .expect("tasks")
}

#[derive(QueryableByName, Debug)]
struct RunRow {
    #[diesel(sql_type = BigInt)]
    task_id: i64,
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    worker: String,
    #[diesel(sql_type = Timestamp)]
    ran_at: NaiveDateTime,
}

fn runs(c: &mut PgConnection, rollout: &str) -> Vec<RunRow> {
    diesel::sql_query(
        "SELECT m.task_id, m.tenant_id, m.version, m.worker, m.ran_at
           FROM migration_runs m JOIN tasks t ON t.id = m.task_id
          WHERE t.rollout_id = $1 AND m.direction = 'up'",
    )
    .bind::<Text, _>(rollout)
    .load(c)
    .expect("migration runs")
}

/// Running tasks of the worker whose owner name contains `tag`, among `of`.
fn held_by(rows: &[TaskRow], tag: &str, of: &BTreeSet<String>) -> Vec<TaskRow> {
    rows.iter()
        .filter(|t| {
            t.state == "running"
                && t.lease_owner.as_deref().is_some_and(|o| o.contains(tag))
                && of.contains(&t.tenant_id)
        })
        .cloned()
        .collect()
}

/// Every tenant as one API replica lists it: id → schema version.
fn tenant_versions(app: &App) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants?limit=500&cursor={c}"),
            None => "/v1/tenants?limit=500".to_string(),
        };
        let (s, page) = app.call("GET", &path, None);
        assert_eq!(s, 200, "{page}");
        for t in page["items"].as_array().expect("items") {
            out.insert(
                t["id"].as_str().expect("id").to_string(),
                t["schema_version"].as_str().map(str::to_string),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[test]
fn rollout_over_600_tenants_with_3_apis_and_3_workers_survives_sigterm_and_sigkill() {
    let clock = std::time::Instant::now();
    let Some(control) = TestPg::new() else { return };
    let pgs: Vec<TestPg> = (0..3).map(|_| TestPg::new().expect("pg")).collect();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let url = control.url();
    let apis: Vec<App> = (0..3).map(|_| start(data, &url, "api", &[])).collect();
    for (i, pg) in pgs.iter().enumerate() {
        register_pg(&apis[0], &format!("pg{}", i + 1), pg);
    }
    let servers = ["default", "pg1", "pg2", "pg3"];
    let made = create_tenants(&[&apis[0], &apis[1], &apis[2]], &servers, 600);
    assert_eq!(made.len(), 600);
    eprintln!(
        "600 tenants created in {:.1} s",
        clock.elapsed().as_secs_f64()
    );

    // Tenants held by a lock on their migration table (one session each):
    // a worker's run of one waits until the lock goes, so the test knows
    // which worker holds unfinished work when it stops or kills it. At no
    // time are enough tenants blocked to catch every executor.
    let pg_of: HashMap<String, usize> = made
        .iter()
        .filter_map(|(id, s)| Some((id.clone(), s.strip_prefix("pg")?.parse::<usize>().ok()? - 1)))
        .collect();
    let block = |ids: &[String]| -> HashMap<String, PgConnection> {
        ids.iter()
            .map(|id| {
                let mut conn = pgs[pg_of[id]].connect();
                conn.batch_execute(&format!(
                    "BEGIN; LOCK TABLE \"{}\".__diesel_schema_migrations IN ACCESS EXCLUSIVE MODE",
                    schema_of(id)
                ))
                .expect("lock");
                (id.clone(), conn)
            })
            .collect()
    };
    let unblock = |blockers: HashMap<String, PgConnection>| {
        for (_, mut conn) in blockers {
            conn.batch_execute("COMMIT").expect("unlock");
        }
    };

    // Retries (and backoff) enough for the tenants whose lock a stopped
    // worker's abandoned session holds until the blockers let go: each
    // attempt fails at once as locked. Concurrency above the 9 executors,
    // so stuck runs never hold up the others.
    let r = post(
        &apis[1],
        "/v1/rollouts",
        json!({"target": "head", "selector": {"all": true}, "concurrency": 12,
               "per_server_concurrency": 12, "max_attempts": 100,
               "backoff": {"base_ms": 200, "max_ms": 5000}}),
    );
    let rid = r["id"].as_str().expect("id").to_string();
    assert_eq!(r["total"], 600, "{r}");
    let mut c = control.connect();

    // Worker A (SIGTERM later, a long lease) starts alone, 12 tenants
    // blocked, until it is stuck on one; the others are let go. Then B
    // and C (SIGKILL later, a 3 s lease). C has one executor, so once it
    // is stuck on a blocked tenant it has nothing else in progress: a
    // SIGKILL between a tenant's commit and its record would leave a
    // migration done but not counted in migration_runs, which this test
    // counts.
    let first: Vec<String> = pg_of.keys().take(12).cloned().collect();
    let mut first_blockers = block(&first);
    let first: BTreeSet<String> = first.into_iter().collect();
    let threads = ("TENANTPLANE_WORKER_THREADS", "4".to_string());
    let mut a = start(
        data,
        &url,
        "worker",
        &[
            threads.clone(),
            ("TENANTPLANE_WORKER_LEASE_S", "300".into()),
        ],
    );
    let a_tag = owner_tag(&a);
    let a_stuck: BTreeSet<String> = wait_for("worker A to hold a blocked tenant", LONG, || {
        let held = held_by(&tasks(&mut c, &rid), &a_tag, &first);
        (!held.is_empty()).then(|| held.into_iter().map(|t| t.tenant_id).collect())
    });
    let others: HashMap<String, PgConnection> = first
        .iter()
        .filter(|t| !a_stuck.contains(*t))
        .filter_map(|t| first_blockers.remove_entry(t))
        .collect();
    unblock(others);
    let b = start(
        data,
        &url,
        "worker",
        &[threads.clone(), ("TENANTPLANE_WORKER_LEASE_S", "30".into())],
    );
    let mut kc = start(
        data,
        &url,
        "worker",
        &[
            ("TENANTPLANE_WORKER_THREADS", "1".into()),
            ("TENANTPLANE_WORKER_LEASE_S", "3".into()),
        ],
    );
    let (b_tag, c_tag) = (owner_tag(&b), owner_tag(&kc));

    // Mid-way: SIGTERM A. What it still runs at the end of its 1 s grace
    // is handed back at once.
    wait_for("a third of the tenants done", LONG, || {
        let r = rollout(&apis[2], &rid);
        (r["counts"]["succeeded"].as_i64().unwrap_or(0) >= 200).then_some(())
    });
    eprintln!("a third done at {:.1} s", clock.elapsed().as_secs_f64());
    let a_held = held_by(&tasks(&mut c, &rid), &a_tag, &a_stuck);
    assert!(!a_held.is_empty(), "A is stuck on a blocked tenant");
    let status = sigterm(&mut a);
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let after = tasks(&mut c, &rid);
    for held in &a_held {
        let now = after.iter().find(|t| t.id == held.id).expect("task");
        assert!(
            !now.lease_owner
                .as_deref()
                .is_some_and(|o| o.contains(&a_tag)),
            "handed back, not left to its lease: {now:?}"
        );
    }

    // Eight tenants not claimed yet are blocked; B can be stuck on four at
    // most, so C gets stuck on one. SIGKILL it then: no hand-back, its
    // lease (3 s) must run out first. (A's blocked tenants do not count:
    // the sessions A left behind hold their advisory locks, so a run of
    // one fails at once as locked and goes back to pending.)
    let pending: Vec<String> = tasks(&mut c, &rid)
        .into_iter()
        .filter(|t| t.state == "pending" && pg_of.contains_key(&t.tenant_id))
        .filter(|t| !first.contains(&t.tenant_id))
        .map(|t| t.tenant_id)
        .take(8)
        .collect();
    assert_eq!(pending.len(), 8);
    let second_blockers = block(&pending);
    let fresh: BTreeSet<String> = pending.into_iter().collect();
    wait_for("worker C to be stuck on a blocked tenant", LONG, || {
        let first = held_by(&tasks(&mut c, &rid), &c_tag, &fresh);
        let first = first.first()?.id;
        // Still the same task a moment later: stuck, not passing through.
        std::thread::sleep(Duration::from_millis(300));
        let again = held_by(&tasks(&mut c, &rid), &c_tag, &fresh);
        again.iter().any(|t| t.id == first).then_some(())
    });
    eprintln!("C stuck at {:.1} s", clock.elapsed().as_secs_f64());
    signal(&kc, "-KILL");
    kc.child.wait().expect("killed");
    let all: BTreeSet<String> = made.iter().map(|(id, _)| id.clone()).collect();
    let c_held = held_by(&tasks(&mut c, &rid), &c_tag, &all);
    assert_eq!(c_held.len(), 1, "{c_held:?}");
    assert!(fresh.contains(&c_held[0].tenant_id));

    // Let go of the blocked tenants; B finishes the rollout.
    unblock(first_blockers);
    unblock(second_blockers);
    let done = wait_for("the rollout to finish", LONG, || {
        let r = rollout(&apis[0], &rid);
        (r["state"] != "running").then_some(r)
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    eprintln!(
        "rollout done {:.1} s after the start",
        clock.elapsed().as_secs_f64()
    );

    // Every replica reports the same: 600 succeeded, every tenant at head.
    let head = tenantplane_migrations::catalogue::head().expect("head");
    let phase0 = tenantplane_migrations::catalogue::phase_version(0).expect("phase 0");
    let listed: Vec<_> = apis.iter().map(tenant_versions).collect();
    for (i, api) in apis.iter().enumerate() {
        let r = rollout(api, &rid);
        assert_eq!(r["counts"], done["counts"], "replica {i}");
        assert_eq!(r["counts"]["succeeded"], 600, "{r}");
        assert_eq!(listed[i], listed[0], "replica {i} lists the same tenants");
    }
    assert_eq!(listed[0].len(), 600);
    assert!(listed[0].values().all(|v| v.as_deref() == Some(head)));

    // Each tenant got each migration from phase 0 to head exactly once.
    let steps: Vec<&str> = tenantplane_migrations::catalogue::versions()
        .iter()
        .map(|m| m.version.as_str())
        .filter(|v| *v > phase0)
        .collect();
    let rows = runs(&mut c, &rid);
    let mut per: HashMap<(&str, &str), usize> = HashMap::new();
    for r in &rows {
        *per.entry((r.tenant_id.as_str(), r.version.as_str()))
            .or_default() += 1;
    }
    assert_eq!(per.len(), 600 * steps.len());
    assert!(per.values().all(|&n| n == 1), "a migration ran twice");
    // And the tenant databases agree: every PostgreSQL schema and SQLite
    // file has every version.
    for (id, server) in &made {
        let applied = match server.as_str() {
            "default" => crate::common::sqlite_applied(&data.join("tenants"), id).len(),
            pg => {
                let n: usize = pg[2..].parse().expect("pgN");
                #[derive(QueryableByName)]
                struct N {
                    #[diesel(sql_type = BigInt)]
                    n: i64,
                }
                diesel::sql_query(format!(
                    "SELECT count(*) AS n FROM \"{}\".__diesel_schema_migrations",
                    schema_of(id)
                ))
                .get_result::<N>(&mut pgs[n - 1].connect())
                .expect("applied")
                .n as usize
            }
        };
        assert_eq!(
            applied,
            tenantplane_migrations::catalogue::versions().len(),
            "tenant {id} on {server}"
        );
    }

    // A's handed-back tasks: taken over by another worker long before A's
    // lease (300 s, extended every 100 s) would have expired.
    for held in &a_held {
        let expiry = held.lease_expires_at.expect("lease");
        let theirs: Vec<&RunRow> = rows.iter().filter(|r| r.task_id == held.id).collect();
        assert_eq!(theirs.len(), steps.len());
        for r in theirs {
            assert!(!r.worker.contains(&a_tag), "{r:?}");
            assert!(
                r.ran_at + chrono::Duration::seconds(60) < expiry,
                "task {} ran at {} but A's lease ran until {expiry}",
                held.id,
                r.ran_at
            );
        }
    }
    // C's tasks: taken over only after C's lease ran out, by B.
    for held in &c_held {
        let expiry = held.lease_expires_at.expect("lease");
        let theirs: Vec<&RunRow> = rows.iter().filter(|r| r.task_id == held.id).collect();
        assert_eq!(theirs.len(), steps.len(), "task {}", held.id);
        for r in theirs {
            assert!(r.worker.contains(&b_tag), "{r:?}");
            assert!(
                r.ran_at >= expiry,
                "task {} ran at {} before C's lease ran out at {expiry}",
                held.id,
                r.ran_at
            );
        }
    }
    drop(b);
}

#[derive(QueryableByName, Debug)]
struct ScheduleRun {
    #[diesel(sql_type = Timestamp)]
    fire_at: NaiveDateTime,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    job_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    job_state: Option<String>,
}

fn schedule_runs(c: &mut PgConnection, name: &str) -> Vec<ScheduleRun> {
    diesel::sql_query(
        "SELECT r.fire_at, r.state, r.job_id, j.state AS job_state
           FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id
           LEFT JOIN jobs j ON j.id = r.job_id
          WHERE s.name = $1 ORDER BY r.fire_at",
    )
    .bind::<Text, _>(name)
    .load(c)
    .expect("runs")
}

#[test]
fn a_per_second_schedule_fires_once_across_3_workers_and_a_restart() {
    let Some(control) = TestPg::new() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let url = control.url();
    let api = start(data, &url, "api", &[]);
    let one = ("TENANTPLANE_WORKER_THREADS", "1".to_string());
    let mut workers: Vec<App> = (0..3)
        .map(|_| start(data, &url, "worker", std::slice::from_ref(&one)))
        .collect();
    post(
        &api,
        "/v1/schedules",
        json!({"name": "every-second", "cron": "* * * * * *", "job": "sweep.trials"}),
    );
    let mut c = control.connect();
    wait_for("five fire times", LONG, || {
        (schedule_runs(&mut c, "every-second").len() >= 5).then_some(())
    });
    // Restart one worker; the other two keep firing meanwhile.
    assert!(sigterm(&mut workers[1]).success());
    let before = schedule_runs(&mut c, "every-second").len();
    workers[1] = start(data, &url, "worker", std::slice::from_ref(&one));
    wait_for("five more fire times", LONG, || {
        (schedule_runs(&mut c, "every-second").len() >= before + 5).then_some(())
    });
    let (s, v) = api.call(
        "PATCH",
        "/v1/schedules/every-second",
        Some(json!({"enabled": false})),
    );
    assert_eq!(s, 200, "{v}");
    let all = wait_for("every started job to finish", LONG, || {
        let all = schedule_runs(&mut c, "every-second");
        all.iter()
            .all(|r| r.job_id.is_none() || r.job_state.as_deref() == Some("succeeded"))
            .then_some(all)
    });

    // One row per second from the first fire time to the last: none
    // lost while a worker restarted, none twice (the UNIQUE key). A fire
    // time may be recorded `missed`: when every worker's tick came more
    // than a second late (a loaded machine), the older of two due fire
    // times is skipped by the schedule's policy, and still has its row.
    let first = all[0].fire_at;
    for (n, run) in all.iter().enumerate() {
        assert_eq!(
            run.fire_at,
            first + chrono::Duration::seconds(n as i64),
            "{all:?}"
        );
        assert!(
            ["started", "skipped_overlap", "missed"].contains(&run.state.as_str()),
            "{all:?}"
        );
        assert_eq!(run.state == "started", run.job_id.is_some(), "{run:?}");
    }
    // Each started fire time has one job, run once.
    #[derive(QueryableByName)]
    struct Job {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        payload: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
    }
    let jobs: Vec<Job> =
        diesel::sql_query("SELECT id, payload, attempts FROM jobs WHERE kind = 'sweep.trials'")
            .load(&mut c)
            .expect("jobs");
    let mut per_fire: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        let p: Value = serde_json::from_str(&j.payload).expect("payload");
        if p["schedule"] == "every-second" {
            *per_fire.entry(p["fire_at"].to_string()).or_default() += 1;
            assert_eq!(j.attempts, 1, "job {} ran more than once", j.id);
        }
    }
    let started = all.iter().filter(|r| r.state == "started").count();
    assert!(started >= 5, "{all:?}");
    assert_eq!(per_fire.len(), started);
    assert!(per_fire.values().all(|&n| n == 1), "{per_fire:?}");
}

/// A TCP proxy standing in for a Service in front of the API replicas:
/// each connection goes to the first replica (in turn) that accepts it.
struct Proxy {
    url: String,
    /// The replica each connection went to, in order.
    routed: Arc<Mutex<Vec<usize>>>,
}

fn proxy(backends: Vec<u16>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let routed = Arc::new(Mutex::new(Vec::new()));
    let log = routed.clone();
    std::thread::spawn(move || {
        let mut next = 0;
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let picked = (0..backends.len()).find_map(|k| {
                let i = (next + k) % backends.len();
                TcpStream::connect(("127.0.0.1", backends[i]))
                    .ok()
                    .map(|s| (i, s))
            });
            next += 1;
            let Some((i, server)) = picked else { continue };
            log.lock().unwrap().push(i);
            let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c2, mut s2) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    Proxy { url, routed }
}

#[test]
fn rollout_watch_rides_through_a_rolling_restart_of_the_api_replicas() {
    let Some(control) = TestPg::new() else { return };
    let pg = TestPg::new().expect("pg");
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let url = control.url();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut apis: Vec<App> = ports.iter().map(|&p| api_on(data, &url, p)).collect();
    let _worker = start(
        data,
        &url,
        "worker",
        &[("TENANTPLANE_WORKER_THREADS", "2".into())],
    );
    register_pg(&apis[0], "pg", &pg);
    let made = create_tenants(&[&apis[0], &apis[1], &apis[2]], &["pg"], 10);
    // One tenant's run waits on a lock until the restarts are over.
    let mut blocker = pg.connect();
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{}\".__diesel_schema_migrations IN ACCESS EXCLUSIVE MODE",
            schema_of(&made[0].0)
        ))
        .expect("lock");
    let r = post(
        &apis[0],
        "/v1/rollouts",
        json!({"target": "head", "selector": {"all": true}}),
    );
    let rid = r["id"].as_str().expect("id").to_string();

    let front = proxy(ports.clone());
    let mut watcher = Command::new(crate::common::bin())
        .args(["rollout", "watch", &rid, "-o", "json"])
        .env("TENANTPLANE_URL", &front.url)
        .env("TENANTPLANE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    // With `-o json` its progress lines go to stderr, the summary to stdout.
    let stderr = Arc::new(Mutex::new(Vec::<String>::new()));
    let err_pipe = watcher.stderr.take().expect("stderr");
    let err_reader = {
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        })
    };
    wait_for("the watcher's first progress line", LONG, || {
        (!stderr.lock().unwrap().is_empty()).then_some(())
    });
    wait_for("every tenant but the blocked one", LONG, || {
        let r = rollout(&apis[0], &rid);
        (r["counts"]["succeeded"] == 9).then_some(())
    });

    // Rolling restart: one replica at a time, each back before the next.
    for i in 0..3 {
        assert!(sigterm(&mut apis[i]).success(), "replica {i}");
        apis[i] = api_on(data, &url, ports[i]);
        assert_eq!(call_as(&apis[i].url, None, "GET", "/readyz", None).0, 200);
    }
    blocker.batch_execute("COMMIT").expect("unlock");
    let out = watcher.wait_with_output().expect("watcher");
    err_reader.join().expect("stderr reader");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let notes = stderr.lock().unwrap().join("\n");
    assert!(out.status.success(), "{stdout}\n{notes}");
    let summary: Value = serde_json::from_str(&stdout).expect("the JSON summary");
    assert_eq!(summary["rollout"]["state"], "succeeded", "{summary}");
    assert_eq!(summary["rollout"]["counts"]["succeeded"], 10, "{summary}");
    assert_eq!(summary["rollout"]["total"], 10);
    // The stream was reopened on another replica when its own stopped
    // (only the watcher goes through the proxy).
    let routed = front.routed.lock().unwrap().clone();
    assert!(
        routed.len() >= 2,
        "one connection only: {routed:?}\n{notes}"
    );
    assert!(
        routed.iter().collect::<BTreeSet<_>>().len() >= 2,
        "{routed:?}"
    );
}

/// The most connections seen at once per database, sampled every few ms
/// from `pg_stat_activity` until stopped: all client sessions (`all`), and
/// those inside a transaction (`busy`). A tenant run is one transaction
/// from its lock to its commit, so `busy` counts the runs. `all` also
/// counts the idle connections a process keeps for its next tenant
/// (`fleet::pg_pool`, the API's tenant creations included), and, for a
/// moment, a session whose client just hung up while its backend exits:
/// it is printed, not held to the bound.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

#[derive(Debug, Default)]
struct Peaks {
    all: BTreeMap<String, i64>,
    busy: BTreeMap<String, i64>,
}

fn sample(admin: String, databases: Vec<String>) -> Sampler {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            datname: String,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            busy: bool,
        }
        let mut c = PgConnection::establish(&admin).expect("admin");
        let mut peaks = Peaks::default();
        let mut before: HashMap<String, BTreeSet<i32>> = HashMap::new();
        while !flag.load(Ordering::SeqCst) {
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT datname::text AS datname, pid, xact_start IS NOT NULL AS busy
                   FROM pg_stat_activity
                  WHERE datname::text = ANY($1) AND backend_type = 'client backend'
                    AND pid <> pg_backend_pid()",
            )
            .bind::<diesel::sql_types::Array<Text>, _>(&databases)
            .load(&mut c)
            .expect("pg_stat_activity");
            let mut all: BTreeMap<String, i64> = BTreeMap::new();
            let mut busy: HashMap<String, BTreeSet<i32>> = HashMap::new();
            for r in &rows {
                *all.entry(r.datname.clone()).or_default() += 1;
                if r.busy {
                    busy.entry(r.datname.clone()).or_default().insert(r.pid);
                }
            }
            for (db, n) in all {
                let p = peaks.all.entry(db).or_default();
                *p = (*p).max(n);
            }
            // A session counts as busy when it is inside a transaction in
            // two samples running: the view copies the sessions one by one,
            // so on a loaded machine one sample can catch a run that just
            // committed beside the next one that just began (seen: 3
            // against a bound of 2, never twice in a row). A real excess
            // lasts a whole tenant run, many samples.
            for (db, pids) in &busy {
                let kept = before
                    .get(db)
                    .map(|b| b.intersection(pids).count() as i64)
                    .unwrap_or(0);
                let p = peaks.busy.entry(db.clone()).or_default();
                *p = (*p).max(kept);
            }
            before = busy;
            std::thread::sleep(Duration::from_millis(5));
        }
        peaks
    });
    Sampler { stop, thread }
}

impl Sampler {
    fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("sampler")
    }
}

#[test]
fn tenant_connections_stay_within_per_server_concurrency_and_the_worker_budget() {
    let Some(control) = TestPg::new() else { return };
    let pgs: Vec<TestPg> = (0..3).map(|_| TestPg::new().expect("pg")).collect();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();
    let url = control.url();
    let api = start(data, &url, "api", &[]);
    for (i, pg) in pgs.iter().enumerate() {
        register_pg(&api, &format!("pg{}", i + 1), pg);
    }
    create_tenants(&[&api], &["pg1", "pg2", "pg3"], 60);
    let tenant_dbs: Vec<String> = pgs.iter().map(|p| p.name.clone()).collect();
    let mut watched = tenant_dbs.clone();
    watched.push(control.name.clone());
    let four = ("TENANTPLANE_WORKER_THREADS", "4".to_string());

    // 3 workers x 4 threads, a rollout allowing 12 at once but 2 per server.
    let mut workers: Vec<App> = (0..3)
        .map(|_| start(data, &url, "worker", std::slice::from_ref(&four)))
        .collect();
    let sampler = sample(control.admin_url.clone(), watched.clone());
    let r = post(
        &api,
        "/v1/rollouts",
        json!({"target": "head", "selector": {"all": true}, "concurrency": 12,
               "per_server_concurrency": 2}),
    );
    let rid = r["id"].as_str().expect("id").to_string();
    let done = wait_for("the rollout", LONG, || {
        let r = rollout(&api, &rid);
        (r["state"] != "running").then_some(r)
    });
    let peak = sampler.finish();
    eprintln!("connections at most: {peak:?}");
    assert_eq!(done["state"], "succeeded", "{done}");
    for db in &tenant_dbs {
        let n = peak.busy.get(db).copied().unwrap_or(0);
        assert!(n >= 1, "nothing sampled on {db}: {peak:?}");
        assert!(
            n <= 2,
            "{n} tenant runs on {db} with per_server_concurrency 2: {peak:?}"
        );
    }
    // The control DB: 1 API + 3 workers with pools of 4.
    let control_peak = peak.all.get(&control.name).copied().unwrap_or(0);
    assert!(control_peak <= 16, "{control_peak} control connections");
    for w in &mut workers {
        assert!(sigterm(w).success());
    }

    // One worker with 4 threads and TENANTPLANE_TENANT_DB_POOL_SIZE=1, a
    // rollout (back to phase 0) allowing 8 per server: 1 at a time each.
    let _one = start(
        data,
        &url,
        "worker",
        &[four, ("TENANTPLANE_TENANT_DB_POOL_SIZE", "1".into())],
    );
    let sampler = sample(control.admin_url.clone(), watched);
    let r = post(
        &api,
        "/v1/rollouts",
        json!({"target": "phase:0", "selector": {"all": true}, "concurrency": 8,
               "per_server_concurrency": 8}),
    );
    let rid = r["id"].as_str().expect("id").to_string();
    let done = wait_for("the rollback", LONG, || {
        let r = rollout(&api, &rid);
        (r["state"] != "running").then_some(r)
    });
    let peak = sampler.finish();
    eprintln!("connections at most: {peak:?}");
    assert_eq!(done["state"], "succeeded", "{done}");
    for db in &tenant_dbs {
        let n = peak.busy.get(db).copied().unwrap_or(0);
        assert_eq!(n, 1, "{db}: {peak:?}");
    }
}
