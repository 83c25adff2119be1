//! Firing: which due fire times start a job, which are recorded `missed` or
//! `skipped_overlap` ([`decide`], a pure function), and [`tick`], which any
//! process may call at any time to apply that to every enabled schedule.
//!
//! # The rules
//!
//! A schedule's due fire times are those in `(last_fired_at, now]`
//! (`created_at` before its first fire time), in its time zone. Normally
//! that is one fire time, decided within a second. After downtime it can be
//! many:
//!
//! - every due fire time but the newest is recorded `missed`;
//! - the newest starts its job, except:
//!   - under `skip`, when it is more than [`MISSED_GRACE`] (60 s) late: it is
//!     recorded `missed` too, and the schedule waits for its next fire time;
//!   - under `run_once` it starts however late it is: one run stands in for
//!     all the fire times the downtime swallowed;
//! - no overlap: when the schedule's newest started run has a job that is
//!   still `pending` or `running`, the fire time that would start is
//!   recorded `skipped_overlap` instead (a job of a kind no worker runs yet
//!   stays pending, so its schedule skips until one does).
//!
//! So with a daily 02:00 schedule and a scheduler that is back at 02:30,
//! `skip` records 02:00 as missed and `run_once` runs it at 02:30.
//!
//! Catch-up is bounded: at most [`CATCH_UP_LISTED`] fire times are recorded
//! one by one (the newest); the older ones become one `missed` row at the
//! first of them whose `note` names the range. A month of downtime under a
//! per-second schedule is a few hundred steps, not millions of rows.
//!
//! # Exactly once
//!
//! For one schedule, the decision is one write transaction: re-read the
//! row, compute the due fire times, insert one `schedule_runs` row per fire
//! time with `ON CONFLICT (schedule_id, fire_at) DO NOTHING RETURNING id`,
//! queue the job of the started one (payload [`Fire`]) only when its row
//! was inserted, and move `last_fired_at` forward. A process racing for the
//! same fire time inserts nothing (PostgreSQL makes its insert wait for the
//! first transaction, then skip; SQLite serializes the transactions), so
//! each fire time has one row and at most one job, and a job never exists
//! without its row or the other way round.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tenantplane_control_db::error::{report as error_chain, Result};
use tenantplane_control_db::schema::{jobs, schedule_runs, schedules};
use tenantplane_control_db::states::{JobState, MissedPolicy, ScheduleRunState};
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb};

use super::cron::Timetable;
use super::store::ScheduleRow;
use super::Fire;
use crate::queue::enqueue_raw;

/// How late the newest due fire time may be and still start under `skip`.
pub const MISSED_GRACE: Duration = Duration::from_secs(60);

/// Due fire times recorded one by one in a catch-up; older ones are summed
/// up in one row.
pub const CATCH_UP_LISTED: usize = 100;

/// Attempts of a scheduled job (the `Job` trait's default: the kind is only
/// a name here).
const SCHEDULED_MAX_ATTEMPTS: i32 = 5;

/// What becomes of one due fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub fire_at: NaiveDateTime,
    pub state: ScheduleRunState,
}

/// Decides the due fire times of one schedule (ascending, as
/// [`Timetable::due`] lists them) at `now`, by the rules in the module
/// documentation. `previous_open`: the schedule's newest started run has a
/// job that is still pending or running.
pub fn decide(
    due: &[NaiveDateTime],
    now: NaiveDateTime,
    policy: MissedPolicy,
    previous_open: bool,
) -> Vec<Decision> {
    let Some((&newest, older)) = due.split_last() else {
        return Vec::new();
    };
    let mut decisions: Vec<Decision> = older
        .iter()
        .map(|&fire_at| Decision {
            fire_at,
            state: ScheduleRunState::Missed,
        })
        .collect();
    let grace = chrono::Duration::from_std(MISSED_GRACE).unwrap_or_default();
    let late = now - newest > grace;
    let state = if policy == MissedPolicy::Skip && late {
        ScheduleRunState::Missed
    } else if previous_open {
        ScheduleRunState::SkippedOverlap
    } else {
        ScheduleRunState::Started
    };
    decisions.push(Decision {
        fire_at: newest,
        state,
    });
    decisions
}

/// What one [`tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Enabled schedules looked at.
    pub schedules: usize,
    /// Runs started (jobs queued).
    pub started: usize,
    /// Fire times recorded `missed` (a catch-up summary counts once).
    pub missed: usize,
    pub skipped_overlap: usize,
    /// Fire times another process had decided already: nothing written.
    pub decided_elsewhere: usize,
    /// Schedules that could not be decided, with the error chain; the
    /// others were.
    pub failed: Vec<(String, String)>,
}

