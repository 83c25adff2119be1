//! Plans (the seed's phase 5, in the control plane): CRUD, the default plans,
//! plan changes (an upgrade that needs a newer schema enqueues a one-tenant
//! rollout), previews, and the sweep of expired trials.

use std::collections::BTreeSet;

use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;

use tenantplane_migrations::catalogue;
use uuid::Uuid;

use crate::snapshot::{required_version, Snapshot};
pub use tenantplane_api_types::notify::{PlanChangedEvent, TrialEvent};
pub use tenantplane_api_types::plans::{Plan, PlanChange, PlanPreview};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{
    self, plan_features, plans, rollouts as rollouts_t, tasks, tenant_trials, tenants,
};
use tenantplane_control_db::states::{RolloutState, TaskState};
use tenantplane_control_db::validate;
use tenantplane_rollout::rollouts::{self, Created, FailureBudget, RolloutRequest, Selector};

/// The plans created on first start, spanning the phases.
pub fn defaults() -> Vec<Plan> {
    let all: Vec<String> = catalogue::FEATURES
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    let free = ["invoice_numbering", "branding", "day_end_lock"];
    let standard_extra = [
        "audit_diff",
        "expense_categories",
        "sales_heatmap",
        "customer_metrics",
        "recommendations",
        "credit_reminders",
        "staff_roles",
        "user_invites",
    ];
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Plan {
            slug: "free".into(),
            name: "Free".into(),
            price_cents: 0,
            currency: "USD".into(),
            features: s(&free),
            fallback: None,
            active: true,
        },
        Plan {
            slug: "standard".into(),
            name: "Standard".into(),
            price_cents: 2900,
            currency: "USD".into(),
            features: s(&free).into_iter().chain(s(&standard_extra)).collect(),
            fallback: Some("free".into()),
            active: true,
        },
        Plan {
            slug: "pro".into(),
            name: "Pro".into(),
            price_cents: 7900,
            currency: "USD".into(),
            features: all,
            fallback: Some("free".into()),
            active: true,
        },
    ]
}

/// Creates the default plans when there are none (first start).
pub fn ensure_defaults(db: &ControlDb) -> Result<()> {
    let mut conn = db.conn()?;
    let any: i64 = plans::table.count().get_result(&mut conn)?;
    if any > 0 {
        return Ok(());
    }
    let actor = Actor::system("defaults");
    for p in defaults() {
        match create(db, &actor, p) {
            Ok(_) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn validate_plan(conn: &mut ControlConnection, p: &Plan) -> Result<Option<String>> {
    validate::slug(&p.slug)
        .map_err(|_| Error::invalid(format!("invalid plan slug {:?}", p.slug)))?;
    validate::name(&p.name)?;
    if p.price_cents < 0 {
        return Err(Error::invalid("price_cents must not be negative"));
    }
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(format!(
            "invalid currency {:?}: three capital letters, e.g. USD",
            p.currency
        )));
    }
    let unknown: Vec<&String> = p
        .features
        .iter()
        .filter(|f| catalogue::feature(f).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::invalid(format!(
            "unknown features: {unknown:?} (see GET /v1/features)"
        )));
    }
    let dupes = p.features.len() != p.features.iter().collect::<BTreeSet<_>>().len();
    if dupes {
        return Err(Error::invalid("features are listed twice"));
    }
    match &p.fallback {
        None => Ok(None),
        Some(f) if *f == p.slug => Err(Error::invalid("a plan cannot fall back to itself")),
        Some(f) => {
            let id = plans::table
                .filter(plans::slug.eq(f))
                .select(plans::id)
                .first::<String>(conn)
                .optional()?
                .ok_or_else(|| Error::invalid(format!("unknown fallback plan '{f}'")))?;
            refuse_fallback_cycle(conn, &p.slug, f)?;
            Ok(Some(id))
        }
    }
}

