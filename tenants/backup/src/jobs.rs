//! The backup jobs: one tenant's backup, one backup's verification, and the
//! scheduled fan-outs (`backup`, `verify`) that a schedule's fire starts.
//!
//! Jobs find the artifact store through [`install_store`], which the worker
//! calls once at start (a job's payload and context carry only the control
//! database).

use std::sync::Arc;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_api_types::rollouts::Selector;
use tenantplane_control_db::db::{write_tx, ControlConnection, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::{backups, plans, tenants};
use tenantplane_control_db::states::BackupState;
use tenantplane_fleet::registry::with_labels;
use tenantplane_fleet::servers;
use tenantplane_jobs::schedules::Fire;
use tenantplane_jobs::{enqueue, Job, JobContext, JobError, Registry};

use crate::backup::{create, live_tenants};
use crate::rows::Reason;
use crate::store::ArtifactStore;
use crate::verify::verify;

pub use crate::store::{install as install_store, installed as installed_store};

#[derive(Debug, thiserror::Error)]
#[error("no backup store is installed in this worker (tenantplane_backup::jobs::install_store)")]
struct NoStore;

fn store() -> Result<Arc<dyn ArtifactStore>, JobError> {
    installed_store().ok_or_else(|| JobError::permanent(NoStore))
}

/// The store this worker's jobs use (moves and drains too).
pub(crate) fn job_store() -> Result<Arc<dyn ArtifactStore>, JobError> {
    store()
}

/// Registers the backup job kinds.
pub fn register(r: &mut Registry) -> &mut Registry {
    r.register::<BackupJob>()
        .register::<VerifyJob>()
        .register::<ScheduledBackup>()
        .register::<ScheduledVerify>()
        .register::<ScheduledRetention>()
        .register::<crate::export::ExportJob>()
        .register::<crate::export::ExpireExports>()
        .register::<crate::restore_guard::RestoreGuard>()
        .register::<crate::moving::MoveJob>()
        .register::<crate::drain::DrainJob>()
}

/// Takes one backup of one tenant. At most one is queued per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupJob {
    pub tenant_id: String,
    pub reason: Reason,
}

impl Job for BackupJob {
    const KIND: &'static str = "backup.tenant";
    const MAX_ATTEMPTS: i32 = 3;

    fn dedup_key(&self) -> Option<String> {
        Some(self.tenant_id.clone())
    }

