//! Schedules against real databases: every scenario runs on SQLite (a temp
//! dir) and on PostgreSQL (a fresh database from the testkit; skipped when
//! PostgreSQL is unreachable). Ticks are given their `now`, so the
//! decisions are checked without waiting for the clock.

use std::time::Duration;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use serde_json::json;
use tenantplane_control_db::schema::{audit_log, jobs, schedule_runs, schedules};
use tenantplane_control_db::states::JobState;
use tenantplane_control_db::{Actor, ControlDb, Error};
use tenantplane_testkit::TestPg;

use super::fire::CATCH_UP_LISTED;
use super::*;

struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestPg>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("control.db").display());
        TestDb {
            url,
            _dir: Some(dir),
            _pg: None,
        }
    }

    fn postgres() -> Option<TestDb> {
        let pg = TestPg::new()?;
        Some(TestDb {
            url: pg.url(),
            _dir: None,
            _pg: Some(pg),
        })
    }

    /// A new pool on the database: another "process".
    fn open(&self) -> ControlDb {
        ControlDb::open(&self.url).unwrap()
    }
}

macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::TestDb::sqlite());
            }

            #[test]
            fn postgres() {
                let Some(t) = super::TestDb::postgres() else { return };
                super::$name(&t);
            }
        }
    )+};
}

on_both_backends!(
    crud_checks_input_and_audits_every_change,
    each_fire_time_starts_one_job_with_the_fire_payload,
    downtime_under_skip_and_run_once,
    an_open_job_makes_the_next_fire_time_skipped_overlap,
    a_long_downtime_is_recorded_in_bounded_rows,
    changing_the_timing_or_enabling_never_fires_the_past,
    concurrent_schedulers_decide_each_fire_time_once,
    defaults_are_created_once_ever,
    runs_view_shows_job_state_and_pages,
    the_scheduler_thread_ticks_and_stops,
    pruning_keeps_the_newest_started_run,
);

fn op() -> Actor {
    Actor {
        id: "operator".into(),
        ..Actor::default()
    }
}

fn new(name: &str, cron: &str) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: cron.into(),
        job: "sweep.trials".into(),
        ..NewSchedule::default()
    }
}

fn audits(db: &ControlDb) -> i64 {
    audit_log::table
        .filter(audit_log::resource_type.eq("schedule"))
        .count()
        .get_result(&mut db.conn().unwrap())
        .unwrap()
}

fn schedule_count(db: &ControlDb) -> i64 {
    schedules::table
        .count()
        .get_result(&mut db.conn().unwrap())
        .unwrap()
}

fn id_of(db: &ControlDb, name: &str) -> i64 {
    schedules::table
        .filter(schedules::name.eq(name))
        .select(schedules::id)
        .first(&mut db.conn().unwrap())
        .unwrap()
}

fn set_last_fired(db: &ControlDb, name: &str, t: NaiveDateTime) {
    diesel::update(schedules::table.filter(schedules::name.eq(name)))
        .set(schedules::last_fired_at.eq(Some(t)))
        .execute(&mut db.conn().unwrap())
        .unwrap();
}

/// (fire_at, state, job_id) of every run, oldest first.
fn runs(db: &ControlDb, name: &str) -> Vec<(NaiveDateTime, String, Option<i64>)> {
    schedule_runs::table
        .filter(schedule_runs::schedule_id.eq(id_of(db, name)))
        .select((
            schedule_runs::fire_at,
            schedule_runs::state,
            schedule_runs::job_id,
        ))
        .order(schedule_runs::fire_at)
        .load(&mut db.conn().unwrap())
        .unwrap()
}

fn count_state(runs: &[(NaiveDateTime, String, Option<i64>)], state: &str) -> usize {
    runs.iter().filter(|r| r.1 == state).count()
}

fn finish_jobs(db: &ControlDb) {
    diesel::update(jobs::table)
        .set(jobs::state.eq(JobState::Succeeded.as_str()))
        .execute(&mut db.conn().unwrap())
        .unwrap();
}

fn job_count(db: &ControlDb) -> i64 {
    jobs::table
        .count()
        .get_result(&mut db.conn().unwrap())
        .unwrap()
}