/// Following fallbacks from `fallback` must never come back to `slug`: a
/// trial that ends would otherwise have no plan to land on
/// (`free → pro → free`).
fn refuse_fallback_cycle(conn: &mut ControlConnection, slug: &str, fallback: &str) -> Result<()> {
    let mut chain = vec![slug.to_string(), fallback.to_string()];
    let mut at = fallback.to_string();
    // Plans are few; the bound only stops a cycle already in the data.
    for _ in 0..1000 {
        let next: Option<String> = plans::table
            .filter(plans::slug.eq(&at))
            .select(plans::fallback_plan_id)
            .first::<Option<String>>(conn)
            .optional()?
            .flatten();
        let Some(next_id) = next else { return Ok(()) };
        let next_slug: String = plans::table
            .find(&next_id)
            .select(plans::slug)
            .first(conn)?;
        chain.push(next_slug.clone());
        if next_slug == slug {
            return Err(Error::invalid(format!(
                "plan fallbacks would go round in a circle: {}",
                chain.join(" → ")
            )));
        }
        at = next_slug;
    }
    Ok(())
}

fn write_features(conn: &mut ControlConnection, plan_id: &str, features: &[String]) -> Result<()> {
    diesel::delete(plan_features::table.filter(plan_features::plan_id.eq(plan_id)))
        .execute(conn)?;
    for f in features {
        diesel::insert_into(plan_features::table)
            .values((
                plan_features::plan_id.eq(plan_id),
                plan_features::feature.eq(f),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn create(db: &ControlDb, actor: &Actor, p: Plan) -> Result<Plan> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let fallback = validate_plan(conn, &p)?;
        let id = Uuid::new_v4().to_string();
        let now = Utc::now().naive_utc();
        diesel::insert_into(plans::table)
            .values((
                plans::id.eq(&id),
                plans::slug.eq(&p.slug),
                plans::name.eq(p.name.trim()),
                plans::price_cents.eq(p.price_cents),
                plans::currency.eq(&p.currency),
                plans::active.eq(p.active),
                plans::fallback_plan_id.eq(fallback),
                plans::created_at.eq(now),
                plans::updated_at.eq(now),
            ))
            .execute(conn)
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(format!("plan '{}' exists", p.slug)),
                other => other,
            })?;
        write_features(conn, &id, &p.features)?;
        let created = read(conn, &p.slug)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "plan.create",
                resource_type: "plan",
                resource_id: Some(&p.slug),
                tenant_id: None,
                before: None,
                after: audit::snapshot(&created),
            },
        )?;
        changes::bump(conn)?;
        Ok(created)
    })
}

/// Replaces a plan (the slug stays).
pub fn update(db: &ControlDb, actor: &Actor, slug: &str, p: Plan) -> Result<Plan> {
    if p.slug != slug {
        return Err(Error::invalid(format!(
            "the body's slug {:?} differs from the path's {slug:?}",
            p.slug
        )));
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let before = read(conn, slug)?;
        let fallback = validate_plan(conn, &p)?;
        let id: String = plans::table
            .filter(plans::slug.eq(slug))
            .select(plans::id)
            .first(conn)?;
        diesel::update(plans::table.find(&id))
            .set((
                plans::name.eq(p.name.trim()),
                plans::price_cents.eq(p.price_cents),
                plans::currency.eq(&p.currency),
                plans::active.eq(p.active),
                plans::fallback_plan_id.eq(fallback),
                plans::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        write_features(conn, &id, &p.features)?;
        let after = read(conn, slug)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "plan.update",
                resource_type: "plan",
                resource_id: Some(slug),
                tenant_id: None,
                before: audit::snapshot(&before),
                after: audit::snapshot(&after),
            },
        )?;
        changes::bump(conn)?;
        Ok(after)
    })
}

pub fn read(conn: &mut ControlConnection, slug: &str) -> Result<Plan> {
    let (id, name, price_cents, currency, active, fallback_id): (
        String,
        String,
        i64,
        String,
        bool,
        Option<String>,
    ) = plans::table
        .filter(plans::slug.eq(slug))
        .select((
            plans::id,
            plans::name,
            plans::price_cents,
            plans::currency,
            plans::active,
            plans::fallback_plan_id,
        ))
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("plan", slug))?;
    let mut features: Vec<String> = plan_features::table
        .filter(plan_features::plan_id.eq(&id))
        .select(plan_features::feature)
        .load(conn)?;
    // Catalogue order reads better than alphabetical.
    features.sort_by_key(|f| {
        catalogue::FEATURES
            .iter()
            .position(|c| c.name == f)
            .unwrap_or(usize::MAX)
    });
    let fallback = match fallback_id {
        Some(fid) => plans::table
            .find(fid)
            .select(plans::slug)
            .first(conn)
            .optional()?,
        None => None,
    };
    Ok(Plan {
        slug: slug.to_string(),
        name,
        price_cents,
        currency,
        features,
        fallback,
        active,
    })
}

