//! Creating a rollout: select the tenants, cut them into waves, write the
//! rollout and one task per tenant a page at a time; or, with `dry_run`,
//! only plan it.

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_control_db::audit::{self, Change};
use tenantplane_control_db::schema::{rollouts, tasks};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::write_tx;
use tenantplane_migrations::{runner, MigrationPlan};
use uuid::Uuid;

use super::request::{validate, Settings};
use super::{
    counters, get, waves, PlannedTask, Rollout, RolloutPlan, RolloutRequest, RolloutRow, Selector,
    Wave,
};
use crate::selection::{Candidate, Resolved, PAGE};
use tenantplane_control_db::{Actor, ControlConnection, ControlDb, Error, Result};

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
            state: RolloutState::Running.as_str().to_string(),
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
            backup: settings.backup,
            restore_on_failure: settings.restore_on_failure,
            allow_drift: settings.allow_drift,
            wave_done_at: None,
        };
        diesel::insert_into(rollouts::table)
            .values(&row)
            .execute(conn)?;
        // Tenants deleted since `order` read them drop out of their wave.
        let mut sizes = vec![0i64; waves.len()];
        let mut skipped_in = vec![0i64; waves.len().max(1)];
        let mut total = 0i64;
        selected.for_each_page(conn, |conn, page| {
            let rows: Vec<NewTask> = page
                .into_iter()
                .map(|(wave, c)| {
                    total += 1;
                    let skipped = settings.skips(&c);
                    if skipped {
                        skipped_in[wave as usize] += 1;
                    } else {
                        sizes[wave as usize] += 1;
                    }
                    NewTask {
                        rollout_id: id.clone(),
                        tenant_id: c.id,
                        server_id: c.server_id,
                        wave,
                        priority: settings.priority,
                        state: if skipped {
                            TaskState::Skipped
                        } else {
                            TaskState::Pending
                        }
                        .to_string(),
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
        if total == 0 {
            return Err(Error::invalid("the selector matches no tenant"));
        }
        counters::insert_created(conn, &id, &sizes, &skipped_in)?;
        let planned: Vec<i64> = waves.iter().map(|w| w.size).collect();
        if total != selected.order.len() as i64 || sizes != planned {
            let waves: Vec<Wave> = waves
                .iter()
                .zip(&sizes)
                .map(|(w, size)| Wave {
                    size: *size,
                    ..w.clone()
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
            "backup": row.backup, "restore_on_failure": row.restore_on_failure,
            "allow_drift": row.allow_drift,
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
        super::advance(conn, &id)?;
        Ok(total)
    })?;
    tracing::info!(rollout_id = %id, target = %settings.target, tenants = total, "rollout created");
    refresh_statistics(&mut conn, total);
    Ok(Created::Rollout(Box::new(get(db, &id)?)))
}

/// After a large rollout is created, PostgreSQL's statistics of `tasks` are
/// stale until autovacuum analyzes it (up to a minute later), and the
/// claim's plan is made from them. Analyzing right away costs ~0.1 s (a
/// sample). (The slow claims the fleet bench found at 100,000 tasks were the
/// claim query's shape, fixed in `tasks::claim_next`, not the statistics:
/// this alone did not cure them.) SQLite plans from the indexes alone.
fn refresh_statistics(conn: &mut ControlConnection, created: i64) {
    const LARGE: i64 = 5_000;
    if created < LARGE {
        return;
    }
    if let ControlConnection::Postgres(pg) = conn {
        use diesel::connection::SimpleConnection;
        if let Err(e) = pg.batch_execute("ANALYZE tasks, rollout_counters") {
            tracing::warn!(error = %e, "analyzing tasks after a large rollout failed");
        }
    }
}

/// The selected tenants in wave order; the waves are cut among those that
/// will migrate (or roll back), so a canary of 5 is 5 tenants that change.
/// Skipped tenants (already at the target) are in no wave's size; their
/// tasks are written finished, in wave 0.
struct Selected {
    selection: Resolved,
    order: Vec<Uuid>,
    /// Parallel to `order`: the tenant is skipped (or vanished meanwhile).
    skip: Vec<bool>,
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
        // A first pass over the tenants tells the work from the skips; the
        // writing pass reads the pages again rather than keeping every
        // tenant's row in memory.
        let mut skip = vec![true; order.len()];
        for (page_no, page) in order.chunks(PAGE).enumerate() {
            for (i, c) in selection.rows(conn, page)? {
                skip[page_no * PAGE + i] = settings.skips(&c);
            }
        }
        let work = skip.iter().filter(|s| !**s).count();
        if work == 0 && !settings.waves.is_empty() {
            let name = settings.waves[0]
                .name
                .clone()
                .unwrap_or_else(|| "wave-1".to_string());
            return Err(Error::invalid(format!(
                "wave '{name}' would be empty: none of the {} selected tenants needs migrating to the target",
                order.len()
            )));
        }
        let waves = waves::wave_sizes(&settings.waves, work);
        Ok(Selected {
            selection,
            order,
            skip,
            waves,
        })
    }

    /// Calls `f` with each page of tenants and their waves, in wave order.
    fn for_each_page(
        &self,
        conn: &mut ControlConnection,
        mut f: impl FnMut(&mut ControlConnection, Vec<(i32, Candidate)>) -> Result<()>,
    ) -> Result<()> {
        // The rank of each tenant among those that will migrate.
        let mut rank = Vec::with_capacity(self.order.len());
        let mut n = 0usize;
        for s in &self.skip {
            rank.push(n);
            if !s {
                n += 1;
            }
        }
        for (page_no, page) in self.order.chunks(PAGE).enumerate() {
            let rows = self
                .selection
                .rows(conn, page)?
                .into_iter()
                .map(|(i, c)| {
                    let at = page_no * PAGE + i;
                    let wave = if self.skip[at] {
                        0
                    } else {
                        waves::wave_of(&self.waves, rank[at])
                    };
                    (wave, c)
                })
                .collect();
            f(conn, rows)?;
        }
        Ok(())
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
