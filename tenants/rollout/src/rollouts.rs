//! Rollouts: a target schema for a selection of tenants, expanded into one
//! task per tenant, in waves, with a retry and failure policy. This module
//! creates, reads and controls them; workers execute the tasks (`tasks.rs`).

use std::collections::HashMap;

use chrono::{NaiveDateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;

use tenantplane_migrations::{runner, MigrationPlan, SchemaTarget};
use uuid::Uuid;

use crate::selection::{Candidate, Resolved, PAGE};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlBackend, ControlConnection, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::{rollouts, tasks, tenants};

pub use tenantplane_api_types::rollouts::{
    Backoff, FailureBudget, PlannedTask, Rollout, RolloutPlan, RolloutRequest, Selector,
    TaskCounts, TaskPage, TaskView, Wave, WaveSpec,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = rollouts)]
pub struct RolloutRow {
    pub id: String,
    pub target: String,
    pub target_version: Option<String>,
    pub selector: String,
    pub waves: String,
    pub state: String,
    pub current_wave: i32,
    pub wave_count: i32,
    pub concurrency: i32,
    pub per_server_concurrency: i32,
    pub max_attempts: i32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub timeout_s: i32,
    pub max_failed: Option<i32>,
    pub max_failed_percent: Option<i32>,
    pub failures_forgiven: i32,
    pub verify: bool,
    pub priority: i32,
    pub total: i32,
    pub halt_reason: Option<String>,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = tasks, treat_none_as_null = true)]
struct NewTask {
    rollout_id: String,
    tenant_id: String,
    server_id: String,
    wave: i32,
    priority: i32,
    state: String,
    from_version: Option<String>,
    to_version: Option<String>,
    reached_version: Option<String>,
    max_attempts: i32,
    next_attempt_at: NaiveDateTime,
    finished_at: Option<NaiveDateTime>,
}

/// What `create` did.
pub enum Created {
    Rollout(Box<Rollout>),
    Plan(RolloutPlan),
}

struct Settings {
    target: SchemaTarget,
    concurrency: i32,
    per_server: i32,
    max_attempts: i32,
    backoff: Backoff,
    timeout_s: i32,
    budget: FailureBudget,
    verify: bool,
    priority: i32,
    waves: Vec<WaveSpec>,
}

impl Settings {
    /// A tenant already at the target is skipped, unless the rollout verifies.
    fn skips(&self, c: &Candidate) -> bool {
        !self.verify && c.schema_version.as_deref() == self.target.version()
    }
}