/// Decides every due fire time of every enabled schedule at `now` (UTC).
/// Any number of processes may call this at any time; each fire time is
/// decided once. A schedule with nothing due costs one computation and no
/// write.
pub fn tick(db: &ControlDb, now: NaiveDateTime) -> Result<TickReport> {
    let rows: Vec<ScheduleRow> = {
        let mut conn = db.conn()?;
        schedules::table
            .filter(schedules::enabled.eq(true))
            .select(ScheduleRow::as_select())
            .order(schedules::id)
            .load(&mut conn)?
    };
    let mut report = TickReport {
        schedules: rows.len(),
        ..TickReport::default()
    };
    for row in rows {
        let table = match Timetable::parse(&row.cron, &row.timezone) {
            Ok(t) => t,
            Err(e) => {
                report.failed.push((row.name.clone(), error_chain(&e)));
                continue;
            }
        };
        if table.next_after(row.fired_until()).is_none_or(|t| t > now) {
            continue;
        }
        if let Err(e) = fire(db, row.id, now, &mut report) {
            report.failed.push((row.name.clone(), error_chain(&e)));
        }
    }
    Ok(report)
}

/// Decides schedule `id`'s due fire times in one write transaction.
fn fire(db: &ControlDb, id: i64, now: NaiveDateTime, report: &mut TickReport) -> Result<()> {
    let mut conn = db.conn()?;
    let mut counts = TickReport::default();
    let mut name = String::new();
    write_tx(&mut conn, None, |conn| {
        // Fresh inside the transaction: another process may have fired, or
        // an operator changed or disabled the schedule, since the list.
        let Some(row) = schedules::table
            .find(id)
            .select(ScheduleRow::as_select())
            .first(conn)
            .optional()?
        else {
            return Ok(());
        };
        if !row.enabled {
            return Ok(());
        }
        name.clone_from(&row.name);
        let table = Timetable::parse(&row.cron, &row.timezone)?;
        let due = table.due(row.fired_until(), now, CATCH_UP_LISTED);
        let Some(&newest) = due.times.last() else {
            return Ok(());
        };
        let decisions = decide(&due.times, now, row.policy()?, previous_open(conn, id)?);
        if let Some((first, last)) = due.unlisted {
            let note = format!(
                "every fire time from {}Z through {}Z was missed too (not listed one by one)",
                first.format("%Y-%m-%dT%H:%M:%S"),
                last.format("%Y-%m-%dT%H:%M:%S")
            );
            match insert_run(conn, id, first, ScheduleRunState::Missed, Some(&note), now)? {
                Some(_) => counts.missed += 1,
                None => counts.decided_elsewhere += 1,
            }
        }
        for d in &decisions {
            let Some(run_id) = insert_run(conn, id, d.fire_at, d.state, None, now)? else {
                counts.decided_elsewhere += 1;
                continue;
            };
            match d.state {
                ScheduleRunState::Started => {
                    let job_id = start(conn, &row, run_id, d.fire_at)?;
                    counts.started += 1;
                    tracing::info!(schedule = %row.name, fire_at = %d.fire_at, run_id, job_id, job = %row.job, "schedule fired");
                }
                ScheduleRunState::Missed => counts.missed += 1,
                ScheduleRunState::SkippedOverlap => {
                    counts.skipped_overlap += 1;
                    tracing::info!(schedule = %row.name, fire_at = %d.fire_at, "previous job still open: fire time skipped");
                }
            }
        }
        diesel::update(
            schedules::table.find(id).filter(
                schedules::last_fired_at
                    .is_null()
                    .or(schedules::last_fired_at.lt(newest)),
            ),
        )
        .set(schedules::last_fired_at.eq(newest))
        .execute(conn)?;
        Ok(())
    })?;
    if counts.missed > 0 {
        tracing::warn!(schedule = %name, missed = counts.missed, "fire times missed");
    }
    report.started += counts.started;
    report.missed += counts.missed;
    report.skipped_overlap += counts.skipped_overlap;
    report.decided_elsewhere += counts.decided_elsewhere;
    Ok(())
}

/// Whether the schedule's newest started run has a job still pending or
/// running. A run whose job was pruned (finished long ago) is not open.
fn previous_open(conn: &mut ControlConnection, schedule_id: i64) -> Result<bool> {
    let state: Option<Option<String>> = schedule_runs::table
        .left_join(jobs::table)
        .filter(schedule_runs::schedule_id.eq(schedule_id))
        .filter(schedule_runs::state.eq(ScheduleRunState::Started.as_str()))
        .order(schedule_runs::fire_at.desc())
        .select(jobs::state.nullable())
        .first(conn)
        .optional()?;
    Ok(state
        .flatten()
        .is_some_and(|s| s == JobState::Pending.as_str() || s == JobState::Running.as_str()))
}

