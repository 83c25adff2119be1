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
use crate::selection::{Order, Picked, Resolved, PAGE};
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
    bulk_cache(&mut conn, true);
    let created = write_tx(&mut conn, None, |conn| {
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
            total: selected.order.tenants.len() as i32,
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
        // Written a page at a time from the order in memory: no second read
        // of the tenants.
        let mut sizes = vec![0i64; waves.len()];
        let mut skipped_in = vec![0i64; waves.len().max(1)];
        let task = |picked: &Picked, wave: i32, skipped: bool| {
            let from = selected.order.schema_version(picked).map(str::to_string);
            NewTask {
                rollout_id: id.clone(),
                tenant_id: picked.id.to_string(),
                server_id: selected.order.server_id(picked).to_string(),
                wave,
                priority: settings.priority,
                state: if skipped {
                    TaskState::Skipped
                } else {
                    TaskState::Pending
                }
                .to_string(),
                reached_version: if skipped { from.clone() } else { None },
                from_version: from,
                to_version: target_version.clone(),
                max_attempts: settings.max_attempts,
                next_attempt_at: now,
                finished_at: skipped.then_some(now),
            }
        };
        let mut rows: Vec<NewTask> = Vec::with_capacity(PAGE);
        let mut write = |conn: &mut ControlConnection, task: NewTask| {
            rows.push(task);
            if rows.len() == PAGE {
                insert_tasks(conn, &rows)?;
                rows.clear();
            }
            Ok::<_, Error>(())
        };
        // Pending tasks in wave order: claims follow insert order.
        let mut skipped: Vec<&Picked> = Vec::new();
        for (wave, picked, skips) in selected.with_waves() {
            if skips {
                skipped_in[wave as usize] += 1;
                skipped.push(picked);
            } else {
                sizes[wave as usize] += 1;
                write(conn, task(picked, wave, false))?;
            }
        }
        // Skipped tasks are finished, so their order does not matter: in
        // tenant-id order their index entries and foreign-key lookups land
        // on neighbouring pages (on SQLite, 100,000 of them insert about 3×
        // faster than in the shuffled wave order; docs/benchmarks.md).
        skipped.sort_unstable_by_key(|p| p.id);
        for picked in skipped {
            write(conn, task(picked, 0, true))?;
        }
        if !rows.is_empty() {
            insert_tasks(conn, &rows)?;
        }
        let total = selected.order.tenants.len() as i64;
        counters::insert_created(conn, &id, &sizes, &skipped_in)?;
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
    });
    bulk_cache(&mut conn, false);
    let total = created?;
    tracing::info!(rollout_id = %id, target = %settings.target, tenants = total, "rollout created");
    refresh_statistics(&mut conn, total);
    Ok(Created::Rollout(Box::new(get(db, &id)?)))
}

/// SQLite: a pooled control connection keeps a small page cache
/// (`SQLITE_CACHE_PRAGMA`), and a transaction that dirties more pages than
/// fit spills them to the WAL and writes them again as it goes on: the
/// 100,000 tasks of a large rollout did. The creating connection gets a
/// 2 MiB cache for the transaction and its small one back after.
fn bulk_cache(conn: &mut ControlConnection, on: bool) {
    use diesel::connection::SimpleConnection;
    if let ControlConnection::Sqlite(c) = conn {
        let pragma = if on {
            "PRAGMA cache_size = -2048"
        } else {
            tenantplane_control_db::db::SQLITE_CACHE_PRAGMA
        };
        if let Err(e) = c.batch_execute(pragma) {
            tracing::warn!(error = %e, "setting the page cache for rollout creation failed");
        }
    }
}

/// One multi-row insert (the MultiConnection has none, the backends do).
fn insert_tasks(conn: &mut ControlConnection, rows: &[NewTask]) -> Result<()> {
    match conn {
        ControlConnection::Sqlite(c) => {
            diesel::insert_into(tasks::table).values(rows).execute(c)?;
        }
        ControlConnection::Postgres(c) => insert_tasks_pg(c, rows)?,
    };
    Ok(())
}

