//! Reading rollouts and their tasks as the API shows them.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tenantplane_control_db::schema::{rollouts, task_attempts, tasks, tenants};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::ControlBackend;

use super::counters::Progress;
use super::{
    Backoff, FailureBudget, Rollout, RolloutRow, TaskAttempt, TaskCounts, TaskPage, TaskView, Wave,
    WaveHold,
};
use tenantplane_control_db::{ControlConnection, ControlDb, Error, Result};

/// The task counts of a rollout (from its counters, not a count of tasks).
pub fn counts(conn: &mut ControlConnection, rollout_id: &str) -> Result<TaskCounts> {
    Ok(Progress::read(conn, rollout_id)?.total())
}

/// The task counts of each wave of a rollout, by wave number (0-based);
/// waves without tasks are left out.
pub fn wave_counts(db: &ControlDb, rollout_id: &str) -> Result<Vec<(i32, TaskCounts)>> {
    let mut conn = db.conn()?;
    Ok(Progress::read(&mut conn, rollout_id)?
        .waves
        .into_iter()
        .collect())
}

fn view(conn: &mut ControlConnection, r: RolloutRow) -> Result<Rollout> {
    let progress = Progress::read(conn, &r.id)?;
    let counts = progress.total();
    let done = counts.succeeded + counts.failed;
    let rate = match (progress.first_started, progress.last_finished) {
        (Some(a), Some(b)) if done > 0 => {
            let secs = ((b - a).num_milliseconds() as f64 / 1000.0).max(0.001);
            Some(done as f64 / secs)
        }
        _ => None,
    };
    let open = (counts.pending + counts.running) as f64;
    let eta = rate.filter(|r| *r > 0.0 && open > 0.0).map(|r| open / r);
    let waves: Vec<Wave> = serde_json::from_str(&r.waves).unwrap_or_default();
    let hold = match (r.state == RolloutState::Running.as_str(), r.wave_done_at) {
        (true, Some(finished_at)) => waves.get(r.current_wave as usize).map(|w| WaveHold {
            wave: w.name.clone(),
            finished_at,
            opens_at: super::advance::opens_at(w, finished_at),
        }),
        _ => None,
    };
    Ok(Rollout {
        selector: serde_json::from_str(&r.selector).unwrap_or_default(),
        waves,
        hold,
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
        history: Vec::new(),
    }
}

/// Fills in each task's finished attempts (one query for the page).
fn with_history(conn: &mut ControlConnection, items: &mut [TaskView]) -> Result<()> {
    let ids: Vec<i64> = items.iter().map(|t| t.id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    type Row = (
        i64,
        i32,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        NaiveDateTime,
        i64,
    );
    let rows: Vec<Row> = task_attempts::table
        .filter(task_attempts::task_id.eq_any(&ids))
        .order(task_attempts::id.asc())
        .select((
            task_attempts::task_id,
            task_attempts::attempt,
            task_attempts::worker,
            task_attempts::outcome,
            task_attempts::error,
            task_attempts::error_version,
            task_attempts::reached_version,
            task_attempts::started_at,
            task_attempts::duration_ms,
        ))
        .load(conn)?;
    let mut by_task: std::collections::HashMap<i64, Vec<TaskAttempt>> = Default::default();
    for (
        task_id,
        attempt,
        worker,
        outcome,
        error,
        error_version,
        reached_version,
        started_at,
        duration_ms,
    ) in rows
    {
        by_task.entry(task_id).or_default().push(TaskAttempt {
            attempt,
            worker,
            outcome,
            error,
            error_version,
            reached_version,
            started_at,
            duration_ms,
        });
    }
    for t in items.iter_mut() {
        t.history = by_task.remove(&t.id).unwrap_or_default();
    }
    Ok(())
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
    with_history(&mut conn, &mut items)?;
    Ok(TaskPage { items, next_cursor })
}