/// Inserts the row of one fire time unless it exists; its id when written.
fn insert_run(
    conn: &mut ControlConnection,
    schedule_id: i64,
    fire_at: NaiveDateTime,
    state: ScheduleRunState,
    note: Option<&str>,
    now: NaiveDateTime,
) -> Result<Option<i64>> {
    let insert = diesel::insert_into(schedule_runs::table)
        .values((
            schedule_runs::schedule_id.eq(schedule_id),
            schedule_runs::fire_at.eq(fire_at),
            schedule_runs::state.eq(state.as_str()),
            schedule_runs::decided_at.eq(now),
            schedule_runs::note.eq(note),
        ))
        .on_conflict_do_nothing()
        .returning(schedule_runs::id);
    Ok(match conn {
        ControlConnection::Postgres(c) => insert.get_result(c).optional()?,
        ControlConnection::Sqlite(c) => insert.get_result(c).optional()?,
    })
}

/// Queues the job of a started run (in the run's transaction) and links
/// the run to it; the job's id.
fn start(
    conn: &mut ControlConnection,
    row: &ScheduleRow,
    run_id: i64,
    fire_at: NaiveDateTime,
) -> Result<i64> {
    let fire = Fire {
        schedule: row.name.clone(),
        run_id,
        fire_at,
        selector: row.selector()?,
        params: row.params()?,
    };
    let payload = serde_json::to_string(&fire).map_err(|e| {
        tenantplane_control_db::Error::invalid(format!(
            "schedule {}: payload is not JSON: {e}",
            row.name
        ))
    })?;
    let key = format!(
        "schedule:{}:{}",
        row.name,
        fire_at.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let job_id = enqueue_raw(
        conn,
        &row.job,
        &payload,
        Some(&key),
        SCHEDULED_MAX_ATTEMPTS,
        chrono::Utc::now().naive_utc(),
    )?
    .id();
    diesel::update(schedule_runs::table.find(run_id))
        .set(schedule_runs::job_id.eq(Some(job_id)))
        .execute(conn)?;
    Ok(job_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScheduleRunState::{Missed, SkippedOverlap, Started};

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn states(d: &[Decision]) -> Vec<ScheduleRunState> {
        d.iter().map(|d| d.state).collect()
    }

    #[test]
    fn nothing_due_decides_nothing() {
        assert!(decide(&[], at("2026-12-02 02:00:00"), MissedPolicy::Skip, false).is_empty());
    }

    #[test]
    fn an_on_time_fire_time_starts_under_both_policies() {
        let due = [at("2026-12-02 02:00:00")];
        for policy in [MissedPolicy::Skip, MissedPolicy::RunOnce] {
            let d = decide(&due, at("2026-12-02 02:00:01"), policy, false);
            assert_eq!(states(&d), [Started]);
            // Exactly at the grace: still on time.
            let d = decide(&due, at("2026-12-02 02:01:00"), policy, false);
            assert_eq!(states(&d), [Started]);
        }
    }

    #[test]
    fn a_late_fire_time_is_missed_under_skip_and_runs_under_run_once() {
        let due = [at("2026-12-02 02:00:00")];
        let now = at("2026-12-02 02:30:00");
        assert_eq!(
            states(&decide(&due, now, MissedPolicy::Skip, false)),
            [Missed]
        );
        assert_eq!(
            states(&decide(&due, now, MissedPolicy::RunOnce, false)),
            [Started]
        );
    }

    #[test]
    fn after_downtime_only_the_newest_may_start() {
        // A per-second schedule, down for 10 s: the newest is on time.
        let due: Vec<NaiveDateTime> = (1..=10)
            .map(|s| at("2026-12-02 12:00:00") + chrono::Duration::seconds(s))
            .collect();
        let now = at("2026-12-02 12:00:10");
        for policy in [MissedPolicy::Skip, MissedPolicy::RunOnce] {
            let d = decide(&due, now, policy, false);
            assert_eq!(d.len(), 10);
            assert!(d[..9].iter().all(|d| d.state == Missed));
            assert_eq!(
                d[9],
                Decision {
                    fire_at: now,
                    state: Started
                }
            );
        }
        // Three nightly fire times while down for three days.
        let due = [
            at("2026-12-01 02:00:00"),
            at("2026-12-02 02:00:00"),
            at("2026-12-03 02:00:00"),
        ];
        let now = at("2026-12-03 09:00:00");
        assert_eq!(
            states(&decide(&due, now, MissedPolicy::Skip, false)),
            [Missed, Missed, Missed]
        );
        assert_eq!(
            states(&decide(&due, now, MissedPolicy::RunOnce, false)),
            [Missed, Missed, Started]
        );
    }

    #[test]
    fn an_open_previous_job_skips_the_fire_time() {
        let due = [at("2026-12-02 02:00:00")];
        let now = at("2026-12-02 02:00:01");
        for policy in [MissedPolicy::Skip, MissedPolicy::RunOnce] {
            assert_eq!(states(&decide(&due, now, policy, true)), [SkippedOverlap]);
        }
        // Missed wins over overlap: it would not have run anyway.
        let late = at("2026-12-02 03:00:00");
        assert_eq!(
            states(&decide(&due, late, MissedPolicy::Skip, true)),
            [Missed]
        );
        assert_eq!(
            states(&decide(&due, late, MissedPolicy::RunOnce, true)),
            [SkippedOverlap]
        );
    }
}
