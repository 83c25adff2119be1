//! Moving a running rollout on after its tasks change: the failure budget,
//! the next wave, the end. Called in the transaction that changed a task
//! (completion, creation, operator controls) and periodically by workers.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::rollouts as rollouts_t;
use tenantplane_control_db::states::RolloutState;
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb, Result};

use super::counters::Progress;
use super::waves::{budget_spent, Progress as BudgetProgress};
use super::{find_row, set_state, FailureBudget, Wave};

/// Whether the next wave waits after `wave` finished.
pub(crate) fn holds(wave: &Wave) -> bool {
    wave.manual || wave.hold_s.is_some()
}

/// When the wave after a held one opens by itself (`None`: manual).
pub(crate) fn opens_at(wave: &Wave, finished: NaiveDateTime) -> Option<NaiveDateTime> {
    if wave.manual {
        return None;
    }
    wave.hold_s
        .map(|s| finished + chrono::Duration::seconds(i64::from(s)))
}

/// Moves a running rollout on: halts it when the failure budget is spent,
/// opens the next wave when the current one is done, finishes it when no task
/// is left. Call inside a write transaction. Runs after every completion, so
/// it reads the rollout's counters (a few rows per wave), never the tasks.
pub fn advance(conn: &mut ControlConnection, rollout_id: &str) -> Result<()> {
    let r = find_row(conn, rollout_id)?;
    if r.state != RolloutState::Running.as_str() {
        return Ok(());
    }
    let now = Utc::now().naive_utc();
    // The counters, read once: a few rows per wave, however big the rollout.
    let progress = Progress::read(conn, rollout_id)?;
    let counts = progress.total();
    let wave_done = !progress.open_upto(r.current_wave);

    let failed = counts.failed - i64::from(r.failures_forgiven);
    if failed > 0 && (r.max_failed.is_some() || r.max_failed_percent.is_some()) {
        let budget_progress = BudgetProgress {
            failed,
            finished: failed + counts.succeeded,
            eligible: i64::from(r.total) - counts.skipped,
            wave_done,
        };
        let budget = FailureBudget {
            max_failed: r.max_failed.map(|v| v as u32),
            max_failed_percent: r.max_failed_percent.map(|v| v as u32),
        };
        if let Some(reason) = budget_spent(&budget, &budget_progress) {
            set_state(conn, rollout_id, RolloutState::Halted, Some(&reason), now)?;
            finished_event(conn, rollout_id, RolloutState::Halted, Some(&reason))?;
            tracing::warn!(rollout_id, %reason, "rollout halted");
            return Ok(());
        }
    }
    if !wave_done {
        return Ok(());
    }
    // Open the next wave, and the ones after it that have nothing left to
    // do, unless a finished wave holds (canary time or a manual promote).
    let waves: Vec<Wave> = serde_json::from_str(&r.waves).unwrap_or_default();
    let mut wave = r.current_wave;
    let mut done_at = r.wave_done_at;
    while wave + 1 < r.wave_count && !progress.open_upto(wave) {
        if let Some(held) = waves.get(wave as usize).filter(|w| holds(w)) {
            let since = *done_at.get_or_insert(now);
            if opens_at(held, since).is_none_or(|t| now < t) {
                break;
            }
        }
        wave += 1;
        done_at = None;
    }
    if wave != r.current_wave || done_at != r.wave_done_at {
        diesel::update(rollouts_t::table.find(rollout_id))
            .set((
                rollouts_t::current_wave.eq(wave),
                rollouts_t::wave_done_at.eq(done_at),
                rollouts_t::updated_at.eq(now),
            ))
            .execute(conn)?;
        if wave != r.current_wave {
            tracing::info!(rollout_id, wave, "next wave");
        } else {
            tracing::info!(rollout_id, wave, "wave finished; the next one holds");
        }
    }
    if !progress.open_upto(i32::MAX) {
        let state = if counts.failed > 0 {
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
    let counts = Progress::read(conn, rollout_id)?.total();
    let body = tenantplane_api_types::notify::RolloutEvent {
        rollout_id: rollout_id.to_string(),
        state: state.as_str().to_string(),
        target,
        total: i64::from(total),
        succeeded: counts.succeeded,
        failed: counts.failed,
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