fn validate(req: &RolloutRequest) -> Result<Settings> {
    let target: SchemaTarget = req
        .target
        .parse()
        .map_err(|e: tenantplane_migrations::TargetError| Error::invalid(e.to_string()))?;
    if target == SchemaTarget::None {
        return Err(Error::invalid(
            "target 'none' would drop every table; roll back to phase:0 at most",
        ));
    }
    let s = &req.selector;
    let empty = s.all != Some(true)
        && s.tenants.is_none()
        && s.plans.is_none()
        && s.labels.is_none()
        && s.servers.is_none();
    if empty {
        return Err(Error::invalid(
            "the selector selects nothing: use {\"all\":true} or tenants, plans, labels, servers",
        ));
    }
    if s.all == Some(false) {
        return Err(Error::invalid("selector.all must be true when given"));
    }
    for (what, list) in [
        ("tenants", &s.tenants),
        ("plans", &s.plans),
        ("servers", &s.servers),
    ] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::invalid(format!("selector.{what} is empty")));
        }
    }
    if let Some(labels) = &s.labels {
        if labels.is_empty() {
            return Err(Error::invalid("selector.labels is empty"));
        }
        tenantplane_control_db::validate::labels(labels)?;
    }
    let range = |name: &str, v: Option<u32>, default: u32, max: u32| -> Result<i32> {
        let v = v.unwrap_or(default);
        if v == 0 || v > max {
            return Err(Error::invalid(format!(
                "{name} must be 1 to {max}, not {v}"
            )));
        }
        Ok(v as i32)
    };
    let concurrency = range("concurrency", req.concurrency, 8, 1024)?;
    let per_server = range(
        "per_server_concurrency",
        req.per_server_concurrency,
        concurrency as u32,
        1024,
    )?;
    let max_attempts = range("max_attempts", req.max_attempts, 5, 100)?;
    let timeout_s = range("timeout_s", req.timeout_s, 300, 86_400)?;
    let backoff = req.backoff.clone().unwrap_or(Backoff {
        base_ms: 500,
        max_ms: 30_000,
    });
    if backoff.base_ms == 0 || backoff.max_ms < backoff.base_ms || backoff.max_ms > 3_600_000 {
        return Err(Error::invalid(
            "backoff needs 0 < base_ms <= max_ms <= 3600000",
        ));
    }
    let budget = req.failure_budget.clone().unwrap_or(FailureBudget {
        max_failed: None,
        max_failed_percent: Some(10),
    });
    if budget.max_failed_percent.is_some_and(|p| p > 100) {
        return Err(Error::invalid(
            "failure_budget.max_failed_percent must be 0 to 100",
        ));
    }
    let waves = req.waves.clone().unwrap_or_default();
    for (i, w) in waves.iter().enumerate() {
        match (w.count, w.percent) {
            (Some(c), None) if c > 0 => {}
            (None, Some(p)) if p > 0.0 && p <= 100.0 => {}
            _ => {
                return Err(Error::invalid(format!(
                    "wave {i}: give either count > 0 or percent in (0, 100]"
                )))
            }
        }
    }
    let priority = req.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(Error::invalid("priority must be -1000 to 1000"));
    }
    Ok(Settings {
        target,
        concurrency,
        per_server,
        max_attempts,
        backoff,
        timeout_s,
        budget,
        verify: req.verify.unwrap_or(false),
        priority,
        waves,
    })
}

fn wave_sizes(specs: &[WaveSpec], total: usize) -> Vec<Wave> {
    let mut waves = Vec::new();
    let mut left = total;
    for (i, spec) in specs.iter().enumerate() {
        if left == 0 {
            break;
        }
        let want = match (spec.count, spec.percent) {
            (Some(c), _) => c as usize,
            (_, Some(p)) => ((total as f64 * p / 100.0).ceil() as usize).max(1),
            _ => 0,
        };
        let size = want.min(left);
        left -= size;
        waves.push(Wave {
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| format!("wave-{}", i + 1)),
            size: size as i64,
        });
    }
    if left > 0 || waves.is_empty() {
        waves.push(Wave {
            name: "rest".to_string(),
            size: left as i64,
        });
    }
    waves
}

/// The catalogue versions up to `version`, as a schema at that version has them.
fn applied_at(version: Option<&str>) -> Vec<String> {
    let Some(v) = version else { return Vec::new() };
    tenantplane_migrations::catalogue::versions()
        .iter()
        .take_while(|m| m.version.as_str() <= v)
        .map(|m| m.version.clone())
        .collect()
}

