//! Moving a running rollout on after its tasks change: the failure budget,
//! the next wave, the end. Called in the transaction that changed a task
//! (completion, creation, operator controls) and periodically by workers.

use chrono::Utc;
use diesel::dsl::count_star;
use diesel::prelude::*;
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{rollouts as rollouts_t, tasks};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb, Result};

use super::waves::{budget_spent, Progress};
use super::{find_row, set_state, FailureBudget};

/// Moves a running rollout on: halts it when the failure budget is spent,
/// opens the next wave when the current one is done, finishes it when no task
/// is left. Call inside a write transaction. Runs after every completion, so
/// it uses only indexed probes (`tasks (rollout_id, state, wave)`), never a
/// scan of the whole rollout.
pub fn advance(conn: &mut ControlConnection, rollout_id: &str) -> Result<()> {
    let r = find_row(conn, rollout_id)?;
    if r.state != RolloutState::Running.as_str() {
        return Ok(());
    }
    let now = Utc::now().naive_utc();
    let in_state = |conn: &mut ControlConnection, state: TaskState| -> Result<i64> {
        Ok(tasks::table
            .filter(tasks::rollout_id.eq(rollout_id))
            .filter(tasks::state.eq(state.as_str()))
            .select(count_star())
            .first(conn)?)
    };
    // Is any task of waves up to `wave` still pending or running?
    let open_upto = |conn: &mut ControlConnection, wave: i32| -> Result<bool> {
        let first: Option<i64> = tasks::table
            .filter(tasks::rollout_id.eq(rollout_id))
            .filter(tasks::state.eq_any([TaskState::Pending.as_str(), TaskState::Running.as_str()]))
            .filter(tasks::wave.le(wave))
            .select(tasks::id)
            .first(conn)
            .optional()?;
        Ok(first.is_some())
    };
    let wave_done = !open_upto(conn, r.current_wave)?;

    let failed = in_state(conn, TaskState::Failed)? - i64::from(r.failures_forgiven);
    // Counting the others costs two more queries: only when a budget could
    // be spent.
    if failed > 0 && (r.max_failed.is_some() || r.max_failed_percent.is_some()) {
        let progress = Progress {
            failed,
            finished: failed + in_state(conn, TaskState::Succeeded)?,
            eligible: i64::from(r.total) - in_state(conn, TaskState::Skipped)?,
            wave_done,
        };
        let budget = FailureBudget {
            max_failed: r.max_failed.map(|v| v as u32),
            max_failed_percent: r.max_failed_percent.map(|v| v as u32),
        };
        if let Some(reason) = budget_spent(&budget, &progress) {
            set_state(conn, rollout_id, RolloutState::Halted, Some(&reason), now)?;
            finished_event(conn, rollout_id, RolloutState::Halted, Some(&reason))?;
            tracing::warn!(rollout_id, %reason, "rollout halted");
            return Ok(());
        }
    }
    if !wave_done {
        return Ok(());
    }
    let mut wave = r.current_wave;
    while wave + 1 < r.wave_count && !open_upto(conn, wave)? {
        wave += 1;
    }
    if wave != r.current_wave {
        diesel::update(rollouts_t::table.find(rollout_id))
            .set((
                rollouts_t::current_wave.eq(wave),
                rollouts_t::updated_at.eq(now),
            ))
            .execute(conn)?;
        tracing::info!(rollout_id, wave, "next wave");
    }
    if !open_upto(conn, i32::MAX)? {
        let state = if in_state(conn, TaskState::Failed)? > 0 {
            RolloutState::Failed
        } else {
            RolloutState::Succeeded
        };
        set_state(conn, rollout_id, state, None, now)?;
        diesel::update(rollouts_t::table.find(rollout_id))
            .set(rollouts_t::finished_at.eq(Some(now)))
            .execute(conn)?;
        finished_event(conn, rollout_id, state, None)?;
        tracing::info!(rollout_id, state = state.as_str(), "rollout finished");
    }
    Ok(())
}

/// Records `rollout.succeeded`, `rollout.failed` or `rollout.halted` in the
/// outbox, in the transaction that moved the rollout there.
fn finished_event(
    conn: &mut ControlConnection,
    rollout_id: &str,
    state: RolloutState,
    reason: Option<&str>,
) -> Result<()> {
    let kind = match state {
        RolloutState::Succeeded => EventKind::RolloutSucceeded,
        RolloutState::Failed => EventKind::RolloutFailed,
        RolloutState::Halted => EventKind::RolloutHalted,
        _ => return Ok(()),
    };
    let (target, total): (String, i32) = rollouts_t::table
        .find(rollout_id)
        .select((rollouts_t::target, rollouts_t::total))
        .first(conn)?;
    let count = |conn: &mut ControlConnection, state: TaskState| -> Result<i64> {
        Ok(tasks::table
            .filter(tasks::rollout_id.eq(rollout_id))
            .filter(tasks::state.eq(state.as_str()))
            .select(count_star())
            .first(conn)?)
    };
    let body = tenantplane_api_types::notify::RolloutEvent {
        rollout_id: rollout_id.to_string(),
        state: state.as_str().to_string(),
        target,
        total: i64::from(total),
        succeeded: count(conn, TaskState::Succeeded)?,
        failed: count(conn, TaskState::Failed)?,
        halt_reason: reason.map(str::to_string),
    };
    outbox::record(conn, kind, None, &body)?;
    Ok(())
}

/// `advance` for every running rollout (a periodic safety net for rollouts
/// whose last completion raced a crash).
pub fn advance_all(db: &ControlDb) -> Result<()> {
    let mut conn = db.conn()?;
    let running: Vec<String> = rollouts_t::table
        .filter(rollouts_t::state.eq(RolloutState::Running.as_str()))
        .select(rollouts_t::id)
        .load(&mut conn)?;
    for id in running {
        write_tx(&mut conn, None, |conn| advance(conn, &id))?;
    }
    Ok(())
}
