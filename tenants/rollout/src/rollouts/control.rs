//! Operator controls: pause, resume, cancel, retry.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_control_db::audit::{self, Change};
use tenantplane_control_db::schema::{rollouts, tasks};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::write_tx;

use super::{counts, find_row, get, Progress, Rollout};
use tenantplane_control_db::{Actor, ControlConnection, ControlDb, Error, Result};

/// Operator controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
    Retry,
    /// Opens the next wave now, ending a finished wave's hold.
    Promote,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
            Control::Retry => "retry",
            Control::Promote => "promote",
        }
    }
}

/// Pause, resume, cancel or retry the failed tasks of a rollout.
pub fn control(db: &ControlDb, actor: &Actor, id: &str, what: Control) -> Result<Rollout> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let r = find_row(conn, id)?;
        let now = Utc::now().naive_utc();
        let refuse = |why: &str| {
            Err(Error::Conflict(format!(
                "cannot {} rollout {id}: it is {}{why}",
                what.name(),
                r.state
            )))
        };
        let before = r.state.clone();
        match what {
            Control::Pause => {
                if r.state != RolloutState::Running.as_str() {
                    return refuse("");
                }
                set_state(conn, id, RolloutState::Paused, None, now)?;
            }
            Control::Resume => {
                if r.state != RolloutState::Paused.as_str()
                    && r.state != RolloutState::Halted.as_str()
                {
                    return refuse("");
                }
                if r.state == RolloutState::Halted.as_str() {
                    // The operator accepted the failures so far: the budget
                    // counts from here.
                    let failed = counts(conn, id)?.failed as i32;
                    diesel::update(rollouts::table.find(id))
                        .set(rollouts::failures_forgiven.eq(failed))
                        .execute(conn)?;
                }
                set_state(conn, id, RolloutState::Running, None, now)?;
            }
            Control::Cancel => {
                if ![
                    RolloutState::Running,
                    RolloutState::Paused,
                    RolloutState::Halted,
                ]
                .iter()
                .any(|s| r.state == s.as_str())
                {
                    return refuse("");
                }
                diesel::update(
                    tasks::table
                        .filter(tasks::rollout_id.eq(id))
                        .filter(tasks::state.eq(TaskState::Pending.as_str())),
                )
                .set((
                    tasks::state.eq(TaskState::Cancelled.as_str()),
                    tasks::finished_at.eq(now),
                ))
                .execute(conn)?;
                set_state(conn, id, RolloutState::Cancelled, None, now)?;
                diesel::update(rollouts::table.find(id))
                    .set(rollouts::finished_at.eq(now))
                    .execute(conn)?;
            }
            Control::Retry => {
                if r.state == RolloutState::Cancelled.as_str() {
                    return refuse("");
                }
                let n = diesel::update(
                    tasks::table
                        .filter(tasks::rollout_id.eq(id))
                        .filter(tasks::state.eq(TaskState::Failed.as_str())),
                )
                // A retried task takes a fresh pre-migration backup: the
                // old one may be hours old (restoring it would lose what the
                // tenant wrote since) or already restored.
                .set((
                    tasks::state.eq(TaskState::Pending.as_str()),
                    tasks::attempts.eq(0),
                    tasks::next_attempt_at.eq(now),
                    tasks::finished_at.eq(None::<NaiveDateTime>),
                    tasks::backup_id.eq(None::<String>),
                    tasks::restored.eq(false),
                ))
                .execute(conn)?;
                if n == 0 {
                    return refuse(" with no failed task to retry");
                }
                // The retried tasks no longer count as failed: the budget
                // starts afresh.
                diesel::update(rollouts::table.find(id))
                    .set((
                        rollouts::finished_at.eq(None::<NaiveDateTime>),
                        rollouts::failures_forgiven.eq(0),
                    ))
                    .execute(conn)?;
                set_state(conn, id, RolloutState::Running, None, now)?;
            }
            Control::Promote => {
                if r.state != RolloutState::Running.as_str() {
                    return refuse("");
                }
                if r.current_wave + 1 >= r.wave_count {
                    return refuse(" in its last wave: there is no wave to promote to");
                }
                let progress = Progress::read(conn, id)?;
                if progress.open_upto(r.current_wave) {
                    let open = progress
                        .waves
                        .get(&r.current_wave)
                        .map_or(0, |c| c.pending + c.running);
                    return Err(Error::Conflict(format!(
                        "cannot promote rollout {id}: its current wave still has {open} task(s) open"
                    )));
                }
                diesel::update(rollouts::table.find(id))
                    .set((
                        rollouts::current_wave.eq(r.current_wave + 1),
                        rollouts::wave_done_at.eq(None::<NaiveDateTime>),
                        rollouts::updated_at.eq(now),
                    ))
                    .execute(conn)?;
            }
        }
        let after = find_row(conn, id)?;
        audit::record(
            conn,
            actor,
            Change {
                action: &format!("rollout.{}", what.name()),
                resource_type: "rollout",
                resource_id: Some(id),
                tenant_id: None,
                before: Some(
                    serde_json::json!({ "state": before, "current_wave": r.current_wave }),
                ),
                after: Some(
                    serde_json::json!({ "state": after.state, "current_wave": after.current_wave }),
                ),
            },
        )?;
        super::advance(conn, id)
    })?;
    get(db, id)
}

pub(crate) fn set_state(
    conn: &mut ControlConnection,
    id: &str,
    state: RolloutState,
    reason: Option<&str>,
    now: NaiveDateTime,
) -> Result<()> {
    diesel::update(rollouts::table.find(id))
        .set((
            rollouts::state.eq(state.as_str()),
            rollouts::halt_reason.eq(reason),
            rollouts::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}