/// Creates a rollout (or, with `dry_run`, only plans it). Tasks are written
/// a page at a time in wave order (claims follow insert order), so memory
/// does not grow with the fleet beyond a 32-byte key per tenant.
pub fn create(db: &ControlDb, actor: &Actor, req: RolloutRequest) -> Result<Created> {
    let settings = validate(&req)?;
    let target_version = settings.target.version().map(str::to_string);
    let id = Uuid::new_v4().to_string();
    let mut conn = db.conn()?;
    if req.dry_run == Some(true) {
        return plan(&mut conn, &req.selector, &settings, &id).map(Created::Plan);
    }
    let now = Utc::now().naive_utc();
    let total = write_tx(&mut conn, None, |conn| {
        let selected = Selected::read(conn, &req.selector, &settings, &id)?;
        let waves = &selected.waves;
        let row = RolloutRow {
            id: id.clone(),
            target: settings.target.to_string(),
            target_version: target_version.clone(),
            selector: serde_json::to_string(&req.selector).unwrap_or_default(),
            waves: serde_json::to_string(&waves).unwrap_or_default(),
            state: "running".to_string(),
            current_wave: 0,
            wave_count: waves.len() as i32,
            concurrency: settings.concurrency,
            per_server_concurrency: settings.per_server,
            max_attempts: settings.max_attempts,
            backoff_base_ms: settings.backoff.base_ms as i64,
            backoff_max_ms: settings.backoff.max_ms as i64,
            timeout_s: settings.timeout_s,
            max_failed: settings.budget.max_failed.map(|v| v as i32),
            max_failed_percent: settings.budget.max_failed_percent.map(|v| v as i32),
            failures_forgiven: 0,
            verify: settings.verify,
            priority: settings.priority,
            total: selected.order.len() as i32,
            halt_reason: None,
            created_by: actor.id.clone(),
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        diesel::insert_into(rollouts::table)
            .values(&row)
            .execute(conn)?;
        // Tenants deleted since `order` read them drop out of their wave.
        let mut sizes = vec![0i64; waves.len()];
        selected.for_each_page(conn, |conn, page| {
            let rows: Vec<NewTask> = page
                .into_iter()
                .map(|(wave, c)| {
                    sizes[wave as usize] += 1;
                    let skipped = settings.skips(&c);
                    NewTask {
                        rollout_id: id.clone(),
                        tenant_id: c.id,
                        server_id: c.server_id,
                        wave,
                        priority: settings.priority,
                        state: if skipped { "skipped" } else { "pending" }.to_string(),
                        reached_version: if skipped {
                            c.schema_version.clone()
                        } else {
                            None
                        },
                        from_version: c.schema_version,
                        to_version: target_version.clone(),
                        max_attempts: settings.max_attempts,
                        next_attempt_at: now,
                        finished_at: skipped.then_some(now),
                    }
                })
                .collect();
            // Multi-row inserts: the MultiConnection has none, the backends do.
            let insert = diesel::insert_into(tasks::table).values(&rows);
            match conn {
                ControlConnection::Sqlite(c) => insert.execute(c)?,
                ControlConnection::Postgres(c) => insert.execute(c)?,
            };
            Ok(())
        })?;
        let total: i64 = sizes.iter().sum();
        if total == 0 {
            return Err(Error::invalid("the selector matches no tenant"));
        }
        if total != selected.order.len() as i64 {
            let waves: Vec<Wave> = waves
                .iter()
                .zip(&sizes)
                .map(|(w, size)| Wave {
                    name: w.name.clone(),
                    size: *size,
                })
                .collect();
            diesel::update(rollouts::table.find(&id))
                .set((
                    rollouts::total.eq(total as i32),
                    rollouts::waves.eq(serde_json::to_string(&waves).unwrap_or_default()),
                ))
                .execute(conn)?;
        }
        let after = serde_json::json!({
            "target": row.target, "target_version": row.target_version,
            "selector": req.selector, "total": total,
        });
        audit::record(
            conn,
            actor,
            Change {
                action: "rollout.create",
                resource_type: "rollout",
                resource_id: Some(&id),
                tenant_id: None,
                before: None,
                after: Some(after),
            },
        )?;
        // Finishes at once when every task was skipped; opens the waves made
        // only of skipped tenants.
        crate::tasks::advance(conn, &id)?;
        Ok(total)
    })?;
    tracing::info!(rollout_id = %id, target = %settings.target, tenants = total, "rollout created");
    Ok(Created::Rollout(Box::new(get(db, &id)?)))
}

/// The selected tenants in wave order, cut into waves.
struct Selected {
    selection: Resolved,
    order: Vec<Uuid>,
    waves: Vec<Wave>,
}

impl Selected {
    fn read(
        conn: &mut ControlConnection,
        selector: &Selector,
        settings: &Settings,
        rollout_id: &str,
    ) -> Result<Selected> {
        let selection = Resolved::new(conn, selector)?;
        let order = selection.order(conn, rollout_id)?;
        if order.is_empty() {
            return Err(Error::invalid("the selector matches no tenant"));
        }
        let waves = wave_sizes(&settings.waves, order.len());
        Ok(Selected {
            selection,
            order,
            waves,
        })
    }

    /// Calls `f` with each page of tenants and their waves, in wave order.
    fn for_each_page(
        &self,
        conn: &mut ControlConnection,
        mut f: impl FnMut(&mut ControlConnection, Vec<(i32, Candidate)>) -> Result<()>,
    ) -> Result<()> {
        for (page_no, page) in self.order.chunks(PAGE).enumerate() {
            let rows = self
                .selection
                .rows(conn, page)?
                .into_iter()
                .map(|(i, c)| (self.wave_of(page_no * PAGE + i), c))
                .collect();
            f(conn, rows)?;
        }
        Ok(())
    }

    /// The wave of the tenant at a position of the wave order.
    fn wave_of(&self, position: usize) -> i32 {
        let mut end = 0usize;
        for (w, wave) in self.waves.iter().enumerate() {
            end += wave.size as usize;
            if position < end {
                return w as i32;
            }
        }
        self.waves.len().saturating_sub(1) as i32
    }
}

/// A dry run: what `create` would do, tenant by tenant, changing nothing.
fn plan(
    conn: &mut ControlConnection,
    selector: &Selector,
    settings: &Settings,
    rollout_id: &str,
) -> Result<RolloutPlan> {
    let target_version = settings.target.version().map(str::to_string);
    let selected = Selected::read(conn, selector, settings, rollout_id)?;
    let mut tasks = Vec::with_capacity(selected.order.len());
    selected.for_each_page(conn, |_, page| {
        for (wave, c) in page {
            let plan: MigrationPlan = runner::plan(
                &applied_at(c.schema_version.as_deref()),
                target_version.as_deref(),
            )
            .map_err(|e| Error::invalid(format!("tenant {}: {e}", c.slug)))?;
            let action = if settings.skips(&c) {
                "skip"
            } else if plan.steps.is_empty() {
                "verify"
            } else if plan.steps[0].direction == tenantplane_migrations::StepDirection::Down {
                "rollback"
            } else {
                "migrate"
            };
            tasks.push(PlannedTask {
                tenant_id: c.id,
                slug: c.slug,
                wave,
                from: c.schema_version,
                to: target_version.clone(),
                action,
                steps: plan.steps,
            });
        }
        Ok(())
    })?;
    tasks.sort_by(|a, b| (a.wave, &a.slug).cmp(&(b.wave, &b.slug)));
    let to_migrate = tasks.iter().filter(|t| t.action != "skip").count();
    Ok(RolloutPlan {
        dry_run: true,
        target: settings.target.to_string(),
        target_version,
        waves: selected.waves,
        total: tasks.len(),
        to_migrate,
        tasks,
    })
}

pub fn counts(conn: &mut ControlConnection, rollout_id: &str) -> Result<TaskCounts> {
    let rows: Vec<(String, i64)> = tasks::table
        .filter(tasks::rollout_id.eq(rollout_id))
        .group_by(tasks::state)
        .select((tasks::state, count_star()))
        .load(conn)?;
    let mut c = TaskCounts::default();
    for (state, n) in rows {
        match state.as_str() {
            "pending" => c.pending = n,
            "running" => c.running = n,
            "succeeded" => c.succeeded = n,
            "failed" => c.failed = n,
            "skipped" => c.skipped = n,
            "cancelled" => c.cancelled = n,
            _ => {}
        }
    }
    Ok(c)
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
        if !ROLLOUT_STATES.contains(&s) {
            return Err(Error::invalid(format!(
                "invalid state {s:?}: one of {ROLLOUT_STATES:?}"
            )));
        }
        q = q.filter(rollouts::state.eq(s.to_string()));
    }
    let rows = q
        .order(rollouts::created_at.desc())
        .limit(limit)
        .load(&mut conn)?;
    rows.into_iter().map(|r| view(&mut conn, r)).collect()
}

