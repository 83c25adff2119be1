//! Reading rollouts and their tasks as the API shows them.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;
use tenantplane_control_db::schema::{rollouts, tasks, tenants};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::ControlBackend;

use super::{Backoff, FailureBudget, Rollout, RolloutRow, TaskCounts, TaskPage, TaskView};
use tenantplane_control_db::{ControlConnection, ControlDb, Error, Result};

pub fn counts(conn: &mut ControlConnection, rollout_id: &str) -> Result<TaskCounts> {
    let rows: Vec<(String, i64)> = tasks::table
        .filter(tasks::rollout_id.eq(rollout_id))
        .group_by(tasks::state)
        .select((tasks::state, count_star()))
        .load(conn)?;
    let mut c = TaskCounts::default();
    for (state, n) in rows {
        add(&mut c, &state, n);
    }
    Ok(c)
}

fn add(c: &mut TaskCounts, state: &str, n: i64) {
    match state.parse::<TaskState>() {
        Ok(TaskState::Pending) => c.pending += n,
        Ok(TaskState::Running) => c.running += n,
        Ok(TaskState::Succeeded) => c.succeeded += n,
        Ok(TaskState::Failed) => c.failed += n,
        Ok(TaskState::Skipped) => c.skipped += n,
        Ok(TaskState::Cancelled) => c.cancelled += n,
        // The CHECK constraint allows no other word.
        Err(_) => {}
    }
}

/// The task counts of each wave of a rollout, by wave number (0-based);
/// waves without tasks are left out.
pub fn wave_counts(db: &ControlDb, rollout_id: &str) -> Result<Vec<(i32, TaskCounts)>> {
    let mut conn = db.conn()?;
    let rows: Vec<(i32, String, i64)> = tasks::table
        .filter(tasks::rollout_id.eq(rollout_id))
        .group_by((tasks::wave, tasks::state))
        .select((tasks::wave, tasks::state, count_star()))
        .load(&mut conn)?;
    let mut waves: std::collections::BTreeMap<i32, TaskCounts> = Default::default();
    for (wave, state, n) in rows {
        add(waves.entry(wave).or_default(), &state, n);
    }
    Ok(waves.into_iter().collect())
}

fn view(conn: &mut ControlConnection, r: RolloutRow) -> Result<Rollout> {
    let counts = counts(conn, &r.id)?;
    let (first, last, done): (Option<NaiveDateTime>, Option<NaiveDateTime>, i64) = tasks::table
        .filter(tasks::rollout_id.eq(&r.id))
        .filter(tasks::started_at.is_not_null())
        .filter(tasks::finished_at.is_not_null())
        .select((
            diesel::dsl::min(tasks::started_at),
            diesel::dsl::max(tasks::finished_at),
            count_star(),
        ))
        .first(conn)?;
    let rate = match (first, last) {
        (Some(a), Some(b)) if done > 0 => {
            let secs = ((b - a).num_milliseconds() as f64 / 1000.0).max(0.001);
            Some(done as f64 / secs)
        }
        _ => None,
    };
    let open = (counts.pending + counts.running) as f64;
    let eta = rate.filter(|r| *r > 0.0 && open > 0.0).map(|r| open / r);
    Ok(Rollout {
        selector: serde_json::from_str(&r.selector).unwrap_or_default(),
        waves: serde_json::from_str(&r.waves).unwrap_or_default(),
        backoff: Backoff {
            base_ms: r.backoff_base_ms as u64,
            max_ms: r.backoff_max_ms as u64,
        },
        failure_budget: FailureBudget {
            max_failed: r.max_failed.map(|v| v as u32),
            max_failed_percent: r.max_failed_percent.map(|v| v as u32),
        },
        id: r.id,
        target: r.target,
        target_version: r.target_version,
        state: r.state,
        current_wave: r.current_wave,
        concurrency: r.concurrency,
        per_server_concurrency: r.per_server_concurrency,
        max_attempts: r.max_attempts,
        timeout_s: r.timeout_s,
        verify: r.verify,
        priority: r.priority,
        backup: r.backup,
        restore_on_failure: r.restore_on_failure,
        allow_drift: r.allow_drift,
        total: r.total,
        counts,
        tenants_per_second: rate,
        eta_seconds: eta,
        halt_reason: r.halt_reason,
        created_by: r.created_by,
        created_at: r.created_at,
        updated_at: r.updated_at,
        finished_at: r.finished_at,
    })
}

pub fn find_row(conn: &mut ControlConnection, id: &str) -> Result<RolloutRow> {
    rollouts::table
        .find(id)
        .select(RolloutRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("rollout", id))
}

pub fn get(db: &ControlDb, id: &str) -> Result<Rollout> {
    let mut conn = db.conn()?;
    let row = find_row(&mut conn, id)?;
    view(&mut conn, row)
}