/// Whole seconds, a little in the future of the schedule's creation.
fn base() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(0) + chrono::Duration::seconds(1)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn invalid(r: Result<Schedule, Error>) -> String {
    match r {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected invalid input, got {other:?}"),
    }
}

fn crud_checks_input_and_audits_every_change(t: &TestDb) {
    let db = t.open();
    let s = create(
        &db,
        &op(),
        NewSchedule {
            timezone: Some("Europe/Berlin".into()),
            selector: Some(Selector {
                all: Some(true),
                ..Selector::default()
            }),
            params: Some(json!({"keep_daily": 7})),
            ..new("nightly", "0 2 * * *")
        },
    )
    .unwrap();
    assert_eq!(s.timezone, "Europe/Berlin");
    assert_eq!(s.missed, "skip");
    assert!(s.enabled && s.last_fired_at.is_none());
    let next = s.next_fire_at.unwrap();
    assert!(next > Utc::now().naive_utc());
    assert_eq!(get(&db, "nightly").unwrap(), s);
    assert_eq!(audits(&db), 1);

    // Refused, each with its reason; nothing written, nothing audited.
    let bad = [
        (new("Bad Name", "0 2 * * *"), "schedule name"),
        (new("x", "0 2 * *"), "has 4 fields"),
        (new("x", "0 2 * * 9"), "day-of-week"),
        (
            NewSchedule {
                job: "mine".into(),
                ..new("x", "0 2 * * *")
            },
            "unknown job",
        ),
        (
            NewSchedule {
                timezone: Some("Mars/Olympus".into()),
                ..new("x", "0 2 * * *")
            },
            "unknown time zone",
        ),
        (
            NewSchedule {
                selector: Some(Selector::default()),
                ..new("x", "0 2 * * *")
            },
            "selects nothing",
        ),
        (
            NewSchedule {
                params: Some(json!(3)),
                ..new("x", "0 2 * * *")
            },
            "JSON object",
        ),
        (
            NewSchedule {
                missed: Some("never".into()),
                ..new("x", "0 2 * * *")
            },
            "missed policy",
        ),
        (new("x", "0 0 0 1 1 * 2020"), "never fires"),
    ];
    for (input, why) in bad {
        let m = invalid(create(&db, &op(), input));
        assert!(m.contains(why), "{why}: {m}");
    }
    match create(&db, &op(), new("nightly", "@hourly")) {
        Err(Error::Conflict(m)) => assert!(m.contains("already exists"), "{m}"),
        other => panic!("duplicate name: {other:?}"),
    }
    assert_eq!(schedule_count(&db), 1);
    assert_eq!(audits(&db), 1);

    // Patch: only what is named; null removes selector and params.
    let p = patch(
        &db,
        &op(),
        "nightly",
        SchedulePatch {
            missed: Some("run_once".into()),
            params: Some(None),
            ..SchedulePatch::default()
        },
    )
    .unwrap();
    assert_eq!(p.missed, "run_once");
    assert_eq!(p.params, None);
    assert_eq!(p.selector, s.selector);
    assert_eq!(p.cron, "0 2 * * *");
    assert_eq!(p.last_fired_at, None, "nothing about the timing changed");
    let m = invalid(patch(
        &db,
        &op(),
        "nightly",
        SchedulePatch {
            cron: Some("* *".into()),
            ..SchedulePatch::default()
        },
    ));
    assert!(m.contains("fields"), "{m}");
    assert!(matches!(
        patch(&db, &op(), "nope", SchedulePatch::default()),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(audits(&db), 2);

    create(&db, &op(), new("another", "@daily")).unwrap();
    let names: Vec<String> = list(&db).unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["another", "nightly"]);

    // Delete takes the runs along.
    set_last_fired(&db, "another", base() - secs(3 * 86_400));
    tick(&db, base()).unwrap();
    assert!(!runs(&db, "another").is_empty());
    delete(&db, &op(), "another").unwrap();
    assert!(matches!(get(&db, "another"), Err(Error::NotFound { .. })));
    assert!(matches!(
        delete(&db, &op(), "another"),
        Err(Error::NotFound { .. })
    ));
    let left: i64 = schedule_runs::table
        .count()
        .get_result(&mut db.conn().unwrap())
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(audits(&db), 4);
}

fn each_fire_time_starts_one_job_with_the_fire_payload(t: &TestDb) {
    let db = t.open();
    create(
        &db,
        &op(),
        NewSchedule {
            selector: Some(Selector {
                plans: Some(vec!["pro".into()]),
                ..Selector::default()
            }),
            params: Some(json!({"keep": 3})),
            ..new("every-second", "* * * * * *")
        },
    )
    .unwrap();
    let t0 = base();
    set_last_fired(&db, "every-second", t0 - secs(1));
    assert_eq!(
        tick(&db, t0 - secs(1)).unwrap().started,
        0,
        "nothing due yet"
    );
    let r = tick(&db, t0).unwrap();
    assert_eq!((r.started, r.missed, r.skipped_overlap), (1, 0, 0));
    // The same instant again: decided already, nothing written.
    assert_eq!(
        tick(&db, t0).unwrap(),
        TickReport {
            schedules: 1,
            ..TickReport::default()
        }
    );
    let all = runs(&db, "every-second");
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0, all[0].1.as_str()), (t0, "started"));

    let job = crate::get(&db, all[0].2.unwrap()).unwrap();
    assert_eq!(job.kind, "sweep.trials");
    assert_eq!(job.state, JobState::Pending);
    let fire: Fire = serde_json::from_str(&job.payload).unwrap();
    let run_id: i64 = schedule_runs::table
        .select(schedule_runs::id)
        .first(&mut db.conn().unwrap())
        .unwrap();
    assert_eq!(
        fire,
        Fire {
            schedule: "every-second".into(),
            run_id,
            fire_at: t0,
            selector: Some(Selector {
                plans: Some(vec!["pro".into()]),
                ..Selector::default()
            }),
            params: Some(json!({"keep": 3})),
        }
    );

    finish_jobs(&db);
    for n in 1..=3 {
        let r = tick(&db, t0 + secs(n)).unwrap();
        assert_eq!(r.started, 1);
        finish_jobs(&db);
    }
    let all = runs(&db, "every-second");
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|r| r.1 == "started" && r.2.is_some()));
    assert_eq!(job_count(&db), 4);
    assert_eq!(
        get(&db, "every-second").unwrap().last_fired_at,
        Some(t0 + secs(3))
    );

    // A disabled schedule is not looked at.
    patch(
        &db,
        &op(),
        "every-second",
        SchedulePatch {
            enabled: Some(false),
            ..SchedulePatch::default()
        },
    )
    .unwrap();
    assert_eq!(tick(&db, t0 + secs(10)).unwrap().schedules, 0);
    assert_eq!(runs(&db, "every-second").len(), 4);
}

