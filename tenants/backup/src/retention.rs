//! Backup retention: which of a tenant's backups to keep and which to
//! delete, grandfather-father-son style, under hard rules no policy
//! overrides.
//!
//! - [`Policy`]: how many backups to keep (`keep_last`, `daily`, `weekly`,
//!   `monthly`), read from a schedule's `params` or an API request;
//! - [`decide`]: the decision for one tenant's backups, a pure function;
//! - [`apply`]: reads each tenant's backups, decides, and deletes (unless a
//!   dry run) with [`rows::delete`] — artifact first, then the row, audited;
//! - [`run_retention`]: the entry point for the API ([`RetentionRequest`]);
//! - the `retention` job ([`ScheduledRetention`], which a schedule's fire
//!   starts): its [`Job`] impl is here, so that `jobs` does not import this
//!   module (retention → jobs, rows, store: one way).
//!
//! **The policy** (each rule counted on its own over the tenant's usable —
//! completed or verified — backups, newest first; a backup any rule picks is
//! kept):
//!
//! - `keep_last` (default 7): the newest N;
//! - `daily` (default 7): for each of the newest N distinct UTC days that have
//!   a backup, the newest backup of that day;
//! - `weekly` (default 4): the same per ISO week (Monday to Sunday, UTC;
//!   the ISO year, so 2027-01-01 is in 2026-W53);
//! - `monthly` (default 6): the same per calendar month (UTC).
//!
//! With one backup a night the defaults keep about 15: the last 7 nights,
//! the newest of each of the 3 weeks before, and the newest of each of the
//! 5 months before. Each count is 0 (the rule is off) to 1000; a policy
//! that keeps nothing (all four 0) is refused.
//!
//! **Hard rules**, whatever the policy says:
//!
//! 1. `pending` and `running` backups are never touched;
//! 2. pinned backups are never deleted;
//! 3. the tenant's newest verified backup is never deleted;
//! 4. a backup is deleted only when a verified backup of the same tenant
//!    taken strictly later exists (same `created_at` does not count). So
//!    while only old backups are verified, nothing newer than them goes,
//!    whatever the policy: an unverified backup may be bad, and the good
//!    copy it would replace must stay;
//! 5. `failed` backups hold no usable data: they never count for the
//!    policy, and those older than the newest verified backup are deleted
//!    (their row and error text stay in the audit log's `backup.delete`
//!    entry). Failed backups newer than it stay, by rule 4.
//!
//! Rule 4 is checked again right before each deletion (a verification can
//! turn the newer verified backup `failed` in between), and
//! [`rows::delete`] refuses a backup pinned meanwhile.

use std::collections::HashSet;

use chrono::{Datelike, NaiveDateTime};
use diesel::prelude::*;
pub use tenantplane_api_types::retention::{
    Action, Decision, Failure, Policy, Report, RetentionRequest, TenantReport, MAX_COUNT,
};
use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::schema::{backups, tenants};
use tenantplane_control_db::states::BackupState;
use tenantplane_fleet::registry;
use tenantplane_jobs::{Job, JobContext, JobError};

use crate::jobs::{select_tenants, ScheduledRetention};
use crate::rows;
use crate::store::installed as installed_store;
use crate::store::ArtifactStore;

/// Refuses a policy that breaks a rule ([`Policy::check`]).
fn validate(policy: &Policy) -> Result<()> {
    policy.check().map_err(Error::Invalid)
}

/// One backup of a tenant, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub created_at: NaiveDateTime,
    pub state: BackupState,
    pub pinned: bool,
}

/// Newest first; equal times by id, descending (the order of
/// [`rows::list`]).
fn newest_first(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| b.id.cmp(&a.id))
}

/// A backup's bucket (day, ISO week, month) as its label.
type BucketKey = fn(&NaiveDateTime) -> String;

fn day(t: &NaiveDateTime) -> String {
    t.date().format("%Y-%m-%d").to_string()
}

fn iso_week(t: &NaiveDateTime) -> String {
    let w = t.date().iso_week();
    format!("{:04}-W{:02}", w.year(), w.week())
}

