//! Rollout progress from `rollout_counters` (control migration 000016): one
//! row per (rollout, wave, state) that triggers on `tasks` keep in the same
//! transaction as every task change. Reading progress therefore costs the
//! number of waves, not the number of tasks: `GET /v1/rollouts/{id}`, the
//! SSE stream and `advance` after every completion stay flat as fleets grow.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tenantplane_control_db::schema::rollout_counters as rc;
use tenantplane_control_db::states::TaskState;
use tenantplane_control_db::{ControlConnection, Result};

use super::TaskCounts;

/// One counter row.
type Row = (
    i32,
    String,
    i64,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

/// A rollout's counters, as read in one indexed query.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// By wave (0-based); waves without tasks are left out.
    pub waves: BTreeMap<i32, TaskCounts>,
    /// The earliest start and the latest finish of a finished task.
    pub first_started: Option<NaiveDateTime>,
    pub last_finished: Option<NaiveDateTime>,
}

impl Progress {
    pub fn read(conn: &mut ControlConnection, rollout_id: &str) -> Result<Progress> {
        let rows: Vec<Row> = rc::table
            .filter(rc::rollout_id.eq(rollout_id))
            .select((
                rc::wave,
                rc::state,
                rc::n,
                rc::first_started_at,
                rc::last_finished_at,
            ))
            .load(conn)?;
        let mut p = Progress::default();
        for (wave, state, n, first, last) in rows {
            if n != 0 {
                add(p.waves.entry(wave).or_default(), &state, n);
            }
            p.first_started = earliest(p.first_started, first);
            p.last_finished = p.last_finished.max(last);
        }
        Ok(p)
    }

    /// The counts of the whole rollout.
    pub fn total(&self) -> TaskCounts {
        let mut c = TaskCounts::default();
        for w in self.waves.values() {
            c.pending += w.pending;
            c.running += w.running;
            c.succeeded += w.succeeded;
            c.failed += w.failed;
            c.skipped += w.skipped;
            c.cancelled += w.cancelled;
        }
        c
    }

    /// Whether a task of a wave up to `wave` is still pending or running.
    pub fn open_upto(&self, wave: i32) -> bool {
        self.waves
            .range(..=wave)
            .any(|(_, c)| c.pending + c.running > 0)
    }
}

fn earliest(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn add(c: &mut TaskCounts, state: &str, n: i64) {
    match state.parse::<TaskState>() {
        Ok(TaskState::Pending) => c.pending += n,
        Ok(TaskState::Running) => c.running += n,
        Ok(TaskState::Succeeded) => c.succeeded += n,
        Ok(TaskState::Failed) => c.failed += n,
        Ok(TaskState::Skipped) => c.skipped += n,
        Ok(TaskState::Cancelled) => c.cancelled += n,
        // The tasks table's CHECK constraint allows no other word.
        Err(_) => {}
    }
}

/// The counters of a rollout's tasks as creation inserts them (tasks have no
/// insert trigger: creation is their only writer): `pending[w]` pending and
/// `skipped[w]` skipped tasks in wave `w`.
pub(crate) fn insert_created(
    conn: &mut ControlConnection,
    rollout_id: &str,
    pending: &[i64],
    skipped: &[i64],
) -> Result<()> {
    let rows: Vec<_> = [(TaskState::Pending, pending), (TaskState::Skipped, skipped)]
        .into_iter()
        .flat_map(|(state, by_wave)| {
            by_wave
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(move |(wave, n)| {
                    (
                        rc::rollout_id.eq(rollout_id),
                        rc::wave.eq(wave as i32),
                        rc::state.eq(state.as_str()),
                        rc::n.eq(*n),
                    )
                })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let insert = diesel::insert_into(rc::table).values(&rows);
    match conn {
        ControlConnection::Sqlite(c) => insert.execute(c)?,
        ControlConnection::Postgres(c) => insert.execute(c)?,
    };
    Ok(())
}
