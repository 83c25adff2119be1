//! Cron schedules: the API with bad input, and the scheduler's decisions on
//! real control databases — two schedulers racing over a per-second
//! schedule (each fire time decided once), downtime under `skip` and
//! `run_once`, no overlap — on PostgreSQL and SQLite. No timed assertions:
//! waits have deadlines only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Timelike, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenantplane_control_db::schema::{jobs, schedule_runs, schedules};
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_jobs::schedules::{self as sched, Fire, NewSchedule};
use tenantplane_jobs::{Job, JobContext, JobError, Registry, Runner, RunnerConfig};

use crate::common::{call_raw, error_code, wait_for, App, AppOptions, TestPg};

fn schedule_names(app: &App) -> Vec<String> {
    let (s, v) = app.call("GET", "/v1/schedules", None);
    assert_eq!(s, 200, "{v}");
    v.as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

fn schedule_audits(app: &App) -> usize {
    let (s, v) = app.call("GET", "/v1/audit?limit=1000", None);
    assert_eq!(s, 200, "{v}");
    v.as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["resource_type"] == "schedule" && e["actor"] != "system:schedules")
        .count()
}

#[test]
fn schedules_through_the_api_refuse_bad_input_and_change_nothing() {
    let app = App::start();
    let (s, created) = app.call(
        "POST",
        "/v1/schedules",
        Some(json!({
            "name": "eu-backup", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
            "job": "backup", "selector": {"labels": {"region": "eu"}},
            "params": {"keep_daily": 7}, "missed": "run_once",
        })),
    );
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["selector"], json!({"labels": {"region": "eu"}}));
    assert_eq!(created["params"], json!({"keep_daily": 7}));
    assert_eq!(created["enabled"], true);
    assert!(created["next_fire_at"]
        .as_str()
        .is_some_and(|t| t.ends_with(":00:00.000Z")));
    assert!(created["last_fired_at"].is_null());

    let names = schedule_names(&app);
    let audits = schedule_audits(&app);
    assert_eq!(audits, 1);
    let good = json!({"name": "x", "cron": "0 2 * * *", "job": "backup"});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let refused = [
        (with("cron", json!("0 2 * *")), 422, "fields"),
        (with("cron", json!("0 2 * * 9")), 422, "day-of-week"),
        (with("cron", json!("banana")), 422, "fields"),
        (with("job", json!("mine")), 422, "unknown job"),
        (with("timezone", json!("Mars/Olympus")), 422, "time zone"),
        (with("name", json!("Bad_Name")), 422, "schedule name"),
        (with("selector", json!({})), 422, "selects nothing"),
        (with("missed", json!("later")), 422, "missed policy"),
        (
            json!({"name": "x", "cron": "0 4 * * *", "job": "retention",
                   "params": {"keep_daily": 7}}),
            422,
            "keep_daily",
        ),
        (
            json!({"name": "x", "cron": "0 4 * * *", "job": "retention",
                   "params": {"keep_last": -1}}),
            422,
            "negative",
        ),
        (with("name", json!("eu-backup")), 409, "already exists"),
        (
            with("selector", json!({"everyone": true})),
            400,
            "invalid JSON",
        ),
        (with("surprise", json!(1)), 400, "invalid JSON"),
    ];
    for (body, status, why) in refused {
        let (s, v) = app.call("POST", "/v1/schedules", Some(body.clone()));
        assert_eq!(s, status, "{body}: {v}");
        let code = error_code(&v);
        assert_eq!(
            code,
            match status {
                400 => "bad_request",
                409 => "conflict",
                _ => "invalid",
            }
        );
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{body}: {message}");
    }
    let (s, v) = call_raw(&app.url, "POST", "/v1/schedules", "application/json", "{");
    assert_eq!((s, error_code(&v).as_str()), (400, "bad_request"));
    assert_eq!(schedule_names(&app), names, "nothing was created");
    assert_eq!(schedule_audits(&app), audits, "nothing was audited");

    // Retention's policy is checked when saved, on create and on change.
    let (s, v) = app.call(
        "POST",
        "/v1/schedules",
        Some(
            json!({"name": "prune-eu", "cron": "0 4 * * *", "job": "retention",
                    "params": {"keep_last": 3, "daily": 0, "weekly": 0, "monthly": 0}}),
        ),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = app.call(
        "PATCH",
        "/v1/schedules/prune-eu",
        Some(json!({"params": {"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0}})),
    );
    assert_eq!((s, error_code(&v).as_str()), (422, "invalid"), "{v}");
    let (_, kept) = app.call("GET", "/v1/schedules/prune-eu", None);
    assert_eq!(
        kept["params"]["keep_last"], 3,
        "the refused change changed nothing"
    );
    let (s, _) = app.call("DELETE", "/v1/schedules/prune-eu", None);
    assert_eq!(s, 204);
    let audits = schedule_audits(&app);

    // PATCH: bad input changes nothing; a good one changes what it names.
    for (body, status) in [
        (json!({"cron": "* *"}), 422),
        (json!({"timezone": "Nowhere"}), 422),
        (json!({"missed": "sometimes"}), 422),
        (json!({"job": "verify"}), 400),
    ] {
        let (s, v) = app.call("PATCH", "/v1/schedules/eu-backup", Some(body.clone()));
        assert_eq!(s, status, "{body}: {v}");
    }
    let (s, v) = app.call("GET", "/v1/schedules/eu-backup", None);
    assert_eq!(s, 200);
    assert_eq!(v, created);
    assert_eq!(schedule_audits(&app), audits);
    let (s, v) = app.call(
        "PATCH",
        "/v1/schedules/eu-backup",
        Some(json!({"cron": "30 3 * * SUN", "params": null, "enabled": false})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cron"], "30 3 * * SUN");
    assert!(v["params"].is_null() && v["next_fire_at"].is_null());
    assert_eq!(v["selector"], created["selector"]);
    assert!(v["last_fired_at"].is_string(), "a new cron counts from now");
    assert_eq!(schedule_audits(&app), audits + 1);

    for (method, path) in [
        ("GET", "/v1/schedules/nope"),
        ("PATCH", "/v1/schedules/nope"),
        ("DELETE", "/v1/schedules/nope"),
        ("GET", "/v1/schedules/nope/runs"),
    ] {
        let body = (method == "PATCH").then(|| json!({"enabled": true}));
        let (s, v) = app.call(method, path, body);
        assert_eq!(
            (s, error_code(&v).as_str()),
            (404, "not_found"),
            "{method} {path}"
        );
    }
    let (s, v) = app.call("GET", "/v1/schedules/eu-backup/runs?limit=abc", None);
    assert_eq!((s, error_code(&v).as_str()), (400, "bad_request"));
    let (s, v) = app.call("GET", "/v1/schedules/eu-backup/runs?limit=5", None);
    assert_eq!((s, v), (200, json!([])));

    // Operator routes.
    let (s, _) = crate::common::call_as(&app.url, None, "GET", "/v1/schedules", None);
    assert_eq!(s, 401);

    let (s, v) = app.call("DELETE", "/v1/schedules/eu-backup", None);
    assert_eq!(s, 204, "{v}");
    assert!(!schedule_names(&app).contains(&"eu-backup".to_string()));
    assert_eq!(schedule_audits(&app), audits + 2);
}

#[test]
fn the_runs_view_shows_each_fire_time_with_its_job() {
    // The API alone: no worker runs the job, so it stays pending.
    let app = App::start_with(AppOptions {
        command: vec!["api".into()],
        ..AppOptions::default()
    });
    let (s, v) = app.call(
        "POST",
        "/v1/schedules",
        Some(json!({"name": "drill", "cron": "* * * * * *", "job": "export-cleanup"})),
    );
    assert_eq!(s, 201, "{v}");
    // A scheduler in this test process on the app's control DB; no worker
    // runs (the app is `api` only), so the first `export-cleanup` job stays
    // pending and the later fire times are skipped.
    let db = ControlDb::open(&format!(
        "sqlite://{}",
        app.data_dir.join("control.db").display()
    ))
    .unwrap();
    let runs = wait_for("three fire times", Duration::from_secs(60), || {
        sched::tick(&db, Utc::now().naive_utc()).unwrap();
        let (s, v) = app.call("GET", "/v1/schedules/drill/runs?limit=1000", None);
        assert_eq!(s, 200, "{v}");
        let runs = v.as_array().cloned().unwrap_or_default();
        // A slow first tick can record older fire times as missed before
        // the started one: wait for one after it too (newest first).
        let after_started = runs.iter().take_while(|r| r["state"] != "started").count();
        (runs.len() >= 3 && after_started >= 1 && after_started < runs.len()).then_some(runs)
    });
    let started: Vec<&Value> = runs.iter().filter(|r| r["state"] == "started").collect();
    assert_eq!(started.len(), 1, "{runs:?}");
    assert_eq!(started[0]["job_state"], "pending");
    let job_id = started[0]["job_id"].as_i64().unwrap();
    let others: Vec<&Value> = runs.iter().filter(|r| r["state"] != "started").collect();
    assert!(
        others.iter().all(|r| r["job_id"].is_null()
            && (r["state"] == "skipped_overlap" || r["state"] == "missed")),
        "{runs:?}"
    );
    // Newest first: the skipped fire times come after the started one.
    let skipped = runs.iter().take_while(|r| r["state"] != "started").count();
    assert!(skipped >= 1, "{runs:?}");
    let (_, v) = app.call("GET", "/v1/schedules/drill/runs?limit=1", None);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    let before = runs[0]["id"].as_i64().unwrap();
    let (_, v) = app.call(
        "GET",
        &format!("/v1/schedules/drill/runs?before={before}&limit=1000"),
        None,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(runs.len() - 1));
    // The job is visible, with the schedule's payload.
    let job = tenantplane_jobs::get(&db, job_id).unwrap();
    assert_eq!(job.kind, "export-cleanup");
    let fire: Fire = serde_json::from_str(&job.payload).unwrap();
    assert_eq!(fire.schedule, "drill");
}

/// A control database for one scenario, on either backend.
enum Control {
    Pg(TestPg),
    Sqlite(tempfile::TempDir),
}

impl Control {
    fn pg() -> Option<Control> {
        TestPg::new().map(Control::Pg)
    }

    fn sqlite() -> Control {
        Control::Sqlite(tempfile::tempdir().unwrap())
    }

    fn url(&self) -> String {
        match self {
            Control::Pg(pg) => pg.url(),
            Control::Sqlite(dir) => format!("sqlite://{}", dir.path().join("control.db").display()),
        }
    }

    /// A new pool: another process, as far as the database can tell.
    fn open(&self) -> ControlDb {
        ControlDb::open(&self.url()).unwrap()
    }
}

fn operator() -> Actor {
    Actor {
        id: "operator".into(),
        ..Actor::default()
    }
}

fn create(db: &ControlDb, name: &str, cron: &str, missed: &str) {
    sched::create(
        db,
        &operator(),
        NewSchedule {
            name: name.into(),
            cron: cron.into(),
            job: "sweep.trials".into(),
            missed: Some(missed.into()),
            ..NewSchedule::default()
        },
    )
    .unwrap();
}

fn schedule_id(db: &ControlDb, name: &str) -> i64 {
    schedules::table
        .filter(schedules::name.eq(name))
        .select(schedules::id)
        .first(&mut db.conn().unwrap())
        .unwrap()
}

type Run = (i64, NaiveDateTime, String, Option<i64>);

fn runs(db: &ControlDb, name: &str) -> Vec<Run> {
    schedule_runs::table
        .filter(schedule_runs::schedule_id.eq(schedule_id(db, name)))
        .select((
            schedule_runs::id,
            schedule_runs::fire_at,
            schedule_runs::state,
            schedule_runs::job_id,
        ))
        .order(schedule_runs::fire_at)
        .load(&mut db.conn().unwrap())
        .unwrap()
}

fn states(runs: &[Run]) -> Vec<&str> {
    runs.iter().map(|r| r.2.as_str()).collect()
}

fn set_last_fired(db: &ControlDb, name: &str, t: NaiveDateTime) {
    diesel::update(schedules::table.filter(schedules::name.eq(name)))
        .set(schedules::last_fired_at.eq(Some(t)))
        .execute(&mut db.conn().unwrap())
        .unwrap();
}

/// Stands in for the lead's sweep job: takes the schedule's payload.
#[derive(Debug, Serialize, Deserialize)]
struct ScheduledSweep(Fire);

impl Job for ScheduledSweep {
    const KIND: &'static str = "sweep.trials";

    fn run(&self, _: &JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn two_schedulers_fire_every_second_once(control: &Control) {
    let setup = control.open();
    create(&setup, "every-second", "* * * * * *", "skip");
    // A worker runs the jobs, so fire times are not all overlaps.
    let mut registry = Registry::new();
    registry.register::<ScheduledSweep>();
    let runner = Runner::start(
        control.open(),
        registry,
        RunnerConfig {
            poll: Duration::from_millis(20),
            max_idle: Duration::from_millis(100),
            ..RunnerConfig::new("test-worker")
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let schedulers: Vec<_> = (0..2)
        .map(|_| {
            let db = control.open();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut started = 0;
                while !stop.load(Ordering::SeqCst) {
                    let r = sched::tick(&db, Utc::now().naive_utc()).unwrap();
                    assert!(r.failed.is_empty(), "{r:?}");
                    started += r.started;
                    std::thread::sleep(Duration::from_millis(100));
                }
                started
            })
        })
        .collect();
    wait_for("ten fire times", Duration::from_secs(120), || {
        (runs(&setup, "every-second").len() >= 10).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let started: usize = schedulers.into_iter().map(|t| t.join().unwrap()).sum();
    runner.stop();

    let all = runs(&setup, "every-second");
    // Every second from the first fire time to the last has exactly one row.
    let first = all[0].1;
    for (n, run) in all.iter().enumerate() {
        assert_eq!(
            run.1,
            first + chrono::Duration::seconds(n as i64),
            "{all:?}"
        );
    }
    // Every started run has its own job, with its own payload; nothing else
    // queued one.
    let started_runs: Vec<&Run> = all.iter().filter(|r| r.2 == "started").collect();
    assert_eq!(
        started_runs.len(),
        started,
        "both schedulers' reports add up"
    );
    assert!(started >= 1);
    let jobs: Vec<(i64, String)> = jobs::table
        .filter(jobs::kind.eq("sweep.trials"))
        .select((jobs::id, jobs::payload))
        .load(&mut setup.conn().unwrap())
        .unwrap();
    assert_eq!(jobs.len(), started_runs.len());
    for run in &started_runs {
        let (_, payload) = jobs
            .iter()
            .find(|(id, _)| Some(*id) == run.3)
            .expect("the run's job");
        let fire: Fire = serde_json::from_str(payload).unwrap();
        assert_eq!((fire.run_id, fire.fire_at), (run.0, run.1));
    }
    assert!(all
        .iter()
        .filter(|r| r.2 != "started")
        .all(|r| r.3.is_none()));
}

fn downtime_skip_and_run_once(control: &Control) {
    let db = control.open();
    let now = Utc::now().naive_utc();
    // Per-second schedules down for 10 s: the newest fire time is on time,
    // so both policies start it and record the 9 before it missed.
    for (name, missed) in [("secs-skip", "skip"), ("secs-once", "run_once")] {
        create(&db, name, "* * * * * *", missed);
        set_last_fired(&db, name, now - chrono::Duration::seconds(10));
    }
    // A daily schedule whose time passed 5 minutes ago while no scheduler
    // ran: `skip` records it missed, `run_once` runs it now.
    let passed = now - chrono::Duration::minutes(5);
    let daily = format!("{} {} * * *", passed.minute(), passed.hour());
    for (name, missed) in [("daily-skip", "skip"), ("daily-once", "run_once")] {
        create(&db, name, &daily, missed);
        set_last_fired(&db, name, now - chrono::Duration::minutes(10));
    }
    let report = sched::tick(&db, now).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    for name in ["secs-skip", "secs-once"] {
        let all = runs(&db, name);
        assert_eq!(all.len(), 10, "{name}: {all:?}");
        assert_eq!(states(&all[..9]), ["missed"; 9], "{name}");
        assert_eq!(all[9].2, "started", "{name}");
        assert!(all[9].3.is_some());
    }
    assert_eq!(states(&runs(&db, "daily-skip")), ["missed"]);
    let once = runs(&db, "daily-once");
    assert_eq!(states(&once), ["started"]);
    assert!(once[0].3.is_some());
    assert_eq!((report.started, report.missed), (3, 19));
    // Decided once: the same tick again writes nothing.
    let again = sched::tick(&db, now).unwrap();
    assert_eq!(
        (again.started, again.missed, again.skipped_overlap),
        (0, 0, 0)
    );
}

fn an_open_job_skips_the_next_fire_time(control: &Control) {
    let db = control.open();
    create(&db, "busy", "* * * * * *", "skip");
    // No worker runs the jobs: the first stays pending, and every later
    // fire time is skipped_overlap, with no job.
    let runs = wait_for("an overlapping fire time", Duration::from_secs(60), || {
        sched::tick(&db, Utc::now().naive_utc()).unwrap();
        let all = runs(&db, "busy");
        all.iter().any(|r| r.2 == "skipped_overlap").then_some(all)
    });
    let started: Vec<&Run> = runs.iter().filter(|r| r.2 == "started").collect();
    assert_eq!(started.len(), 1, "{runs:?}");
    assert!(runs
        .iter()
        .filter(|r| r.2 != "started")
        .all(|r| r.3.is_none()));
    assert!(runs
        .iter()
        .filter(|r| r.2 == "skipped_overlap")
        .all(|r| r.1 > started[0].1));
    let queued: i64 = jobs::table
        .count()
        .get_result(&mut db.conn().unwrap())
        .unwrap();
    assert_eq!(queued, 1);
}

#[test]
fn two_schedulers_on_postgres_fire_every_second_once() {
    let Some(control) = Control::pg() else { return };
    two_schedulers_fire_every_second_once(&control);
}

#[test]
fn two_schedulers_on_sqlite_fire_every_second_once() {
    two_schedulers_fire_every_second_once(&Control::sqlite());
}

#[test]
fn downtime_on_postgres() {
    let Some(control) = Control::pg() else { return };
    downtime_skip_and_run_once(&control);
}

#[test]
fn downtime_on_sqlite() {
    downtime_skip_and_run_once(&Control::sqlite());
}

#[test]
fn overlap_on_postgres() {
    let Some(control) = Control::pg() else { return };
    an_open_job_skips_the_next_fire_time(&control);
}

#[test]
fn overlap_on_sqlite() {
    an_open_job_skips_the_next_fire_time(&Control::sqlite());
}