fn month(t: &NaiveDateTime) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// Decides, for one tenant's backups, which to keep and which to delete,
/// with the reason (see the module docs for the rules). Returns one
/// decision per backup, newest first. Pure: the same backups and policy
/// give the same decisions.
pub fn decide(backups: &[Candidate], policy: &Policy) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = backups.iter().collect();
    order.sort_by(|a, b| newest_first(a, b));
    let newest_verified = order.iter().position(|c| c.state == BackupState::Verified);
    let newest_verified_at = newest_verified.map(|i| order[i].created_at);

    // The policy, each rule on its own over the usable backups.
    let usable: Vec<usize> = (0..order.len())
        .filter(|&i| {
            matches!(
                order[i].state,
                BackupState::Completed | BackupState::Verified
            )
        })
        .collect();
    let mut picked: Vec<Option<String>> = vec![None; order.len()];
    for &i in usable.iter().take(policy.keep_last as usize) {
        picked[i] = Some("keep-last".into());
    }
    let buckets: [(u32, &str, BucketKey); 3] = [
        (policy.daily, "daily", day),
        (policy.weekly, "weekly", iso_week),
        (policy.monthly, "monthly", month),
    ];
    for (n, rule, key) in buckets {
        let mut seen = HashSet::new();
        for &i in &usable {
            if seen.len() >= n as usize {
                break;
            }
            let k = key(&order[i].created_at);
            // The first backup of a bucket, newest first, is its newest.
            if seen.insert(k.clone()) {
                picked[i].get_or_insert_with(|| format!("{rule} {k}"));
            }
        }
    }

    order
        .iter()
        .zip(picked)
        .enumerate()
        .map(|(i, (c, picked))| {
            let newer_verified = newest_verified_at.is_some_and(|at| at > c.created_at);
            let (action, reason) = if matches!(c.state, BackupState::Pending | BackupState::Running)
            {
                (Action::Keep, "in progress".to_string())
            } else if c.pinned {
                (Action::Keep, "pinned".to_string())
            } else if newest_verified == Some(i) {
                (Action::Keep, "newest verified".to_string())
            } else if let Some(reason) = picked {
                (Action::Keep, reason)
            } else if !newer_verified {
                (Action::Keep, "no newer verified backup".to_string())
            } else if c.state == BackupState::Failed {
                (Action::Delete, "failed".to_string())
            } else {
                (Action::Delete, "not kept by the policy".to_string())
            };
            Decision {
                id: c.id.clone(),
                created_at: c.created_at,
                state: c.state.as_str().to_string(),
                action,
                reason,
            }
        })
        .collect()
}

/// Which tenants a retention run covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// The live tenants a selector picks (the rollout rules, as
    /// [`select_tenants`]); `None` picks all. Deleted tenants are not
    /// selected: their backups stay until a run names the tenant.
    Selector(Option<Selector>),
    /// One tenant by id or slug, a deleted one too.
    Tenant(String),
}