pub fn get(db: &ControlDb, slug: &str) -> Result<Plan> {
    read(&mut *db.conn()?, slug)
}

pub fn list(db: &ControlDb) -> Result<Vec<Plan>> {
    let mut conn = db.conn()?;
    let slugs: Vec<String> = plans::table
        .order((plans::price_cents.asc(), plans::slug.asc()))
        .select(plans::slug)
        .load(&mut conn)?;
    slugs.iter().map(|s| read(&mut conn, s)).collect()
}

pub fn preview(snap: &Snapshot, tenant_id: &str, plan_slug: &str) -> Result<PlanPreview> {
    let t = snap
        .tenant(tenant_id)
        .ok_or_else(|| Error::not_found("tenant", tenant_id))?;
    let to = snap
        .plan_by_slug(plan_slug)
        .ok_or_else(|| Error::invalid(format!("unknown plan '{plan_slug}'")))?;
    if !to.active {
        return Err(Error::invalid(format!(
            "plan '{plan_slug}' takes no new tenants"
        )));
    }
    let now = Utc::now().naive_utc();
    let current: BTreeSet<&str> = snap
        .evaluate(t, now)
        .features
        .iter()
        .filter(|f| f.enabled || f.reason == crate::snapshot::Reason::PendingMigration)
        .map(|f| f.feature)
        .collect();
    let order = |v: &mut Vec<String>| {
        v.sort_by_key(|f| {
            catalogue::FEATURES
                .iter()
                .position(|c| c.name == f)
                .unwrap_or(usize::MAX)
        })
    };
    let mut gained: Vec<String> = to
        .features
        .iter()
        .filter(|f| !current.contains(f.as_str()))
        .cloned()
        .collect();
    let mut lost: Vec<String> = current
        .iter()
        .filter(|f| !to.features.contains(**f))
        .map(|f| f.to_string())
        .collect();
    order(&mut gained);
    order(&mut lost);
    let has = |v: &str| t.schema_version.as_deref().is_some_and(|s| s >= v);
    let target = required_version(to.features.iter().map(String::as_str));
    let migration_needed = target.is_some_and(|v| !has(v));
    let mut waiting: Vec<String> = to
        .features
        .iter()
        .filter(|f| {
            catalogue::feature(f)
                .and_then(|c| c.requires)
                .is_some_and(|v| !has(v))
        })
        .cloned()
        .collect();
    order(&mut waiting);
    Ok(PlanPreview {
        from: snap.plan_slug(t.plan_id.as_deref()),
        to: to.slug.clone(),
        gained,
        lost,
        migration_needed,
        target_version: if migration_needed {
            target.map(str::to_string)
        } else {
            None
        },
        waiting_for_migration: waiting,
    })
}