/// PostgreSQL: the page as one array per column, unnested server-side. A
/// `VALUES` list of 500 rows is a statement of 6,000 parameters that
/// PostgreSQL parses and plans each time; this one has 12 whatever the page
/// holds (the no-op rollout over 100,000 tenants went from 5.4 to 2.9 s;
/// docs/benchmarks.md).
fn insert_tasks_pg(c: &mut diesel::PgConnection, rows: &[NewTask]) -> Result<()> {
    use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamp};
    let Some(first) = rows.first() else {
        return Ok(());
    };
    // The same for every task of a rollout.
    let (rollout_id, priority, to_version, max_attempts, next_attempt_at) = (
        &first.rollout_id,
        first.priority,
        &first.to_version,
        first.max_attempts,
        first.next_attempt_at,
    );
    diesel::sql_query(
        "INSERT INTO tasks (rollout_id, tenant_id, server_id, wave, priority, state, \
         from_version, to_version, reached_version, max_attempts, next_attempt_at, finished_at) \
         SELECT $1, t.tenant_id, t.server_id, t.wave, $2, t.state, t.from_version, $3, \
         t.reached_version, $4, $5, t.finished_at \
         FROM unnest($6::text[], $7::text[], $8::int4[], $9::text[], $10::text[], $11::text[], \
         $12::timestamp[]) WITH ORDINALITY \
         AS t (tenant_id, server_id, wave, state, from_version, reached_version, finished_at, n) \
         ORDER BY t.n",
    )
    .bind::<Text, _>(rollout_id)
    .bind::<Integer, _>(priority)
    .bind::<Nullable<Text>, _>(to_version)
    .bind::<Integer, _>(max_attempts)
    .bind::<Timestamp, _>(next_attempt_at)
    .bind::<Array<Text>, _>(
        rows.iter()
            .map(|r| r.tenant_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        rows.iter()
            .map(|r| r.server_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Integer>, _>(rows.iter().map(|r| r.wave).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        rows.iter()
            .map(|r| r.from_version.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        rows.iter()
            .map(|r| r.reached_version.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Timestamp>>, _>(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>())
    .execute(c)?;
    Ok(())
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
    order: Order,
    /// Parallel to `order.tenants`: the tenant is skipped.
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
        if order.tenants.is_empty() {
            return Err(Error::invalid("the selector matches no tenant"));
        }
        let skip: Vec<bool> = order
            .tenants
            .iter()
            .map(|p| settings.skips_version(order.schema_version(p)))
            .collect();
        let work = skip.iter().filter(|s| !**s).count();
        if work == 0 && !settings.waves.is_empty() {
            let name = settings.waves[0]
                .name
                .clone()
                .unwrap_or_else(|| "wave-1".to_string());
            return Err(Error::invalid(format!(
                "wave '{name}' would be empty: none of the {} selected tenants needs migrating to the target",
                order.tenants.len()
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

    /// Each tenant in wave order with its wave and whether it is skipped.
    fn with_waves(&self) -> impl Iterator<Item = (i32, &Picked, bool)> + '_ {
        // The rank of each tenant among those that will migrate.
        let mut rank = 0usize;
        self.order
            .tenants
            .iter()
            .zip(&self.skip)
            .map(move |(picked, &skipped)| {
                let wave = if skipped {
                    0
                } else {
                    rank += 1;
                    waves::wave_of(&self.waves, rank - 1)
                };
                (wave, picked, skipped)
            })
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
    let mut tasks = Vec::with_capacity(selected.order.tenants.len());
    let waved: Vec<(i32, Uuid)> = selected.with_waves().map(|(w, p, _)| (w, p.id)).collect();
    for page in waved.chunks(PAGE) {
        let ids: Vec<Uuid> = page.iter().map(|(_, id)| *id).collect();
        // The slugs the plan shows; tenants deleted meanwhile drop out.
        for (i, c) in selected.selection.rows(conn, &ids)? {
            let wave = page[i].0;
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
    }
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