pub const ROLLOUT_STATES: &[&str] = &[
    "running",
    "paused",
    "halted",
    "succeeded",
    "failed",
    "cancelled",
];
pub const TASK_STATES: &[&str] = &[
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
];

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
    }
}

/// A page of a rollout's tasks, by id.
pub fn tasks_page(
    db: &ControlDb,
    rollout_id: &str,
    state: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<TaskPage> {
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be 1 to 1000"));
    }
    let mut conn = db.conn()?;
    find_row(&mut conn, rollout_id)?;
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
        ))
        .into_boxed::<ControlBackend>();
    if let Some(s) = state {
        if !TASK_STATES.contains(&s) {
            return Err(Error::invalid(format!(
                "invalid state {s:?}: one of {TASK_STATES:?}"
            )));
        }
        q = q.filter(tasks::state.eq(s.to_string()));
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

/// Operator controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
    Retry,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
            Control::Retry => "retry",
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
                if r.state != "running" {
                    return refuse("");
                }
                set_state(conn, id, "paused", None, now)?;
            }
            Control::Resume => {
                if r.state != "paused" && r.state != "halted" {
                    return refuse("");
                }
                if r.state == "halted" {
                    // The operator accepted the failures so far: the budget
                    // counts from here.
                    let failed = counts(conn, id)?.failed as i32;
                    diesel::update(rollouts::table.find(id))
                        .set(rollouts::failures_forgiven.eq(failed))
                        .execute(conn)?;
                }
                set_state(conn, id, "running", None, now)?;
            }
            Control::Cancel => {
                if !matches!(r.state.as_str(), "running" | "paused" | "halted") {
                    return refuse("");
                }
                diesel::update(
                    tasks::table
                        .filter(tasks::rollout_id.eq(id))
                        .filter(tasks::state.eq("pending")),
                )
                .set((tasks::state.eq("cancelled"), tasks::finished_at.eq(now)))
                .execute(conn)?;
                set_state(conn, id, "cancelled", None, now)?;
                diesel::update(rollouts::table.find(id))
                    .set(rollouts::finished_at.eq(now))
                    .execute(conn)?;
            }
            Control::Retry => {
                if r.state == "cancelled" {
                    return refuse("");
                }
                let n = diesel::update(
                    tasks::table
                        .filter(tasks::rollout_id.eq(id))
                        .filter(tasks::state.eq("failed")),
                )
                .set((
                    tasks::state.eq("pending"),
                    tasks::attempts.eq(0),
                    tasks::next_attempt_at.eq(now),
                    tasks::finished_at.eq(None::<NaiveDateTime>),
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
                set_state(conn, id, "running", None, now)?;
            }
        }
        let after = find_row(conn, id)?.state;
        audit::record(
            conn,
            actor,
            Change {
                action: &format!("rollout.{}", what.name()),
                resource_type: "rollout",
                resource_id: Some(id),
                tenant_id: None,
                before: Some(serde_json::json!({ "state": before })),
                after: Some(serde_json::json!({ "state": after })),
            },
        )?;
        crate::tasks::advance(conn, id)
    })?;
    get(db, id)
}

pub(crate) fn set_state(
    conn: &mut ControlConnection,
    id: &str,
    state: &str,
    reason: Option<&str>,
    now: NaiveDateTime,
) -> Result<()> {
    diesel::update(rollouts::table.find(id))
        .set((
            rollouts::state.eq(state),
            rollouts::halt_reason.eq(reason),
            rollouts::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
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