fn downtime_under_skip_and_run_once(t: &TestDb) {
    let db = t.open();
    let now = base() + secs(60);
    for (name, missed) in [("per-second-skip", "skip"), ("per-second-once", "run_once")] {
        create(
            &db,
            &op(),
            NewSchedule {
                missed: Some(missed.into()),
                ..new(name, "* * * * * *")
            },
        )
        .unwrap();
        set_last_fired(&db, name, now - secs(10));
    }
    // Ten fire times passed; the newest is on time: both policies start it
    // and record the nine before it missed.
    let r = tick(&db, now).unwrap();
    assert_eq!((r.started, r.missed), (2, 18));
    for name in ["per-second-skip", "per-second-once"] {
        let all = runs(&db, name);
        assert_eq!(all.len(), 10, "{name}");
        assert_eq!(count_state(&all, "missed"), 9, "{name}");
        assert_eq!(all[9], (now, "started".into(), all[9].2));
        assert!(all[9].2.is_some());
    }

    // A nightly schedule whose 02:00 passed 30 minutes before the
    // scheduler came back: `skip` records it missed, `run_once` runs it.
    for name in ["per-second-skip", "per-second-once"] {
        delete(&db, &op(), name).unwrap();
    }
    let night = |d: i64| {
        (now.date() + chrono::Days::new(d as u64))
            .and_hms_opt(2, 0, 0)
            .unwrap()
    };
    let late = night(1) + secs(30 * 60);
    for (name, missed) in [("nightly-skip", "skip"), ("nightly-once", "run_once")] {
        create(
            &db,
            &op(),
            NewSchedule {
                missed: Some(missed.into()),
                ..new(name, "0 2 * * *")
            },
        )
        .unwrap();
        set_last_fired(&db, name, night(1) - secs(3600));
    }
    let r = tick(&db, late).unwrap();
    assert_eq!((r.started, r.missed), (1, 1));
    let skip = runs(&db, "nightly-skip");
    assert_eq!(skip, [(night(1), "missed".into(), None)]);
    let once = runs(&db, "nightly-once");
    assert_eq!(once.len(), 1);
    assert_eq!((once[0].0, once[0].1.as_str()), (night(1), "started"));
    assert!(once[0].2.is_some());
    // Both wait for the next night now.
    let r = tick(&db, late + secs(60)).unwrap();
    assert_eq!(
        runs(&db, "nightly-skip").len() + runs(&db, "nightly-once").len(),
        2
    );
    assert_eq!(r.missed, 0);
}