/// Newest first.
pub fn list(db: &ControlDb, state: Option<&str>, limit: i64) -> Result<Vec<Rollout>> {
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit must be 1 to 500"));
    }
    let mut conn = db.conn()?;
    let mut q = rollouts::table
        .select(RolloutRow::as_select())
        .into_boxed::<ControlBackend>();
    if let Some(s) = state {
        let s: RolloutState = s.parse()?;
        q = q.filter(rollouts::state.eq(s.as_str()));
    }
    let rows = q
        .order(rollouts::created_at.desc())
        .limit(limit)
        .load(&mut conn)?;
    rows.into_iter().map(|r| view(&mut conn, r)).collect()
}

/// The columns of a task as `tasks_page` reads them, in `TaskView`'s order.
type TaskRow = (
    i64,
    String,
    String,
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    i32,
    NaiveDateTime,
    Option<String>,
    Option<String>,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    Option<i64>,
    Option<String>,
    bool,
);

fn task_view(r: TaskRow) -> TaskView {
    let (
        id,
        tenant_id,
        slug,
        wave,
        state,
        from_version,
        to_version,
        reached_version,
        attempts,
        max_attempts,
        next_attempt_at,
        last_error,
        error_version,
        started_at,
        finished_at,
        duration_ms,
        backup_id,
        restored,
    ) = r;
    TaskView {
        id,
        tenant_id,
        slug,
        wave,
        state,
        from_version,
        to_version,
        reached_version,
        attempts,
        max_attempts,
        next_attempt_at,
        last_error,
        error_version,
        started_at,
        finished_at,
        duration_ms,
        backup_id,
        restored,
    }
}

/// Which tasks a page shows.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub state: Option<String>,
    /// 0-based wave number.
    pub wave: Option<i32>,
    /// A piece of the last error's text (matched literally).
    pub error: Option<String>,
}

/// A page of a rollout's tasks, by id.
pub fn tasks_page(
    db: &ControlDb,
    rollout_id: &str,
    state: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<TaskPage> {
    let filter = TaskFilter {
        state: state.map(str::to_string),
        ..TaskFilter::default()
    };
    tasks_page_where(db, rollout_id, &filter, limit, cursor)
}

/// A page of a rollout's tasks matching `filter`, by id.
pub fn tasks_page_where(
    db: &ControlDb,
    rollout_id: &str,
    filter: &TaskFilter,
    limit: i64,
    cursor: Option<&str>,
) -> Result<TaskPage> {
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be 1 to 1000"));
    }
    let mut conn = db.conn()?;
    find_row(&mut conn, rollout_id)?;
    let state = filter.state.as_deref();
    let mut q = tasks::table
        .inner_join(tenants::table)
        .filter(tasks::rollout_id.eq(rollout_id.to_string()))
        .select((
            tasks::id,
            tasks::tenant_id,
            tenants::slug,
            tasks::wave,
            tasks::state,
            tasks::from_version,
            tasks::to_version,
            tasks::reached_version,
            tasks::attempts,
            tasks::max_attempts,
            tasks::next_attempt_at,
            tasks::last_error,
            tasks::error_version,
            tasks::started_at,
            tasks::finished_at,
            tasks::duration_ms,
            tasks::backup_id,
            tasks::restored,
        ))
        .into_boxed::<ControlBackend>();
    if let Some(s) = state {
        let s: TaskState = s.parse()?;
        q = q.filter(tasks::state.eq(s.as_str()));
    }
    if let Some(w) = filter.wave {
        q = q.filter(tasks::wave.eq(w));
    }
    if let Some(e) = filter.error.as_deref().filter(|e| !e.is_empty()) {
        let pattern = format!(
            "%{}%",
            e.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        q = q.filter(tasks::last_error.like(pattern).escape('\\'));
    }
    if let Some(c) = cursor {
        let after: i64 = c
            .parse()
            .map_err(|_| Error::invalid(format!("invalid cursor {c:?}")))?;
        q = q.filter(tasks::id.gt(after));
    }
    let rows: Vec<TaskRow> = q.order(tasks::id.asc()).limit(limit + 1).load(&mut conn)?;
    let mut items: Vec<TaskView> = rows.into_iter().map(task_view).collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(TaskPage { items, next_cursor })
}

/// Counts by rollout for many rollouts at once (for metrics).
pub fn state_totals(db: &ControlDb) -> Result<HashMap<String, i64>> {
    let mut conn = db.conn()?;
    let rows: Vec<(String, i64)> = tasks::table
        .group_by(tasks::state)
        .select((tasks::state, count_star()))
        .load(&mut conn)?;
    Ok(rows.into_iter().collect())
}
