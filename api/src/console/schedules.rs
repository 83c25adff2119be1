//! Schedules and backups, fleet-wide: each schedule with its next fire time
//! and its last run's outcome, the newest dead jobs of any kind, and the
//! recent backups of every tenant with the failed ones marked (filterable
//! by state, paged by cursor).

use actix_web::{get, web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use tenantplane_backup::{self as backup, BackupFilter};
use tenantplane_control_db::states::JobState;
use tenantplane_jobs::queue::{self, JobFilter};
use tenantplane_jobs::schedules;

use super::backups::{clip, when, BackupLine};
use super::page::{html, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

pub struct ScheduleLine {
    name: String,
    cron: String,
    timezone: String,
    job: String,
    enabled: bool,
    next: String,
    last: String,
    /// The last run's outcome: `started` + its job's state, `missed`, …
    outcome: String,
    /// The last run's job error, if any.
    error: String,
    /// The last run went wrong (job dead, or missed).
    bad: bool,
}

/// A job that ran out of attempts (or failed for good).
pub struct JobLine {
    id: i64,
    kind: String,
    attempts: String,
    finished: String,
    error: String,
}

#[derive(Deserialize, Default)]
pub struct Query {
    /// A backup state, empty for all.
    #[serde(default)]
    state: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "console/schedules.html")]
struct SchedulesPage {
    layout: Layout,
    schedules: Vec<ScheduleLine>,
    dead_jobs: Vec<JobLine>,
    backups: Vec<(BackupLine, String)>,
    state: String,
    next: Option<String>,
    failed: usize,
}

#[get("/schedules")]
pub async fn page(
    state: web::Data<AppState>,
    s: ConsoleSession,
    q: web::Query<Query>,
) -> Result<HttpResponse, ConsoleError> {
    let q = q.into_inner();
    let db = state.db.clone();
    let filter = BackupFilter {
        tenant: None,
        state: Some(q.state.clone()).filter(|s| !s.is_empty()),
        limit: Some(50),
        cursor: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
    };
    let (lines, dead, page, slugs) = blocking(move || {
        let mut lines = Vec::new();
        for sc in schedules::list(&db)? {
            let last = schedules::list_runs(&db, &sc.name, 1, None)?
                .into_iter()
                .next();
            lines.push((sc, last));
        }
        let dead = queue::list(
            &db,
            &JobFilter {
                state: Some(JobState::Dead),
                limit: 20,
                ..JobFilter::default()
            },
        )?;
        let page = backup::list(&db, &filter)?;
        // Tenant slugs for the backups shown (deleted tenants included).
        let mut conn = db.conn()?;
        let mut slugs = Vec::new();
        for b in &page.items {
            let slug = tenantplane_fleet::registry::find_any(&mut conn, &b.tenant_id)
                .map(|t| t.slug)
                .unwrap_or_else(|_| b.tenant_id.clone());
            slugs.push(slug);
        }
        Ok((lines, dead, page, slugs))
    })
    .await?;
    let schedules = lines
        .into_iter()
        .map(|(sc, last)| {
            let (last_at, outcome, error, bad) = match last {
                None => ("never".to_string(), String::new(), String::new(), false),
                Some(r) => {
                    let outcome = match &r.job_state {
                        Some(js) => format!("{}: job {js}", r.state),
                        None => r.state.clone(),
                    };
                    let bad = r.state == "missed" || r.job_state.as_deref() == Some("dead");
                    (
                        when(r.fire_at),
                        outcome,
                        r.job_error
                            .as_deref()
                            .map(|e| clip(e, 200))
                            .unwrap_or_default(),
                        bad,
                    )
                }
            };
            ScheduleLine {
                next: sc.next_fire_at.map(when).unwrap_or_else(|| "never".into()),
                name: sc.name,
                cron: sc.cron,
                timezone: sc.timezone,
                job: sc.job,
                enabled: sc.enabled,
                last: last_at,
                outcome,
                error,
                bad,
            }
        })
        .collect();
    let backups: Vec<(BackupLine, String)> = page
        .items
        .into_iter()
        .map(BackupLine::from)
        .zip(slugs)
        .collect();
    html(&SchedulesPage {
        layout: Layout::new("Schedules and backups", Some(s.csrf()), "schedules"),
        failed: backups.iter().filter(|(b, _)| b.state == "failed").count(),
        schedules,
        dead_jobs: dead
            .into_iter()
            .map(|j| JobLine {
                id: j.id,
                attempts: format!("{}/{}", j.attempts, j.max_attempts),
                finished: j.finished_at.map(when).unwrap_or_default(),
                error: j
                    .last_error
                    .as_deref()
                    .map(|e| clip(e, 300))
                    .unwrap_or_default(),
                kind: j.kind,
            })
            .collect(),
        backups,
        state: q.state,
        next: page.next_cursor,
    })
}
