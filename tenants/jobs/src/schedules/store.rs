//! The `schedules` rows: checks, create/get/list/patch/delete (each change
//! audited in its own transaction), the default schedules, and the runs view.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::error::{DbError, Error, Result};
use tenantplane_control_db::schema::{audit_log, jobs, schedule_runs, schedules};
use tenantplane_control_db::states::{MissedPolicy, ScheduleRunState};
use tenantplane_control_db::{validate, write_tx, ControlConnection, ControlDb};

use super::cron::Timetable;
use super::{NewSchedule, Schedule, SchedulePatch, ScheduleRun, Selector, SCHEDULABLE_KINDS};

/// `params` holds at most this much JSON.
const PARAMS_MAX: usize = 16 * 1024;

/// A `schedules` row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = schedules)]
pub(crate) struct ScheduleRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) cron: String,
    pub(crate) timezone: String,
    pub(crate) job: String,
    pub(crate) selector: Option<String>,
    pub(crate) params: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) missed: String,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
    pub(crate) last_fired_at: Option<NaiveDateTime>,
}

impl ScheduleRow {
    fn corrupt(&self, what: &str, why: impl std::fmt::Display) -> Error {
        Error::control(
            format!("reading schedule {}", self.name),
            DbError::State(format!("stored {what} does not parse: {why}")),
        )
    }

    pub(crate) fn selector(&self) -> Result<Option<Selector>> {
        self.selector
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| self.corrupt("selector", e))
    }

    pub(crate) fn params(&self) -> Result<Option<serde_json::Value>> {
        self.params
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| self.corrupt("params", e))
    }

    pub(crate) fn policy(&self) -> Result<MissedPolicy> {
        parse_missed(&self.missed).map_err(|e| self.corrupt("missed policy", e))
    }

    /// Fire times after this are due.
    pub(crate) fn fired_until(&self) -> NaiveDateTime {
        self.last_fired_at.unwrap_or(self.created_at)
    }

    fn view(&self, now: NaiveDateTime) -> Result<Schedule> {
        let next_fire_at = if self.enabled {
            Timetable::parse(&self.cron, &self.timezone)
                .ok()
                .and_then(|t| t.next_after(now.max(self.fired_until())))
        } else {
            None
        };
        Ok(Schedule {
            name: self.name.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            job: self.job.clone(),
            selector: self.selector()?,
            params: self.params()?,
            enabled: self.enabled,
            missed: self.missed.clone(),
            next_fire_at,
            last_fired_at: self.last_fired_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = schedules)]
struct NewRow<'a> {
    name: &'a str,
    cron: &'a str,
    timezone: &'a str,
    job: &'a str,
    selector: Option<String>,
    params: Option<String>,
    enabled: bool,
    missed: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// A schedule name: a DNS label of 1 to 63 characters.
pub fn check_name(name: &str) -> Result<()> {
    validate::server_name(name).map_err(|_| {
        Error::invalid(format!(
            "invalid schedule name {name:?}: 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
        ))
    })
}

/// One of [`SCHEDULABLE_KINDS`].
pub fn check_job(job: &str) -> Result<()> {
    if SCHEDULABLE_KINDS.contains(&job) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "unknown job {job:?}: a schedule starts one of {SCHEDULABLE_KINDS:?}"
        )))
    }
}

/// A JSON object of at most 16 KiB.
pub fn check_params(params: &serde_json::Value) -> Result<()> {
    if !params.is_object() {
        return Err(Error::invalid(
            "params must be a JSON object (job-specific settings)",
        ));
    }
    if params.to_string().len() > PARAMS_MAX {
        return Err(Error::invalid(format!(
            "params hold more than {PARAMS_MAX} bytes of JSON"
        )));
    }
    Ok(())
}

/// `skip` or `run_once`.
pub fn parse_missed(s: &str) -> Result<MissedPolicy> {
    MissedPolicy::ALL
        .iter()
        .copied()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            Error::invalid(format!(
                "invalid missed policy {s:?}: one of {:?}",
                MissedPolicy::names()
            ))
        })
}

/// Checks an expression and zone together; the zone comes back in its
/// canonical spelling. An expression that never fires again is refused.
fn check_timing(cron: &str, timezone: &str, now: NaiveDateTime) -> Result<String> {
    let table = Timetable::parse(cron, timezone)?;
    if table.next_after(now).is_none() {
        return Err(Error::invalid(format!(
            "cron expression {cron:?} never fires after now"
        )));
    }
    Ok(super::cron::parse_timezone(timezone)?.name().to_string())
}

fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::invalid(format!("{what} is not JSON: {e}")))
}

fn now() -> NaiveDateTime {
    // PostgreSQL keeps microseconds: store the same instant on both backends.
    Utc::now().naive_utc().trunc_subsecs(6)
}

fn find(conn: &mut ControlConnection, name: &str) -> Result<ScheduleRow> {
    schedules::table
        .filter(schedules::name.eq(name))
        .select(ScheduleRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("schedule", name))
}

/// Creates a schedule; fire times count from now. A taken name is a
/// conflict.
pub fn create(db: &ControlDb, actor: &Actor, new: NewSchedule) -> Result<Schedule> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| insert(conn, actor, &new))?
        .ok_or_else(|| Error::Conflict(format!("schedule {:?} already exists", new.name)))
}

/// Inserts a checked schedule with its audit entry; `None` when the name is
/// taken (nothing written).
fn insert(
    conn: &mut ControlConnection,
    actor: &Actor,
    new: &NewSchedule,
) -> Result<Option<Schedule>> {
    let at = now();
    check_name(&new.name)?;
    check_job(&new.job)?;
    let timezone = check_timing(&new.cron, new.timezone.as_deref().unwrap_or("UTC"), at)?;
    if let Some(s) = &new.selector {
        validate::selector(s)?;
    }
    if let Some(p) = &new.params {
        check_params(p)?;
    }
    let missed = parse_missed(new.missed.as_deref().unwrap_or("skip"))?;
    let row = NewRow {
        name: &new.name,
        cron: new.cron.trim(),
        timezone: &timezone,
        job: &new.job,
        selector: new
            .selector
            .as_ref()
            .map(|s| to_json(s, "selector"))
            .transpose()?,
        params: new
            .params
            .as_ref()
            .map(|p| to_json(p, "params"))
            .transpose()?,
        enabled: new.enabled.unwrap_or(true),
        missed: missed.as_str(),
        created_at: at,
        updated_at: at,
    };
    // ON CONFLICT DO NOTHING: a taken name must not abort the caller's
    // PostgreSQL transaction (ensure_defaults runs several in one).
    let insert = diesel::insert_into(schedules::table)
        .values(&row)
        .on_conflict_do_nothing()
        .returning(schedules::id);
    let id: Option<i64> = match conn {
        ControlConnection::Postgres(c) => insert.get_result(c).optional()?,
        ControlConnection::Sqlite(c) => insert.get_result(c).optional()?,
    };
    if id.is_none() {
        return Ok(None);
    }
    let view = find(conn, &new.name)?.view(at)?;
    audit::record(
        conn,
        actor,
        Change {
            action: "schedule.create",
            resource_type: "schedule",
            resource_id: Some(&new.name),
            tenant_id: None,
            before: None,
            after: audit::snapshot(&view),
        },
    )?;
    tracing::info!(schedule = %new.name, cron = %row.cron, timezone, job = %new.job, "schedule created");
    Ok(Some(view))
}

/// One schedule by name.
pub fn get(db: &ControlDb, name: &str) -> Result<Schedule> {
    let mut conn = db.conn()?;
    find(&mut conn, name)?.view(now())
}

/// Every schedule, by name.
pub fn list(db: &ControlDb) -> Result<Vec<Schedule>> {
    let mut conn = db.conn()?;
    let rows: Vec<ScheduleRow> = schedules::table
        .select(ScheduleRow::as_select())
        .order(schedules::name)
        .load(&mut conn)?;
    let at = now();
    rows.iter().map(|r| r.view(at)).collect()
}