/// Moves a tenant to a plan. Features the tenant loses turn off at once (no
/// data is dropped); features that need a newer schema wait for a one-tenant
/// rollout at priority 100, queued here.
pub fn change(
    db: &ControlDb,
    snap: &Snapshot,
    actor: &Actor,
    tenant: &str,
    plan_slug: &str,
    trial_days: Option<u32>,
) -> Result<PlanChange> {
    if trial_days.is_some_and(|d| d == 0 || d > 365) {
        return Err(Error::invalid("trial_days must be 1 to 365"));
    }
    let preview = preview(snap, tenant, plan_slug)?;
    let t = snap
        .tenant(tenant)
        .ok_or_else(|| Error::not_found("tenant", tenant))?
        .clone();
    let plan_id = snap
        .plan_by_slug
        .get(plan_slug)
        .cloned()
        .ok_or_else(|| Error::invalid(format!("unknown plan '{plan_slug}'")))?;
    let trial_ends_at =
        trial_days.map(|d| Utc::now().naive_utc() + chrono::Duration::days(i64::from(d)));
    let mut conn = db.conn()?;
    let changed = write_tx(&mut conn, None, |conn| {
        // The tenant's row lock first (PostgreSQL; SQLite serialises writers
        // anyway): concurrent changes of one tenant then run one after the
        // other, and each sees what the one before it did.
        let n = diesel::update(
            tenants::table
                .find(&t.id)
                .filter(tenants::deleted_at.is_null()),
        )
        .set(tenants::updated_at.eq(tenants::updated_at))
        .execute(conn)?;
        if n == 0 {
            return Err(Error::not_found("tenant", tenant));
        }
        let current: Option<String> = tenants::table
            .find(&t.id)
            .select(tenants::plan_id)
            .first(conn)?;
        // The plan already in effect, and no trial asked for: nothing to do.
        if current.as_deref() == Some(plan_id.as_str()) && trial_ends_at.is_none() {
            return Ok(false);
        }
        if trial_ends_at.is_some() {
            record_trial(conn, actor, &t.id, &plan_id, plan_slug)?;
        }
        diesel::update(tenants::table.find(&t.id))
            .set((
                tenants::plan_id.eq(Some(&plan_id)),
                tenants::trial_ends_at.eq(trial_ends_at),
                tenants::updated_at.eq(Utc::now().naive_utc()),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "tenant.plan_change",
                resource_type: "tenant",
                resource_id: Some(&t.id),
                tenant_id: Some(&t.id),
                before: Some(
                    serde_json::json!({ "plan": preview.from, "trial_ends_at": t.trial_ends_at }),
                ),
                after: Some(
                    serde_json::json!({ "plan": plan_slug, "trial_ends_at": trial_ends_at }),
                ),
            },
        )?;
        let (slug, name, contact_email) = tenant_facts(conn, &t.id)?;
        // The plan it had, as this transaction read it (the snapshot may
        // be behind).
        let from_plan: Option<String> = match &current {
            Some(id) => plans::table
                .find(id)
                .select(plans::slug)
                .first(conn)
                .optional()?,
            None => None,
        };
        outbox::record(
            conn,
            EventKind::PlanChanged,
            Some(&t.id),
            &PlanChangedEvent {
                tenant_id: t.id.clone(),
                slug,
                name,
                contact_email,
                from_plan,
                to_plan: plan_slug.to_string(),
                trial_ends_at: trial_ends_at.map(|t| t.and_utc()),
            },
        )?;
        changes::bump(conn)?;
        Ok(true)
    })?;
    let mut rollout = None;
    if let Some(target) = preview.target_version.as_deref() {
        // One pending one-tenant migration per tenant: one already open that
        // reaches the target serves this change too.
        rollout = open_upgrade(&mut conn, &t.id, target)?;
        if rollout.is_none() && changed {
            rollout = queue_upgrade(db, actor, &t.id, target)?;
        }
    }
    if !changed {
        tracing::info!(tenant_id = %t.id, plan = plan_slug, "plan change: already on that plan; nothing to do");
    }
    Ok(PlanChange {
        tenant: t.id,
        plan: plan_slug.to_string(),
        // Unchanged: the plan in effect (the snapshot may not show it yet).
        previous_plan: if changed {
            preview.from
        } else {
            Some(plan_slug.to_string())
        },
        trial_ends_at: if changed {
            trial_ends_at
        } else {
            t.trial_ends_at
        },
        rollout,
        waiting_for_migration: if preview.migration_needed {
            preview.waiting_for_migration
        } else {
            Vec::new()
        },
    })
}