fn an_open_job_makes_the_next_fire_time_skipped_overlap(t: &TestDb) {
    let db = t.open();
    create(&db, &op(), new("busy", "* * * * * *")).unwrap();
    let t0 = base();
    set_last_fired(&db, "busy", t0 - secs(1));
    assert_eq!(tick(&db, t0).unwrap().started, 1);
    // Its job is still pending (no worker runs the kind): the next two fire
    // times are skipped, and no second job is queued.
    assert_eq!(tick(&db, t0 + secs(1)).unwrap().skipped_overlap, 1);
    // Running counts as open too.
    diesel::update(jobs::table)
        .set(jobs::state.eq(JobState::Running.as_str()))
        .execute(&mut db.conn().unwrap())
        .unwrap();
    assert_eq!(tick(&db, t0 + secs(2)).unwrap().skipped_overlap, 1);
    assert_eq!(job_count(&db), 1);
    let all = runs(&db, "busy");
    assert_eq!(
        all.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["started", "skipped_overlap", "skipped_overlap"]
    );
    assert!(all[1].2.is_none() && all[2].2.is_none());
    // A dead job is not open: the next fire time starts.
    diesel::update(jobs::table)
        .set(jobs::state.eq(JobState::Dead.as_str()))
        .execute(&mut db.conn().unwrap())
        .unwrap();
    assert_eq!(tick(&db, t0 + secs(3)).unwrap().started, 1);
    assert_eq!(job_count(&db), 2);
}

fn a_long_downtime_is_recorded_in_bounded_rows(t: &TestDb) {
    let db = t.open();
    create(
        &db,
        &op(),
        NewSchedule {
            missed: Some("run_once".into()),
            ..new("month", "* * * * * *")
        },
    )
    .unwrap();
    let now = base();
    let since = now - secs(30 * 86_400);
    set_last_fired(&db, "month", since);
    let r = tick(&db, now).unwrap();
    assert_eq!(r.started, 1);
    assert_eq!(r.missed, CATCH_UP_LISTED, "99 listed and one summary");
    let all = runs(&db, "month");
    assert_eq!(all.len(), CATCH_UP_LISTED + 1);
    assert_eq!(
        all[0].0,
        since + secs(1),
        "the summary sits at the first one"
    );
    assert_eq!(
        all.last().map(|r| (r.0, r.1.as_str())),
        Some((now, "started"))
    );
    let summary = list_runs(&db, "month", 1000, None)
        .unwrap()
        .into_iter()
        .find(|r| r.note.is_some())
        .unwrap();
    assert_eq!(summary.state, "missed");
    assert!(summary.note.unwrap().contains("not listed one by one"));
    assert_eq!(get(&db, "month").unwrap().last_fired_at, Some(now));
}