/// Changes what the patch names. A new expression or zone, or enabling a
/// disabled schedule, sets `last_fired_at` to now: fire times before the
/// change are neither run nor recorded as missed.
pub fn patch(db: &ControlDb, actor: &Actor, name: &str, patch: SchedulePatch) -> Result<Schedule> {
    let at = now();
    if let Some(s) = patch.selector.as_ref().and_then(Option::as_ref) {
        validate::selector(s)?;
    }
    if let Some(p) = patch.params.as_ref().and_then(Option::as_ref) {
        check_params(p)?;
    }
    let missed = patch.missed.as_deref().map(parse_missed).transpose()?;
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let row = find(conn, name)?;
        let before = row.view(at)?;
        let cron = patch.cron.as_deref().map(str::trim).unwrap_or(&row.cron);
        let timezone = check_timing(cron, patch.timezone.as_deref().unwrap_or(&row.timezone), at)?;
        let enabled = patch.enabled.unwrap_or(row.enabled);
        let restart = cron != row.cron || timezone != row.timezone || (enabled && !row.enabled);
        let selector = match &patch.selector {
            Some(s) => s.as_ref().map(|s| to_json(s, "selector")).transpose()?,
            None => row.selector.clone(),
        };
        let params = match &patch.params {
            Some(p) => p.as_ref().map(|p| to_json(p, "params")).transpose()?,
            None => row.params.clone(),
        };
        diesel::update(schedules::table.find(row.id))
            .set((
                schedules::cron.eq(cron),
                schedules::timezone.eq(&timezone),
                schedules::enabled.eq(enabled),
                schedules::missed.eq(missed.map_or(row.missed.clone(), |m| m.as_str().to_string())),
                schedules::selector.eq(selector),
                schedules::params.eq(params),
                schedules::updated_at.eq(at),
                schedules::last_fired_at.eq(if restart { Some(at) } else { row.last_fired_at }),
            ))
            .execute(conn)?;
        let after = find(conn, name)?.view(at)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "schedule.update",
                resource_type: "schedule",
                resource_id: Some(name),
                tenant_id: None,
                before: audit::snapshot(&before),
                after: audit::snapshot(&after),
            },
        )?;
        tracing::info!(schedule = name, restart, "schedule changed");
        Ok(after)
    })
}

/// Deletes a schedule and its runs (the jobs it queued stay).
pub fn delete(db: &ControlDb, actor: &Actor, name: &str) -> Result<()> {
    let at = now();
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let row = find(conn, name)?;
        let before = row.view(at)?;
        diesel::delete(schedule_runs::table.filter(schedule_runs::schedule_id.eq(row.id)))
            .execute(conn)?;
        diesel::delete(schedules::table.find(row.id)).execute(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "schedule.delete",
                resource_type: "schedule",
                resource_id: Some(name),
                tenant_id: None,
                before: audit::snapshot(&before),
                after: None,
            },
        )?;
        tracing::info!(schedule = name, "schedule deleted");
        Ok(())
    })
}

/// The schedules a fresh control plane starts with, all tenants each, run
/// once after downtime (a backup that missed its night still runs).
pub fn defaults() -> Vec<NewSchedule> {
    let all = || {
        Some(Selector {
            all: Some(true),
            ..Selector::default()
        })
    };
    let schedule = |name: &str, cron: &str, job: &str| NewSchedule {
        name: name.into(),
        cron: cron.into(),
        timezone: Some("UTC".into()),
        job: job.into(),
        selector: all(),
        params: None,
        enabled: Some(true),
        missed: Some(MissedPolicy::RunOnce.as_str().into()),
    };
    vec![
        schedule("nightly-backup", "0 2 * * *", "backup"),
        schedule("daily-retention", "0 4 * * *", "retention"),
        schedule("weekly-restore-drill", "0 5 * * 0", "verify"),
    ]
}

/// Creates each default schedule that never existed: one whose name the
/// audit log already mentions (created before, maybe deleted by an
/// operator since) is left alone, so a deleted default stays deleted.
/// Idempotent and safe to race: a name another process took meanwhile is
/// skipped. Returns the names created.
pub fn ensure_defaults(db: &ControlDb) -> Result<Vec<String>> {
    let actor = Actor::system("schedules");
    let mut created = Vec::new();
    let mut conn = db.conn()?;
    for new in defaults() {
        let made = write_tx(&mut conn, None, |conn| {
            let known: i64 = audit_log::table
                .filter(audit_log::resource_type.eq("schedule"))
                .filter(audit_log::resource_id.eq(&new.name))
                .count()
                .get_result(conn)?;
            if known > 0 {
                return Ok(false);
            }
            Ok(insert(conn, &actor, &new)?.is_some())
        })?;
        if made {
            created.push(new.name);
        }
    }
    Ok(created)
}

/// A `schedule_runs` row with its job's state.
type RunRow = (
    i64,
    NaiveDateTime,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    NaiveDateTime,
);