/// A tenant's backups as candidates.
fn candidates(conn: &mut ControlConnection, tenant_id: &str) -> Result<Vec<Candidate>> {
    let rows: Vec<(String, NaiveDateTime, String, bool)> = backups::table
        .filter(backups::tenant_id.eq(tenant_id))
        .select((
            backups::id,
            backups::created_at,
            backups::state,
            backups::pinned,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(id, created_at, state, pinned)| {
            Ok(Candidate {
                state: state.parse()?,
                id,
                created_at,
                pinned,
            })
        })
        .collect()
}

/// Hard rule 4, read again right before a deletion.
fn newer_verified_exists(
    conn: &mut ControlConnection,
    tenant_id: &str,
    than: NaiveDateTime,
) -> Result<bool> {
    Ok(backups::table
        .filter(backups::tenant_id.eq(tenant_id))
        .filter(backups::state.eq(BackupState::Verified.as_str()))
        .filter(backups::created_at.gt(than))
        .select(backups::id)
        .first::<String>(conn)
        .optional()?
        .is_some())
}

enum Outcome {
    Deleted,
    Kept(String),
    Failed(String),
}

fn delete_one(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    actor: &Actor,
    tenant_id: &str,
    d: &Decision,
) -> Outcome {
    let still = db
        .conn()
        .and_then(|mut conn| newer_verified_exists(&mut conn, tenant_id, d.created_at));
    match still {
        Ok(true) => {}
        Ok(false) => return Outcome::Kept("no newer verified backup".into()),
        Err(e) => return Outcome::Failed(report(&e)),
    }
    match rows::delete(db, store, actor, &d.id) {
        // Gone already (another run, an operator): the outcome is the same.
        Ok(()) | Err(Error::NotFound { .. }) => Outcome::Deleted,
        // Pinned meanwhile.
        Err(Error::Conflict(why)) => Outcome::Kept(format!("refused: {why}")),
        Err(e) => Outcome::Failed(report(&e)),
    }
}

/// Applies a policy to the backups of the tenants in `scope`: per tenant,
/// reads its backups, [`decide`]s, and (unless `dry_run`) deletes with
/// [`rows::delete`] (artifact first, then the row; each deletion audited
/// as `backup.delete`). A deletion that fails is listed in the report's
/// errors and the run goes on. A real run is audited as `backup.retention`
/// with its scope, policy and counts; a dry run changes and records
/// nothing, and reports the same.
pub fn apply(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    scope: &Scope,
    policy: &Policy,
    dry_run: bool,
    actor: &Actor,
) -> Result<Report> {
    validate(policy)?;
    let (ids, audit_tenant) = {
        let mut conn = db.conn()?;
        match scope {
            Scope::Selector(s) => (select_tenants(&mut conn, s.as_ref())?, None),
            Scope::Tenant(t) => {
                // A live tenant first: a deleted one may share its slug.
                let row = match registry::find_row(&mut conn, t) {
                    Err(Error::NotFound { .. }) => registry::find_any(&mut conn, t)?,
                    other => other?,
                };
                (vec![row.id.clone()], Some(row.id))
            }
        }
    };
    let mut out = Report {
        dry_run,
        policy: *policy,
        tenants_checked: ids.len(),
        tenants: Vec::new(),
        kept: 0,
        deleted: 0,
        errors: 0,
    };
    for chunk in ids.chunks(500) {
        let slugs: std::collections::HashMap<String, String> = tenants::table
            .filter(tenants::id.eq_any(chunk))
            .select((tenants::id, tenants::slug))
            .load::<(String, String)>(&mut *db.conn()?)?
            .into_iter()
            .collect();
        for tenant_id in chunk {
            let found = candidates(&mut *db.conn()?, tenant_id)?;
            if found.is_empty() {
                continue;
            }
            let mut t = TenantReport {
                tenant_id: tenant_id.clone(),
                slug: slugs.get(tenant_id).cloned().unwrap_or_default(),
                kept: Vec::new(),
                deleted: Vec::new(),
                errors: Vec::new(),
            };
            for mut d in decide(&found, policy) {
                if !d.is_delete() {
                    t.kept.push(d);
                    continue;
                }
                if dry_run {
                    t.deleted.push(d);
                    continue;
                }
                match delete_one(db, store, actor, tenant_id, &d) {
                    Outcome::Deleted => t.deleted.push(d),
                    Outcome::Kept(why) => {
                        tracing::info!(backup_id = %d.id, tenant_id, why = %why, "retention keeps the backup after all");
                        d.action = Action::Keep;
                        d.reason = why;
                        t.kept.push(d);
                    }
                    Outcome::Failed(error) => {
                        tracing::warn!(backup_id = %d.id, tenant_id, error = %error, "retention could not delete the backup");
                        t.errors.push(Failure {
                            id: d.id,
                            reason: d.reason,
                            error,
                        });
                    }
                }
            }
            // Newest first, the ones kept after all included.
            t.kept.sort_by(|a, b| {
                b.created_at
                    .cmp(&a.created_at)
                    .then_with(|| b.id.cmp(&a.id))
            });
            out.kept += t.kept.len();
            out.deleted += t.deleted.len();
            out.errors += t.errors.len();
            out.tenants.push(t);
        }
    }
    if !dry_run {
        let scope_json = match scope {
            Scope::Selector(s) => serde_json::json!({ "selector": s }),
            Scope::Tenant(t) => serde_json::json!({ "tenant": t }),
        };
        let mut conn = db.conn()?;
        write_tx(&mut conn, None, |conn| {
            audit::record(
                conn,
                actor,
                Change {
                    action: "backup.retention",
                    resource_type: "backup",
                    resource_id: None,
                    tenant_id: audit_tenant.as_deref(),
                    before: None,
                    after: Some(serde_json::json!({
                        "scope": scope_json,
                        "policy": policy,
                        "tenants": out.tenants_checked,
                        "kept": out.kept,
                        "deleted": out.deleted,
                        "errors": out.errors,
                    })),
                },
            )
        })?;
    }
    tracing::info!(
        dry_run,
        tenants = out.tenants_checked,
        kept = out.kept,
        deleted = out.deleted,
        errors = out.errors,
        "backup retention done"
    );
    Ok(out)
}

/// The API's entry point: checks the request and [`apply`]s it. Bad input
/// (both a selector and a tenant, an invalid policy, an unknown tenant in
/// the selector) is `Invalid`; an unknown tenant is `NotFound`.
pub fn run_retention(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    request: RetentionRequest,
    actor: &Actor,
) -> Result<Report> {
    let scope = match (request.selector, request.tenant) {
        (Some(_), Some(_)) => return Err(Error::invalid("give a selector or a tenant, not both")),
        (None, Some(t)) => Scope::Tenant(t),
        (s, None) => Scope::Selector(s),
    };
    let policy = request.policy.unwrap_or_default();
    apply(db, store, &scope, &policy, request.dry_run, actor)
}

/// A retention schedule fired: the policy from the fire's `params`
/// (absent: the defaults; invalid: the job is dead at once with the
/// reason), the tenants from its selector (absent: all). Failed deletions
/// make the attempt fail transiently (a new run decides again).
impl Job for ScheduledRetention {
    const KIND: &'static str = "retention";

    fn dedup_key(&self) -> Option<String> {
        Some(format!("{}:{}", self.0.schedule, self.0.run_id))
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let fire = &self.0;
        let policy = Policy::from_params(fire.params.as_ref()).map_err(|e| {
            JobError::permanent(Error::invalid(format!("schedule {}: {e}", fire.schedule)))
        })?;
        let store = installed_store().ok_or_else(|| {
            JobError::permanent(
                "no backup store is installed in this worker (tenantplane_backup::jobs::install_store)",
            )
        })?;
        let report = apply(
            ctx.db(),
            store.as_ref(),
            &Scope::Selector(fire.selector.clone()),
            &policy,
            false,
            &Actor::system("retention"),
        )?;
        tracing::info!(schedule = %fire.schedule, run_id = fire.run_id, tenants = report.tenants_checked, deleted = report.deleted, kept = report.kept, errors = report.errors, "scheduled retention done");
        if let Some(first) = report.tenants.iter().flat_map(|t| &t.errors).next() {
            return Err(JobError::transient(format!(
                "{} of the backups to delete could not be deleted; backup {}: {}",
                report.errors, first.id, first.error
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use BackupState::{Completed, Failed, Pending, Running, Verified};

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn b(id: &str, when: &str, state: BackupState) -> Candidate {
        Candidate {
            id: id.into(),
            created_at: at(when),
            state,
            pinned: false,
        }
    }

    fn pinned(mut c: Candidate) -> Candidate {
        c.pinned = true;
        c
    }

    fn policy(keep_last: u32, daily: u32, weekly: u32, monthly: u32) -> Policy {
        Policy {
            keep_last,
            daily,
            weekly,
            monthly,
        }
    }

    /// (id, "keep"/"delete", reason), newest first.
    fn run(backups: &[Candidate], p: Policy) -> Vec<(String, &'static str, String)> {
        decide(backups, &p)
            .into_iter()
            .map(|d| {
                let a = match d.action {
                    Action::Keep => "keep",
                    Action::Delete => "delete",
                };
                (d.id, a, d.reason)
            })
            .collect()
    }

    fn expect(rows: &[(&str, &str, &str)]) -> Vec<(String, &'static str, String)> {
        rows.iter()
            .map(|(id, a, r)| {
                let a = if *a == "keep" { "keep" } else { "delete" };
                (id.to_string(), a, r.to_string())
            })
            .collect()
    }

    /// One backup a night at 02:00 UTC, `first` to `last` (inclusive),
    /// ids `YYYY-MM-DD`.
    fn nightly(first: &str, last: &str, state: BackupState) -> Vec<Candidate> {
        let mut day = at(&format!("{first} 02:00:00"));
        let end = at(&format!("{last} 02:00:00"));
        let mut out = Vec::new();
        while day <= end {
            out.push(Candidate {
                id: day.date().to_string(),
                created_at: day,
                state,
                pinned: false,
            });
            day += chrono::Duration::days(1);
        }
        out
    }

    fn deleted(d: &[(String, &'static str, String)]) -> Vec<String> {
        d.iter()
            .filter(|(_, a, _)| *a == "delete")
            .map(|(id, _, _)| id.clone())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_usable_ones() {
        let backups = [
            b("b1", "2026-11-01 02:00:00", Completed),
            b("b2", "2026-11-02 02:00:00", Completed),
            b("b3", "2026-11-03 02:00:00", Verified),
            b("b4", "2026-11-04 02:00:00", Completed),
            b("b5", "2026-11-05 02:00:00", Completed),
            b("b6", "2026-11-06 02:00:00", Verified),
        ];
        assert_eq!(
            run(&backups, policy(3, 0, 0, 0)),
            expect(&[
                ("b6", "keep", "newest verified"),
                ("b5", "keep", "keep-last"),
                ("b4", "keep", "keep-last"),
                ("b3", "delete", "not kept by the policy"),
                ("b2", "delete", "not kept by the policy"),
                ("b1", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn nothing_goes_while_only_the_oldest_is_verified() {
        // The issue's case: keep-last 2, ten backups, only the oldest
        // verified. Nothing newer than it is verified, so nothing goes.
        let mut backups = nightly("2026-11-01", "2026-11-10", Completed);
        backups[0].state = Verified;
        let d = run(&backups, policy(2, 0, 0, 0));
        assert_eq!(deleted(&d), Vec::<String>::new());
        assert_eq!(d[0], ("2026-11-10".into(), "keep", "keep-last".into()));
        assert_eq!(d[1], ("2026-11-09".into(), "keep", "keep-last".into()));
        for row in &d[2..9] {
            assert_eq!(row.2, "no newer verified backup", "{row:?}");
        }
        assert_eq!(
            d[9],
            ("2026-11-01".into(), "keep", "newest verified".into())
        );
    }

    #[test]
    fn only_backups_older_than_the_newest_verified_go() {
        // Verified in the middle: the newer unverified ones stay whatever
        // the policy; the older ones go.
        let mut backups = nightly("2026-11-01", "2026-11-08", Completed);
        backups[4].state = Verified; // 2026-11-05
        let d = run(&backups, policy(1, 0, 0, 0));
        assert_eq!(
            d,
            expect(&[
                ("2026-11-08", "keep", "keep-last"),
                ("2026-11-07", "keep", "no newer verified backup"),
                ("2026-11-06", "keep", "no newer verified backup"),
                ("2026-11-05", "keep", "newest verified"),
                ("2026-11-04", "delete", "not kept by the policy"),
                ("2026-11-03", "delete", "not kept by the policy"),
                ("2026-11-02", "delete", "not kept by the policy"),
                ("2026-11-01", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn without_a_verified_backup_nothing_goes() {
        let mut backups = nightly("2026-10-01", "2026-11-30", Completed);
        backups[3].state = Failed;
        let d = run(&backups, policy(1, 0, 0, 0));
        assert!(deleted(&d).is_empty(), "{d:?}");
        assert_eq!(d.len(), backups.len());
        assert!(d[1..]
            .iter()
            .all(|(_, _, r)| r == "no newer verified backup"));
    }

    #[test]
    fn no_backups_no_decisions() {
        assert!(decide(&[], &Policy::default()).is_empty());
    }

    #[test]
    fn daily_keeps_the_newest_of_each_utc_day() {
        let backups = [
            b("d1-a", "2026-11-26 01:00:00", Completed),
            b("d1-b", "2026-11-26 02:00:00", Completed),
            b("d1-c", "2026-11-26 23:59:59", Completed),
            b("d2-a", "2026-11-27 00:00:00", Completed),
            b("d2-b", "2026-11-27 12:00:00", Completed),
            b("d3", "2026-11-28 02:00:00", Completed),
            b("d4", "2026-11-29 02:00:00", Verified),
        ];
        assert_eq!(
            run(&backups, policy(0, 3, 0, 0)),
            expect(&[
                ("d4", "keep", "newest verified"),
                ("d3", "keep", "daily 2026-11-28"),
                ("d2-b", "keep", "daily 2026-11-27"),
                ("d2-a", "delete", "not kept by the policy"),
                ("d1-c", "delete", "not kept by the policy"),
                ("d1-b", "delete", "not kept by the policy"),
                ("d1-a", "delete", "not kept by the policy"),
            ])
        );
        // One more day: 23:59:59 and 00:00:00 are different UTC days.
        assert_eq!(
            run(&backups, policy(0, 4, 0, 0))[4],
            ("d1-c".into(), "keep", "daily 2026-11-26".into())
        );
    }

    #[test]
    fn days_without_backups_do_not_count() {
        // Three backups spread over a month: daily 3 keeps all three (the
        // newest 3 days *that have* a backup).
        let backups = [
            b("a", "2026-11-01 02:00:00", Completed),
            b("b", "2026-11-15 02:00:00", Completed),
            b("c", "2026-11-30 02:00:00", Verified),
            b("old", "2026-10-01 02:00:00", Completed),
        ];
        assert_eq!(
            run(&backups, policy(0, 3, 0, 0)),
            expect(&[
                ("c", "keep", "newest verified"),
                ("b", "keep", "daily 2026-11-15"),
                ("a", "keep", "daily 2026-11-01"),
                ("old", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_boundary() {
        // 2026-12-28 (Mon) … 2027-01-03 (Sun) is 2026-W53; 2027-01-04 (Mon)
        // starts 2027-W01; 2026-12-27 (Sun) ends 2026-W52.
        let backups = [
            b("w52-sun", "2026-12-27 23:00:00", Completed),
            b("w53-mon", "2026-12-28 02:00:00", Completed),
            b("w53-thu", "2026-12-31 02:00:00", Completed),
            b("w53-fri", "2027-01-01 02:00:00", Completed),
            b("w53-sun", "2027-01-03 02:00:00", Completed),
            b("w01-mon", "2027-01-04 02:00:00", Verified),
            b("w51", "2026-12-20 02:00:00", Completed),
        ];
        assert_eq!(
            run(&backups, policy(0, 0, 3, 0)),
            expect(&[
                ("w01-mon", "keep", "newest verified"),
                ("w53-sun", "keep", "weekly 2026-W53"),
                ("w53-fri", "delete", "not kept by the policy"),
                ("w53-thu", "delete", "not kept by the policy"),
                ("w53-mon", "delete", "not kept by the policy"),
                ("w52-sun", "keep", "weekly 2026-W52"),
                ("w51", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn weekly_labels_with_the_iso_year() {
        // 2025-12-29 (Mon) is in 2026-W01.
        let backups = [
            b("a", "2025-12-29 02:00:00", Completed),
            b("v", "2026-01-10 02:00:00", Verified),
        ];
        assert_eq!(
            run(&backups, policy(0, 0, 2, 0))[1],
            ("a".into(), "keep", "weekly 2026-W01".into())
        );
    }

    #[test]
    fn monthly_keeps_the_newest_of_each_month_across_the_year() {
        let backups = [
            b("nov-15", "2026-11-15 02:00:00", Completed),
            b("nov-30", "2026-11-30 02:00:00", Completed),
            b("dec-01", "2026-12-01 02:00:00", Completed),
            b("dec-31", "2026-12-31 23:59:59", Completed),
            b("jan-01", "2027-01-01 00:00:00", Completed),
            b("jan-20", "2027-01-20 02:00:00", Verified),
            b("oct-31", "2026-10-31 02:00:00", Completed),
        ];
        assert_eq!(
            run(&backups, policy(0, 0, 0, 3)),
            expect(&[
                ("jan-20", "keep", "newest verified"),
                ("jan-01", "delete", "not kept by the policy"),
                ("dec-31", "keep", "monthly 2026-12"),
                ("dec-01", "delete", "not kept by the policy"),
                ("nov-30", "keep", "monthly 2026-11"),
                ("nov-15", "delete", "not kept by the policy"),
                ("oct-31", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn the_rules_are_independent_and_the_first_reason_is_given() {
        // keep_last 1 and daily 2: the newest counts for both; the daily
        // rule still reaches back one more day.
        let backups = [
            b("x1", "2026-11-27 02:00:00", Completed),
            b("x2", "2026-11-28 01:00:00", Completed),
            b("x3", "2026-11-28 02:00:00", Completed),
            b("v", "2026-11-26 02:00:00", Verified),
        ];
        let mut all = backups.to_vec();
        all.push(b("y", "2026-11-29 02:00:00", Verified));
        assert_eq!(
            run(&all, policy(1, 2, 0, 0)),
            expect(&[
                ("y", "keep", "newest verified"),
                ("x3", "keep", "daily 2026-11-28"),
                ("x2", "delete", "not kept by the policy"),
                ("x1", "delete", "not kept by the policy"),
                ("v", "delete", "not kept by the policy"),
            ])
        );
        // Without the newest verified one, keep-last names the newest.
        let d = run(&backups, policy(1, 2, 0, 0));
        assert_eq!(d[0], ("x3".into(), "keep", "keep-last".into()));
        assert_eq!(
            d[1],
            ("x2".into(), "keep", "no newer verified backup".into())
        );
        assert_eq!(d[2], ("x1".into(), "keep", "daily 2026-11-27".into()));
    }

    #[test]
    fn the_defaults_over_seven_months_of_nightly_backups() {
        let mut backups = nightly("2026-05-01", "2026-11-28", Completed);
        backups.last_mut().unwrap().state = Verified;
        let d = run(&backups, Policy::default());
        let kept: Vec<(String, String)> = d
            .iter()
            .filter(|(_, a, _)| *a == "keep")
            .map(|(id, _, r)| (id.clone(), r.clone()))
            .collect();
        let want: Vec<(String, String)> = [
            ("2026-11-28", "newest verified"),
            ("2026-11-27", "keep-last"),
            ("2026-11-26", "keep-last"),
            ("2026-11-25", "keep-last"),
            ("2026-11-24", "keep-last"),
            ("2026-11-23", "keep-last"),
            ("2026-11-22", "keep-last"),
            ("2026-11-15", "weekly 2026-W46"),
            ("2026-11-08", "weekly 2026-W45"),
            ("2026-10-31", "monthly 2026-10"),
            ("2026-09-30", "monthly 2026-09"),
            ("2026-08-31", "monthly 2026-08"),
            ("2026-07-31", "monthly 2026-07"),
            ("2026-06-30", "monthly 2026-06"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(kept, want);
        assert_eq!(deleted(&d).len(), backups.len() - 14);
    }

    #[test]
    fn pinned_backups_are_never_deleted() {
        let backups = [
            pinned(b("old-pinned", "2026-01-01 02:00:00", Completed)),
            pinned(b("failed-pinned", "2026-02-01 02:00:00", Failed)),
            b("plain", "2026-03-01 02:00:00", Completed),
            pinned(b("newest", "2026-11-28 02:00:00", Verified)),
        ];
        assert_eq!(
            run(&backups, policy(1, 0, 0, 0)),
            expect(&[
                ("newest", "keep", "pinned"),
                ("plain", "delete", "not kept by the policy"),
                ("failed-pinned", "keep", "pinned"),
                ("old-pinned", "keep", "pinned"),
            ])
        );
    }

    #[test]
    fn pinned_backups_count_for_the_policy() {
        // A pinned backup is one of the newest N: keep-last 2 keeps it and
        // one more, not two more.
        let backups = [
            b("a", "2026-11-01 02:00:00", Completed),
            b("b", "2026-11-02 02:00:00", Completed),
            pinned(b("c", "2026-11-03 02:00:00", Completed)),
            b("v", "2026-11-04 02:00:00", Verified),
        ];
        assert_eq!(
            run(&backups, policy(2, 0, 0, 0)),
            expect(&[
                ("v", "keep", "newest verified"),
                ("c", "keep", "pinned"),
                ("b", "delete", "not kept by the policy"),
                ("a", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn only_the_newest_verified_is_protected() {
        let backups = [
            b("v1", "2026-11-01 02:00:00", Verified),
            b("v2", "2026-11-02 02:00:00", Verified),
            b("v3", "2026-11-03 02:00:00", Verified),
        ];
        assert_eq!(
            run(&backups, policy(1, 0, 0, 0)),
            expect(&[
                ("v3", "keep", "newest verified"),
                ("v2", "delete", "not kept by the policy"),
                ("v1", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn failed_backups_go_once_older_than_the_newest_verified() {
        let backups = [
            b("f-old", "2026-11-01 02:00:00", Failed),
            b("ok-old", "2026-11-02 02:00:00", Completed),
            b("v", "2026-11-03 02:00:00", Verified),
            b("f-new", "2026-11-04 02:00:00", Failed),
            b("c-new", "2026-11-05 02:00:00", Completed),
            b("f-newest", "2026-11-06 02:00:00", Failed),
        ];
        // Failed ones hold no data: they never fill keep-last (keep-last 2
        // is c-new and v) and never a daily bucket.
        assert_eq!(
            run(&backups, policy(2, 1, 0, 0)),
            expect(&[
                ("f-newest", "keep", "no newer verified backup"),
                ("c-new", "keep", "keep-last"),
                ("f-new", "keep", "no newer verified backup"),
                ("v", "keep", "newest verified"),
                ("ok-old", "delete", "not kept by the policy"),
                ("f-old", "delete", "failed"),
            ])
        );
        // However generous the policy, an old failed backup goes.
        let d = run(&backups, policy(1000, 1000, 1000, 1000));
        assert_eq!(deleted(&d), ["f-old"]);
    }

    #[test]
    fn backups_in_progress_are_never_touched() {
        let backups = [
            b("p-old", "2026-11-01 02:00:00", Pending),
            b("r-old", "2026-11-02 02:00:00", Running),
            b("c-old", "2026-11-03 02:00:00", Completed),
            b("v", "2026-11-04 02:00:00", Verified),
            b("r-new", "2026-11-05 02:00:00", Running),
        ];
        // Nor do they count as the newest N.
        assert_eq!(
            run(&backups, policy(1, 0, 0, 0)),
            expect(&[
                ("r-new", "keep", "in progress"),
                ("v", "keep", "newest verified"),
                ("c-old", "delete", "not kept by the policy"),
                ("r-old", "keep", "in progress"),
                ("p-old", "keep", "in progress"),
            ])
        );
    }

    #[test]
    fn ties_are_broken_by_id_and_never_count_as_newer() {
        let t = "2026-11-28 02:00:00";
        // Same time: the larger id is the newer one (the list's order).
        let backups = [
            b("a", t, Completed),
            b("b", t, Completed),
            b("v", "2026-11-29 02:00:00", Verified),
        ];
        assert_eq!(
            run(&backups, policy(2, 0, 0, 0)),
            expect(&[
                ("v", "keep", "newest verified"),
                ("b", "keep", "keep-last"),
                ("a", "delete", "not kept by the policy"),
            ])
        );
        // A verified backup taken at the same instant is not newer: the
        // completed one stays.
        let backups = [
            b("z", t, Completed),
            b("a", t, Completed),
            b("m", t, Verified),
        ];
        assert_eq!(
            run(&backups, policy(1, 0, 0, 0)),
            expect(&[
                ("z", "keep", "keep-last"),
                ("m", "keep", "newest verified"),
                ("a", "keep", "no newer verified backup"),
            ])
        );
        // Of two verified at the same instant, the larger id is the newest.
        let backups = [
            b("v1", t, Verified),
            b("v2", t, Verified),
            b("x", "2026-11-27 02:00:00", Completed),
        ];
        assert_eq!(
            run(&backups, policy(1, 0, 0, 0)),
            expect(&[
                ("v2", "keep", "newest verified"),
                ("v1", "keep", "no newer verified backup"),
                ("x", "delete", "not kept by the policy"),
            ])
        );
    }

    #[test]
    fn the_input_order_does_not_matter() {
        let mut backups = nightly("2026-09-01", "2026-11-28", Completed);
        backups[40].state = Verified;
        backups[70].state = Failed;
        backups[20].pinned = true;
        let forward = decide(&backups, &Policy::default());
        backups.reverse();
        backups.swap(3, 50);
        assert_eq!(decide(&backups, &Policy::default()), forward);
        assert_eq!(forward.len(), backups.len());
        assert!(forward
            .windows(2)
            .all(|w| w[0].created_at > w[1].created_at));
    }

    // The policy as JSON.

    fn parse(v: Value) -> std::result::Result<Policy, String> {
        Policy::from_params(Some(&v)).map_err(|e| e.to_string())
    }

    #[test]
    fn params_absent_or_partial_take_the_defaults() {
        assert_eq!(Policy::from_params(None).unwrap(), Policy::default());
        assert_eq!(
            Policy::from_params(Some(&Value::Null)).unwrap(),
            Policy::default()
        );
        assert_eq!(parse(serde_json::json!({})).unwrap(), Policy::default());
        assert_eq!(
            parse(serde_json::json!({"keep_last": 2, "monthly": 0})).unwrap(),
            policy(2, 7, 4, 0)
        );
        assert_eq!(
            parse(serde_json::json!({"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 1000}))
                .unwrap(),
            policy(0, 0, 0, 1000)
        );
        assert_eq!(Policy::default(), policy(7, 7, 4, 6));
        // It serializes as it parses.
        let p = policy(1, 2, 3, 4);
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"keep_last": 1, "daily": 2, "weekly": 3, "monthly": 4})
        );
        assert_eq!(parse(json).unwrap(), p);
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        let cases = [
            (serde_json::json!({"keep_last": -1}), "retention keep_last is -1: a count cannot be negative"),
            (serde_json::json!({"weekly": -0.5}), "retention weekly is -0.5: a count cannot be negative"),
            (serde_json::json!({"daily": 1.5}), "retention daily is 1.5: it must be a whole number from 0 to 1000"),
            (serde_json::json!({"daily": "7"}), "retention daily is \"7\": it must be a whole number"),
            (serde_json::json!({"daily": null}), "retention daily is null: it must be a whole number"),
            (serde_json::json!({"monthly": 1001}), "retention monthly is 1001: at most 1000"),
            (serde_json::json!({"monthly": 5_000_000_000u64}), "at most 1000"),
            (serde_json::json!({"keep_daily": 7}), "unknown field `keep_daily`, expected one of `keep_last`, `daily`, `weekly`, `monthly`"),
            (
                serde_json::json!({"keep_last": 0, "daily": 0, "weekly": 0, "monthly": 0}),
                "a retention policy that keeps nothing is refused",
            ),
            (serde_json::json!([7]), "a JSON object like"),
            (serde_json::json!(7), "a JSON object like"),
        ];
        for (params, want) in cases {
            let err = parse(params.clone()).unwrap_err();
            assert!(
                err.starts_with("invalid retention params: "),
                "{params}: {err}"
            );
            assert!(err.contains(want), "{params}: {err}");
        }
        // From a request body too (serde_json adds the position).
        let err = serde_json::from_str::<Policy>(r#"{"keep_last": -3}"#).unwrap_err();
        assert!(
            err.to_string().contains("a count cannot be negative"),
            "{err}"
        );
    }

    #[test]
    fn policies_built_in_code_are_validated() {
        assert!(validate(&Policy::default()).is_ok());
        assert!(validate(&policy(0, 0, 0, 1)).is_ok());
        let err = validate(&policy(0, 0, 0, 0)).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().contains("keeps nothing"), "{err}");
        let err = validate(&policy(1001, 0, 0, 0)).unwrap_err();
        assert!(
            err.to_string().contains("keep_last is 1001: at most 1000"),
            "{err}"
        );
    }
}
