//! `/console`: the fleet at a glance.

use actix_web::{get, web, HttpResponse};
use askama::Template;
use tenantplane_backup::BackupFilter;
use tenantplane_control_db::states::DeliveryState;
use tenantplane_fleet::registry;
use tenantplane_rollout::rollouts;

use super::page::{html, ConsoleError, Layout};
use super::rollouts::RolloutRow;
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

/// One bar of a bar chart: label, count, width in percent of the largest.
pub struct Bar {
    pub label: String,
    pub count: i64,
    pub width: u32,
}

pub fn bars(counts: &[(String, i64)]) -> Vec<Bar> {
    let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    counts
        .iter()
        .map(|(label, n)| Bar {
            label: label.clone(),
            count: *n,
            // Whole percents in steps of 5, so the stylesheet has a class
            // per width (no inline style under the CSP).
            width: (((*n as f64 / max as f64) * 20.0).ceil() as u32) * 5,
        })
        .collect()
}

pub struct Attention {
    pub what: String,
    pub link: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    layout: Layout,
    total: i64,
    by_status: Vec<Bar>,
    by_plan: Vec<Bar>,
    by_server: Vec<Bar>,
    by_version: Vec<Bar>,
    running: Vec<RolloutRow>,
    attention: Vec<Attention>,
    head: String,
}

#[get("")]
pub async fn overview(
    state: web::Data<AppState>,
    s: ConsoleSession,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let (counts, active, troubled, failed_backups, dead) = blocking(move || {
        let counts = registry::counts(&db)?;
        let mut active = rollouts::list(&db, Some("running"), 50)?;
        active.extend(rollouts::list(&db, Some("paused"), 50)?);
        let mut troubled = rollouts::list(&db, Some("halted"), 50)?;
        troubled.extend(rollouts::list(&db, Some("failed"), 20)?);
        let failed_backups = tenantplane_backup::list(
            &db,
            &BackupFilter {
                state: Some("failed".into()),
                limit: Some(20),
                ..BackupFilter::default()
            },
        )?;
        let dead = tenantplane_notify::deliveries::list(
            &db,
            &tenantplane_notify::deliveries::Filter {
                state: Some(DeliveryState::Dead),
                limit: 20,
                ..Default::default()
            },
        )?;
        Ok((counts, active, troubled, failed_backups, dead))
    })
    .await?;
    let mut attention: Vec<Attention> = troubled
        .iter()
        .map(|r| Attention {
            what: format!("Rollout to {} is {}", r.target, r.state),
            link: format!("/console/rollouts/{}", r.id),
            detail: r
                .halt_reason
                .clone()
                .unwrap_or_else(|| format!("{} failed tenant(s)", r.counts.failed)),
        })
        .collect();
    attention.extend(failed_backups.items.iter().map(|b| {
        Attention {
            what: "Backup failed".to_string(),
            link: format!("/console/tenants/{}", b.tenant_id),
            detail: b
                .error
                .as_deref()
                .or(b.verify_error.as_deref())
                .unwrap_or("no error recorded")
                .chars()
                .take(200)
                .collect(),
        }
    }));
    attention.extend(dead.items.iter().map(|d| Attention {
        what: format!("Delivery #{} of {} is dead", d.id, d.kind),
        link: format!("/console/outbox/{}", d.id),
        detail: format!(
            "{} to {}: {}",
            d.channel,
            d.target,
            d.last_error
                .as_deref()
                .unwrap_or("no error recorded")
                .chars()
                .take(200)
                .collect::<String>()
        ),
    }));
    let head = tenantplane_migrations::catalogue::head()
        .map(str::to_string)
        .unwrap_or_default();
    let behind: i64 = counts
        .by_version
        .iter()
        .filter(|(v, _)| *v != head)
        .map(|(_, n)| n)
        .sum();
    if behind > 0 {
        attention.push(Attention {
            what: format!("{behind} tenant(s) behind head"),
            link: "/console/rollouts/new".to_string(),
            detail: format!("head is {head}; roll them forward"),
        });
    }
    html(&Overview {
        head,
        layout: Layout::new("Fleet overview", Some(s.csrf()), "overview"),
        total: counts.total,
        by_status: bars(&counts.by_status),
        by_plan: bars(&counts.by_plan),
        by_server: bars(&counts.by_server),
        by_version: bars(&counts.by_version),
        running: active.iter().map(RolloutRow::from).collect(),
        attention,
    })
}