/// The runs of a schedule, newest first: `limit` (1 to 1000) of them, with
/// ids below `before` when given (the next page after the last id seen).
/// Started runs show their job's state and latest error.
pub fn list_runs(
    db: &ControlDb,
    schedule: &str,
    limit: i64,
    before: Option<i64>,
) -> Result<Vec<ScheduleRun>> {
    let mut conn = db.conn()?;
    let row = find(&mut conn, schedule)?;
    let mut query = schedule_runs::table
        .left_join(jobs::table)
        .filter(schedule_runs::schedule_id.eq(row.id))
        .select((
            schedule_runs::id,
            schedule_runs::fire_at,
            schedule_runs::state,
            schedule_runs::job_id,
            jobs::state.nullable(),
            jobs::last_error.nullable(),
            schedule_runs::note,
            schedule_runs::decided_at,
        ))
        .order(schedule_runs::id.desc())
        .limit(limit.clamp(1, 1000))
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(schedule_runs::id.lt(before));
    }
    let rows: Vec<RunRow> = query.load(&mut conn)?;
    rows.into_iter()
        .map(
            |(id, fire_at, state, job_id, job_state, job_error, note, decided_at)| {
                state.parse::<ScheduleRunState>().map_err(|_| {
                    Error::control(
                        format!("reading run {id} of schedule {schedule}"),
                        DbError::State(format!("unknown run state {state:?}")),
                    )
                })?;
                Ok(ScheduleRun {
                    id,
                    fire_at,
                    state,
                    job_id,
                    job_state,
                    job_error,
                    note,
                    decided_at,
                })
            },
        )
        .collect()
}

/// Removes runs decided before `before`, except each schedule's newest
/// started run (the overlap check looks at it). A per-second schedule
/// decides 86,400 runs a day; the worker prunes them with old jobs.
pub fn prune_runs(db: &ControlDb, before: NaiveDateTime) -> Result<usize> {
    let mut conn = db.conn()?;
    let keep: Vec<Option<i64>> = schedule_runs::table
        .filter(schedule_runs::state.eq(ScheduleRunState::Started.as_str()))
        .group_by(schedule_runs::schedule_id)
        .select(diesel::dsl::max(schedule_runs::id))
        .load(&mut conn)?;
    let keep: Vec<i64> = keep.into_iter().flatten().collect();
    Ok(diesel::delete(
        schedule_runs::table
            .filter(schedule_runs::decided_at.lt(before))
            .filter(schedule_runs::id.ne_all(keep)),
    )
    .execute(&mut conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_jobs_selectors_params_policies() {
        for good in ["a", "nightly-backup", "x1", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a b", &"a".repeat(64)] {
            let e = check_name(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|m| m.contains("schedule name")),
                "{bad}: {e:?}"
            );
        }
        for kind in SCHEDULABLE_KINDS {
            assert!(check_job(kind).is_ok());
        }
        assert!(check_job("jobs.prune").is_err());
        assert!(check_job("Backup").is_err());

        let all = Selector {
            all: Some(true),
            ..Selector::default()
        };
        assert!(validate::selector(&all).is_ok());
        assert!(validate::selector(&Selector::default()).is_err());
        let no = Selector {
            all: Some(false),
            ..Selector::default()
        };
        assert!(validate::selector(&no).is_err());
        let empty_list = Selector {
            plans: Some(vec![]),
            ..Selector::default()
        };
        assert!(validate::selector(&empty_list).is_err());
        let bad_label = Selector {
            labels: Some([("a b".to_string(), "x".to_string())].into()),
            ..Selector::default()
        };
        assert!(validate::selector(&bad_label).is_err());

        assert!(check_params(&serde_json::json!({"keep": 7})).is_ok());
        assert!(check_params(&serde_json::json!([1])).is_err());
        assert!(check_params(&serde_json::json!({"x": "y".repeat(PARAMS_MAX)})).is_err());

        assert_eq!(parse_missed("skip").ok(), Some(MissedPolicy::Skip));
        assert_eq!(parse_missed("run_once").ok(), Some(MissedPolicy::RunOnce));
        let e = parse_missed("later").err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("missed policy") && m.contains("run_once")));
    }

    #[test]
    fn defaults_are_valid_schedules() {
        let at = now();
        for d in defaults() {
            check_name(&d.name).unwrap();
            check_job(&d.job).unwrap();
            check_timing(&d.cron, d.timezone.as_deref().unwrap_or("UTC"), at).unwrap();
        }
        let drill = defaults()
            .into_iter()
            .find(|d| d.name == "weekly-restore-drill");
        let t = Timetable::parse(&drill.unwrap().cron, "UTC").unwrap();
        let next = t.next_after(at).unwrap();
        assert_eq!(next.format("%a %H:%M").to_string(), "Sun 05:00");
    }
}