fn changing_the_timing_or_enabling_never_fires_the_past(t: &TestDb) {
    let db = t.open();
    create(&db, &op(), new("hourly", "@hourly")).unwrap();
    let long_ago = base() - secs(5 * 3600);
    set_last_fired(&db, "hourly", long_ago);
    let p = patch(
        &db,
        &op(),
        "hourly",
        SchedulePatch {
            cron: Some("*/5 * * * *".into()),
            ..SchedulePatch::default()
        },
    )
    .unwrap();
    let restarted = p.last_fired_at.unwrap();
    assert!(restarted > long_ago + secs(4 * 3600));
    assert!(p.next_fire_at.unwrap() > restarted);
    let r = tick(&db, restarted).unwrap();
    assert_eq!((r.started, r.missed), (0, 0));

    // Same for a new zone, and for enabling a disabled schedule.
    set_last_fired(&db, "hourly", long_ago);
    let p = patch(
        &db,
        &op(),
        "hourly",
        SchedulePatch {
            timezone: Some("Asia/Kolkata".into()),
            ..SchedulePatch::default()
        },
    )
    .unwrap();
    assert!(p.last_fired_at.unwrap() > long_ago + secs(4 * 3600));
    let off = SchedulePatch {
        enabled: Some(false),
        ..SchedulePatch::default()
    };
    patch(&db, &op(), "hourly", off).unwrap();
    set_last_fired(&db, "hourly", long_ago);
    let on = SchedulePatch {
        enabled: Some(true),
        ..SchedulePatch::default()
    };
    let p = patch(&db, &op(), "hourly", on).unwrap();
    let restarted = p.last_fired_at.unwrap();
    assert!(restarted > long_ago + secs(4 * 3600));
    let r = tick(&db, restarted).unwrap();
    assert_eq!((r.started, r.missed), (0, 0));
    assert!(runs(&db, "hourly").is_empty());
}

fn concurrent_schedulers_decide_each_fire_time_once(t: &TestDb) {
    let setup = t.open();
    let t0 = base();
    for n in 0..3 {
        create(&setup, &op(), new(&format!("s{n}"), "* * * * * *")).unwrap();
        set_last_fired(&setup, &format!("s{n}"), t0 - secs(5));
    }
    // Four "processes" (own pools) race over the same 40 simulated seconds;
    // jobs finish at once, so every fire time may start one.
    // The test's own "finish every job" updates are serialized: two of them
    // at once lock the same rows in different orders (a deadlock of the test
    // harness, not of `tick`, which locks no job rows).
    let finishing = std::sync::Arc::new(std::sync::Mutex::new(()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = t.open();
            let finishing = finishing.clone();
            std::thread::spawn(move || {
                let mut reports = Vec::new();
                for s in 0..40 {
                    reports.push(tick(&db, t0 + secs(s)).unwrap());
                    let _one_at_a_time = finishing.lock().unwrap();
                    diesel::update(jobs::table)
                        .set(jobs::state.eq(JobState::Succeeded.as_str()))
                        .execute(&mut db.conn().unwrap())
                        .unwrap();
                }
                reports
            })
        })
        .collect();
    let reports: Vec<TickReport> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(reports.iter().all(|r| r.failed.is_empty()), "{reports:?}");
    let started: usize = reports.iter().map(|r| r.started).sum();
    let mut total = 0;
    for n in 0..3 {
        let all = runs(&setup, &format!("s{n}"));
        // One row per fire time from t0 - 4 s to t0 + 39 s, no gaps.
        let times: Vec<NaiveDateTime> = all.iter().map(|r| r.0).collect();
        let expected: Vec<NaiveDateTime> = (-4..40).map(|s| t0 + secs(s)).collect();
        assert_eq!(times, expected);
        // Every started run has its own job.
        let mut job_ids: Vec<i64> = all.iter().filter_map(|r| r.2).collect();
        assert_eq!(job_ids.len(), count_state(&all, "started"));
        job_ids.dedup();
        assert_eq!(job_ids.len(), count_state(&all, "started"));
        total += count_state(&all, "started");
    }
    assert_eq!(started, total, "the reports count what was written");
    assert_eq!(job_count(&setup), total as i64);
}