/// Records a trial start. A tenant key starts a trial of a plan once
/// (409 the second time, whatever happened in between); an operator (or
/// the console) may grant another, which the row then records.
fn record_trial(
    conn: &mut ControlConnection,
    actor: &Actor,
    tenant_id: &str,
    plan_id: &str,
    plan_slug: &str,
) -> Result<()> {
    let self_service = actor.id.starts_with("tenant-key:");
    let earlier: Option<NaiveDateTime> = tenant_trials::table
        .find((tenant_id, plan_id))
        .select(tenant_trials::started_at)
        .first(conn)
        .optional()?;
    let now = Utc::now().naive_utc();
    match earlier {
        Some(at) if self_service => Err(Error::Conflict(format!(
            "this tenant already had a trial of '{plan_slug}' (started {}); an operator can grant another",
            at.format("%Y-%m-%d")
        ))),
        Some(_) => {
            diesel::update(tenant_trials::table.find((tenant_id, plan_id)))
                .set((
                    tenant_trials::started_at.eq(now),
                    tenant_trials::started_by.eq(&actor.id),
                ))
                .execute(conn)?;
            Ok(())
        }
        None => {
            diesel::insert_into(tenant_trials::table)
                .values((
                    tenant_trials::tenant_id.eq(tenant_id),
                    tenant_trials::plan_id.eq(plan_id),
                    tenant_trials::started_at.eq(now),
                    tenant_trials::started_by.eq(&actor.id),
                ))
                .execute(conn)?;
            Ok(())
        }
    }
}

/// The open one-tenant upgrade rollout (a plan change's) of this tenant
/// that reaches `target`, if any.
fn open_upgrade(
    conn: &mut ControlConnection,
    tenant_id: &str,
    target: &str,
) -> Result<Option<String>> {
    Ok(tasks::table
        .inner_join(rollouts_t::table)
        .filter(tasks::tenant_id.eq(tenant_id))
        .filter(tasks::state.eq_any([TaskState::Pending.as_str(), TaskState::Running.as_str()]))
        .filter(rollouts_t::state.eq_any([
            RolloutState::Running.as_str(),
            RolloutState::Paused.as_str(),
        ]))
        .filter(rollouts_t::priority.eq(UPGRADE_PRIORITY))
        .filter(rollouts_t::target_version.ge(target))
        .select(rollouts_t::id)
        .first::<String>(conn)
        .optional()?)
}

/// The priority of the one-tenant rollouts plan changes queue: ahead of
/// fleet-wide work.
const UPGRADE_PRIORITY: i32 = 100;

/// Queues the one-tenant rollout that brings the schema a plan needs.
fn queue_upgrade(
    db: &ControlDb,
    actor: &Actor,
    tenant_id: &str,
    target: &str,
) -> Result<Option<String>> {
    let req = RolloutRequest {
        target: format!("version:{target}"),
        selector: Selector {
            tenants: Some(vec![tenant_id.to_string()]),
            ..Selector::default()
        },
        waves: None,
        concurrency: Some(1),
        per_server_concurrency: None,
        max_attempts: None,
        backoff: None,
        timeout_s: None,
        failure_budget: Some(FailureBudget {
            max_failed: Some(0),
            max_failed_percent: None,
        }),
        verify: None,
        dry_run: None,
        priority: Some(UPGRADE_PRIORITY),
        backup: None,
        restore_on_failure: None,
        allow_drift: None,
    };
    Ok(match rollouts::create(db, actor, req)? {
        Created::Rollout(r) => Some(r.id),
        Created::Plan(_) => None,
    })
}