    /// A failed attempt leaves a `failed` row; a transient failure is tried
    /// again (a new row). A tenant deleted meanwhile needs no backup.
    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let store = store()?;
        match create(ctx.db(), store.as_ref(), &self.tenant_id, self.reason) {
            Ok(_) => Ok(()),
            Err(Error::NotFound { .. }) => {
                tracing::info!(tenant_id = %self.tenant_id, "tenant gone; no backup taken");
                Ok(())
            }
            // Still provisioning: it will not be for long.
            Err(e @ Error::Conflict(_)) => Err(JobError::transient(e)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Verifies one backup. At most one is queued per backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyJob {
    pub backup_id: String,
}

impl Job for VerifyJob {
    const KIND: &'static str = "backup.verify";
    const MAX_ATTEMPTS: i32 = 3;

    fn dedup_key(&self) -> Option<String> {
        Some(self.backup_id.clone())
    }

    /// A backup that fails verification is a finding recorded on the row,
    /// not a failed job; a backup deleted (or failed) meanwhile needs none.
    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let store = store()?;
        match verify(ctx.db(), store.as_ref(), &self.backup_id) {
            Ok(_) | Err(Error::NotFound { .. }) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A backup schedule fired: one [`BackupJob`] per selected tenant (all
/// tenants without a selector), deduplicated per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScheduledBackup(pub Fire);

impl Job for ScheduledBackup {
    const KIND: &'static str = "backup";

    fn dedup_key(&self) -> Option<String> {
        Some(format!("{}:{}", self.0.schedule, self.0.run_id))
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let n = enqueue_backups(ctx.db(), self.0.selector.as_ref(), Reason::Scheduled)?;
        tracing::info!(schedule = %self.0.schedule, run_id = self.0.run_id, queued = n, "scheduled backups queued");
        Ok(())
    }
}

/// A verification schedule fired: one [`VerifyJob`] per completed backup
/// not verified yet (of the selected tenants, when the schedule says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScheduledVerify(pub Fire);

impl Job for ScheduledVerify {
    const KIND: &'static str = "verify";

    fn dedup_key(&self) -> Option<String> {
        Some(format!("{}:{}", self.0.schedule, self.0.run_id))
    }

    fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let n = enqueue_verifications(ctx.db(), self.0.selector.as_ref())?;
        tracing::info!(schedule = %self.0.schedule, run_id = self.0.run_id, queued = n, "backup verifications queued");
        Ok(())
    }
}

/// A retention schedule fired: deletes the selected tenants' backups (all
/// tenants without a selector) that the policy in the fire's `params`
/// (absent: the defaults) does not keep. Its [`Job`] impl is in
/// [`crate::retention`], which imports this module (not the other way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScheduledRetention(pub Fire);

/// The ids of the live (not deleted, not provisioning) tenants a selector
/// picks; `None` or `{"all": true}` picks all. Names must exist (a typo
/// must not quietly back up fewer tenants).
///
/// The same rules as `tenantplane_rollout::selection`, as one query: the
/// rollout's version reads in pages and orders for waves, which a fan-out
/// does not need.
pub fn select_tenants(
    conn: &mut ControlConnection,
    selector: Option<&Selector>,
) -> Result<Vec<String>> {
    let mut q = live_tenants().select(tenants::id);
    let Some(s) = selector else {
        return Ok(q.order(tenants::id).load(conn)?);
    };
    if s.all == Some(false) {
        return Err(Error::invalid("selector.all must be true when given"));
    }
    if let Some(wanted) = &s.tenants {
        let found: Vec<(String, String)> = tenants::table
            .filter(tenants::deleted_at.is_null())
            .filter(tenants::id.eq_any(wanted).or(tenants::slug.eq_any(wanted)))
            .select((tenants::id, tenants::slug))
            .load(conn)?;
        let unknown: Vec<&String> = wanted
            .iter()
            .filter(|w| !found.iter().any(|(id, slug)| id == *w || slug == *w))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::invalid(format!(
                "unknown tenants in selector: {unknown:?}"
            )));
        }
        q = q.filter(tenants::id.eq_any(found.into_iter().map(|(id, _)| id).collect::<Vec<_>>()));
    }
    if let Some(wanted) = &s.plans {
        let ids: Vec<String> = plans::table
            .filter(plans::slug.eq_any(wanted).or(plans::id.eq_any(wanted)))
            .select(plans::id)
            .load(conn)?;
        q = q.filter(tenants::plan_id.eq_any(ids));
    }
    if let Some(labels) = &s.labels {
        q = with_labels(q, labels);
    }
    if let Some(wanted) = &s.servers {
        let mut ids = Vec::with_capacity(wanted.len());
        for w in wanted {
            let server = servers::find(conn, w)
                .map_err(|_| Error::invalid(format!("unknown server in selector: '{w}'")))?;
            ids.push(server.id);
        }
        q = q.filter(tenants::server_id.eq_any(ids));
    }
    Ok(q.order(tenants::id).load(conn)?)
}

/// Queues a [`BackupJob`] for every selected tenant (one open job per
/// tenant: a tenant whose backup is already queued is skipped). Returns how
/// many were queued.
pub fn enqueue_backups(
    db: &ControlDb,
    selector: Option<&Selector>,
    reason: Reason,
) -> Result<usize> {
    let mut conn = db.conn()?;
    let ids = select_tenants(&mut conn, selector)?;
    let mut queued = 0;
    for chunk in ids.chunks(500) {
        queued += write_tx(&mut conn, None, |conn| {
            let mut n = 0;
            for id in chunk {
                let job = BackupJob {
                    tenant_id: id.clone(),
                    reason,
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

/// Queues a [`VerifyJob`] for every completed, not yet verified backup (of
/// the selected tenants, when a selector is given). Returns how many.
pub fn enqueue_verifications(db: &ControlDb, selector: Option<&Selector>) -> Result<usize> {
    let mut conn = db.conn()?;
    let mut ids: Vec<(String, String)> = backups::table
        .filter(backups::state.eq(BackupState::Completed.as_str()))
        .order(backups::created_at)
        .select((backups::id, backups::tenant_id))
        .load(&mut conn)?;
    if selector.is_some() {
        let selected: std::collections::BTreeSet<String> =
            select_tenants(&mut conn, selector)?.into_iter().collect();
        ids.retain(|(_, t)| selected.contains(t));
    }
    let mut queued = 0;
    for chunk in ids.chunks(500) {
        queued += write_tx(&mut conn, None, |conn| {
            let mut n = 0;
            for (id, _) in chunk {
                if enqueue(
                    conn,
                    &VerifyJob {
                        backup_id: id.clone(),
                    },
                )?
                .is_new()
                {
                    n += 1;
                }
            }
            Ok(n)
        })?;
    }
    Ok(queued)
}