fn defaults_are_created_once_ever(t: &TestDb) {
    let db = t.open();
    let created = ensure_defaults(&db).unwrap();
    assert_eq!(
        created,
        ["nightly-backup", "daily-retention", "weekly-restore-drill"]
    );
    assert!(ensure_defaults(&db).unwrap().is_empty());
    let drill = get(&db, "weekly-restore-drill").unwrap();
    assert_eq!(
        (drill.cron.as_str(), drill.job.as_str()),
        ("0 5 * * 0", "verify")
    );
    assert_eq!(drill.missed, "run_once");
    assert_eq!(
        drill.next_fire_at.unwrap().format("%a %H:%M").to_string(),
        "Sun 05:00"
    );
    // An operator's deletion sticks.
    delete(&db, &op(), "daily-retention").unwrap();
    assert!(ensure_defaults(&db).unwrap().is_empty());
    assert_eq!(schedule_count(&db), 2);
    // Another process starting at the same time creates nothing twice.
    let other = t.open();
    let a = std::thread::spawn(move || ensure_defaults(&other).unwrap());
    let b = ensure_defaults(&db).unwrap();
    assert!(a.join().unwrap().is_empty() && b.is_empty());
}

fn runs_view_shows_job_state_and_pages(t: &TestDb) {
    let db = t.open();
    create(&db, &op(), new("view", "* * * * * *")).unwrap();
    let t0 = base();
    set_last_fired(&db, "view", t0 - secs(1));
    tick(&db, t0).unwrap();
    tick(&db, t0 + secs(1)).unwrap();
    diesel::update(jobs::table)
        .set((
            jobs::state.eq(JobState::Dead.as_str()),
            jobs::last_error.eq(Some("tenant t-1: disk full")),
        ))
        .execute(&mut db.conn().unwrap())
        .unwrap();
    tick(&db, t0 + secs(2)).unwrap();
    let all = list_runs(&db, "view", 10, None).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.state.as_str(), r.job_state.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("started", Some("pending")),
            ("skipped_overlap", None),
            ("started", Some("dead")),
        ]
    );
    assert_eq!(all[2].job_error.as_deref(), Some("tenant t-1: disk full"));
    assert_eq!(all[0].fire_at, t0 + secs(2));
    let page = list_runs(&db, "view", 2, None).unwrap();
    assert_eq!(page.len(), 2);
    let rest = list_runs(&db, "view", 2, Some(page[1].id)).unwrap();
    assert_eq!(rest, all[2..].to_vec());
    assert!(matches!(
        list_runs(&db, "nope", 10, None),
        Err(Error::NotFound { .. })
    ));
}

fn the_scheduler_thread_ticks_and_stops(t: &TestDb) {
    let db = t.open();
    create(&db, &op(), new("live", "* * * * * *")).unwrap();
    let scheduler = Scheduler::start_with(
        db.clone(),
        SchedulerConfig {
            every: Duration::from_millis(100),
            defaults: true,
        },
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while runs(&db, "live").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no fire time decided");
        std::thread::sleep(Duration::from_millis(50));
    }
    scheduler.stop();
    assert_eq!(schedule_count(&db), 4, "the defaults were created");
}

fn pruning_keeps_the_newest_started_run(t: &TestDb) {
    let db = t.open();
    create(&db, &op(), new("often", "* * * * * *")).unwrap();
    let t0 = base();
    // Three started runs, one second apart (the jobs finish in between so
    // none is skipped as an overlap).
    for n in 0..3 {
        set_last_fired(&db, "often", t0 + secs(n) - secs(1));
        assert_eq!(tick(&db, t0 + secs(n)).unwrap().started, 1);
        finish_jobs(&db);
    }
    assert_eq!(runs(&db, "often").len(), 3);
    // Everything is "old"; the newest started run stays for the overlap
    // check.
    let removed = prune_runs(&db, Utc::now().naive_utc() + secs(60)).unwrap();
    assert_eq!(removed, 2);
    let left = runs(&db, "often");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, t0 + secs(2));
    // Nothing is newer than the cut-off: nothing goes.
    assert_eq!(prune_runs(&db, base() - secs(3600)).unwrap(), 0);
}