/// Moves tenants whose trial ended to their plan's fallback and records it.
/// Returns how many moved. (Evaluation already treats them as fallen back;
/// this makes it the recorded plan.)
pub fn sweep_expired_trials(db: &ControlDb) -> Result<usize> {
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    let expired: Vec<(String, String, Option<String>, Option<NaiveDateTime>)> = tenants::table
        .inner_join(plans::table.on(tenants::plan_id.eq(plans::id.nullable())))
        .filter(tenants::deleted_at.is_null())
        .filter(tenants::trial_ends_at.le(now))
        .filter(plans::fallback_plan_id.is_not_null())
        .select((
            tenants::id,
            plans::slug,
            plans::fallback_plan_id,
            tenants::trial_ends_at,
        ))
        .load(&mut conn)?;
    let actor = Actor::system("trial-sweep");
    let mut moved = 0;
    for (tenant_id, from, fallback_id, ended) in expired {
        let Some(fallback_id) = fallback_id else {
            continue;
        };
        write_tx(&mut conn, None, |conn| {
            let to: String = plans::table
                .find(&fallback_id)
                .select(plans::slug)
                .first(conn)?;
            let n = diesel::update(
                tenants::table
                    .find(&tenant_id)
                    .filter(tenants::trial_ends_at.le(now)),
            )
            .set((
                tenants::plan_id.eq(Some(&fallback_id)),
                tenants::trial_ends_at.eq(None::<NaiveDateTime>),
                tenants::updated_at.eq(now),
            ))
            .execute(conn)?;
            if n == 1 {
                audit::record(
                    conn,
                    &actor,
                    Change {
                        action: "tenant.trial_expired",
                        resource_type: "tenant",
                        resource_id: Some(&tenant_id),
                        tenant_id: Some(&tenant_id),
                        before: Some(serde_json::json!({ "plan": from, "trial_ends_at": ended })),
                        after: Some(serde_json::json!({ "plan": to, "trial_ends_at": null })),
                    },
                )?;
                let (slug, name, contact_email) = tenant_facts(conn, &tenant_id)?;
                outbox::record(
                    conn,
                    EventKind::TrialExpired,
                    Some(&tenant_id),
                    &TrialEvent {
                        tenant_id: tenant_id.clone(),
                        slug,
                        name,
                        contact_email,
                        plan: from.clone(),
                        trial_ends_at: ended.unwrap_or(now).and_utc(),
                        fallback_plan: Some(to.clone()),
                    },
                )?;
                changes::bump(conn)?;
                moved += 1;
            }
            Ok(())
        })?;
    }
    Ok(moved)
}

/// How long before its end a trial's `trial.ending` event is recorded.
pub const TRIAL_ENDING_NOTICE: chrono::Duration = chrono::Duration::days(3);

/// Records `trial.ending` once for each live tenant whose trial ends within
/// `notice` (the event's dedup key is the tenant and the trial's end, so a
/// later, extended trial gets its own). Returns how many were recorded.
pub fn notify_trials_ending(db: &ControlDb, notice: chrono::Duration) -> Result<usize> {
    let mut conn = db.conn()?;
    let now = Utc::now().naive_utc();
    let ending: Vec<(String, String, Option<String>, Option<NaiveDateTime>)> = tenants::table
        .inner_join(plans::table.on(tenants::plan_id.eq(plans::id.nullable())))
        .filter(tenants::deleted_at.is_null())
        .filter(tenants::trial_ends_at.gt(now))
        .filter(tenants::trial_ends_at.le(now + notice))
        .select((
            tenants::id,
            plans::slug,
            plans::fallback_plan_id,
            tenants::trial_ends_at,
        ))
        .load(&mut conn)?;
    let mut recorded = 0;
    for (tenant_id, plan, fallback_id, ends) in ending {
        let Some(ends) = ends else { continue };
        let key = format!("trial.ending:{tenant_id}:{}", ends.and_utc().timestamp());
        // Most sweeps find every notice recorded already: read before writing.
        let seen: i64 = schema::outbox::table
            .filter(schema::outbox::dedup_key.eq(&key))
            .count()
            .get_result(&mut conn)?;
        if seen > 0 {
            continue;
        }
        write_tx(&mut conn, None, |conn| {
            let fallback_plan: Option<String> = match &fallback_id {
                Some(f) => plans::table
                    .find(f)
                    .select(plans::slug)
                    .first(conn)
                    .optional()?,
                None => None,
            };
            let (slug, name, contact_email) = tenant_facts(conn, &tenant_id)?;
            let body = TrialEvent {
                tenant_id: tenant_id.clone(),
                slug,
                name,
                contact_email,
                plan: plan.clone(),
                trial_ends_at: ends.and_utc(),
                fallback_plan,
            };
            if outbox::record_once(conn, EventKind::TrialEnding, Some(&tenant_id), &body, &key)?
                .is_some()
            {
                recorded += 1;
            }
            Ok(())
        })?;
    }
    Ok(recorded)
}

/// A tenant's slug, name and contact address, for event bodies.
fn tenant_facts(
    conn: &mut ControlConnection,
    tenant_id: &str,
) -> Result<(String, String, Option<String>)> {
    Ok(tenants::table
        .find(tenant_id)
        .select((tenants::slug, tenants::name, tenants::contact_email))
        .first(conn)?)
}
