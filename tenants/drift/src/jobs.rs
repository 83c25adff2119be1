//! The drift jobs: `drift` checks a selection of tenants (it queues one
//! `drift.tenant` job per tenant, so the checks run on every worker's
//! runner threads with their own retries), started by `POST /v1/drift` or by
//! a schedule of job `drift`; `drift.tenant` checks one tenant and records
//! the result.

use serde::{Deserialize, Serialize};
use tenantplane_api_types::drift::DriftQueued;
use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::db::{write_tx, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::validate;
use tenantplane_fleet::selector::select_tenants;
use tenantplane_jobs::{enqueue, Job, JobContext, JobError, Registry};

use crate::check::check_tenant;

/// Registers `drift` and `drift.tenant`.
pub fn register(r: &mut Registry) -> &mut Registry {
    r.register::<DriftJob>().register::<TenantDriftJob>()
}

/// Checks the selected tenants (all without a selector). Its payload reads
/// a schedule's `schedules::Fire` too: the fields it does not name are
/// ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftJob {
    #[serde(default)]
    pub selector: Option<Selector>,
    /// The schedule that fired it, with its run (a schedule's job).
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub run_id: Option<i64>,
    /// A fresh id per `POST /v1/drift`, so two requests are two jobs.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Job for DriftJob {
    const KIND: &'static str = "drift";

    fn dedup_key(&self) -> Option<String> {
        match (&self.schedule, self.run_id, &self.request_id) {
            (Some(s), Some(run), _) => Some(format!("{s}:{run}")),
            (_, _, Some(id)) => Some(id.clone()),
            _ => None,
        }
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let n = enqueue_checks(ctx.db(), self.selector.as_ref())?;
        tracing::info!(schedule = ?self.schedule, queued = n, "drift checks queued");
        Ok(())
    }
}

/// Checks one tenant and records the result. At most one is queued per
/// tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantDriftJob {
    pub tenant_id: String,
}

impl Job for TenantDriftJob {
    const KIND: &'static str = "drift.tenant";
    const MAX_ATTEMPTS: i32 = 3;

    fn dedup_key(&self) -> Option<String> {
        Some(self.tenant_id.clone())
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        match check_tenant(ctx.db(), &self.tenant_id) {
            Ok(r) => {
                if r.drifted {
                    tracing::warn!(tenant_id = %r.tenant_id, slug = %r.slug,
                        differences = r.differences.len(), "tenant schema drifted");
                }
                Ok(())
            }
            // Deleted meanwhile: nothing to check.
            Err(Error::NotFound { .. }) => Ok(()),
            // Still provisioning: it will not be for long.
            Err(e @ Error::Conflict(_)) => Err(JobError::transient(e)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Queues a [`TenantDriftJob`] for every selected tenant; returns how many
/// were new (a tenant whose check is already queued is skipped).
pub fn enqueue_checks(db: &ControlDb, selector: Option<&Selector>) -> Result<usize> {
    let mut conn = db.conn()?;
    let ids = select_tenants(&mut conn, selector)?;
    let mut queued = 0;
    for chunk in ids.chunks(500) {
        queued += write_tx(&mut conn, None, |conn| {
            let mut n = 0;
            for id in chunk {
                let job = TenantDriftJob {
                    tenant_id: id.clone(),
                };
                if enqueue(conn, &job)?.is_new() {
                    n += 1;
                }
            }
            Ok(n)
        })?;
    }
    Ok(queued)
}

/// `POST /v1/drift`: checks the selector (unknown names are refused before
/// anything is queued) and queues one [`DriftJob`] over it.
pub fn queue(db: &ControlDb, selector: &Selector) -> Result<DriftQueued> {
    validate::selector(selector)?;
    let mut conn = db.conn()?;
    let tenants = select_tenants(&mut conn, Some(selector))?.len();
    if tenants == 0 {
        return Err(Error::invalid("the selector matches no tenant"));
    }
    let job = DriftJob {
        selector: Some(selector.clone()),
        schedule: None,
        run_id: None,
        request_id: Some(uuid::Uuid::new_v4().to_string()),
    };
    let job_id = write_tx(&mut conn, None, |conn| Ok(enqueue(conn, &job)?.id()))?;
    Ok(DriftQueued { job_id, tenants })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_fire_is_a_drift_payload() {
        let fire = serde_json::json!({
            "schedule": "nightly-drift", "run_id": 7, "fire_at": "2026-11-29T15:00:00",
            "selector": {"labels": {"tier": "gold"}}, "params": null
        });
        let job: DriftJob = serde_json::from_value(fire).expect("parses");
        assert_eq!(job.dedup_key().as_deref(), Some("nightly-drift:7"));
        assert!(job.selector.is_some_and(|s| s.labels.is_some()));
    }
}
