//! One executor thread: claim a task, migrate its tenant, record the outcome.

use std::time::{Duration, Instant};

use tenantplane_control_db::error::report;
use tenantplane_control_db::Result;
use tenantplane_fleet::registry::find_row;
use tenantplane_fleet::servers;
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::tenant_run::Outcome;
use tenantplane_fleet::tenant_run::{self, RunOptions};
use tenantplane_rollout::tasks::{self, ClaimedTask, TaskPolicy};

use crate::Shared;

pub(crate) fn run(s: &Shared) {
    let mut idle = s.config.poll;
    while !s.stopping() {
        match tasks::claim(&s.db, &s.id, s.config.lease) {
            Ok(Some((task, policy))) => {
                idle = s.config.poll;
                if let Ok(mut set) = s.in_flight.lock() {
                    set.insert(task.id);
                }
                let span = tracing::info_span!("task", task_id = task.id, rollout_id = %task.rollout_id, tenant_id = %task.tenant_id);
                let _enter = span.enter();
                let started = Instant::now();
                let outcome = execute(s, &task, &policy);
                if let Some(e) = &outcome.error {
                    tracing::warn!(attempt = task.attempts, transient = e.transient, error = %e.message, "task attempt failed");
                }
                if let Err(e) =
                    tasks::complete(&s.db, &s.id, &task, &policy, &outcome, started.elapsed())
                {
                    // The lease runs out and another claim retries the task;
                    // the tenant database itself is consistent either way.
                    tracing::error!(error = %report(&e), "recording the task outcome failed");
                }
                if let Ok(mut set) = s.in_flight.lock() {
                    set.remove(&task.id);
                }
            }
            Ok(None) => {
                s.nap(idle);
                idle = (idle * 2).min(Duration::from_secs(2)).max(s.config.poll);
            }
            Err(e) => {
                tracing::warn!(error = %report(&e), "claiming a task failed");
                s.nap(Duration::from_secs(1));
            }
        }
    }
}

fn execute(s: &Shared, task: &ClaimedTask, policy: &TaskPolicy) -> Outcome {
    let (slug, schema_version, server) = match load(s, task) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::failed_before_start(format!("tenant {}: {e}", task.tenant_id), false)
        }
    };
    // Already there: finish from the control database alone.
    if !policy.verify && schema_version == task.to_version {
        return Outcome {
            reached: schema_version,
            reached_known: true,
            applied: Vec::new(),
            error: None,
        };
    }
    let Ok(id) = uuid::Uuid::parse_str(&task.tenant_id) else {
        return Outcome::failed_before_start(
            format!("tenant {}: malformed id", task.tenant_id),
            false,
        );
    };
    let location = TenantDbLocation::new(&server, &id);
    let opts = RunOptions {
        target: task.to_version.clone(),
        probes: true,
        timeout: Duration::from_secs(policy.timeout_s.max(1) as u64),
        lock_wait: s.config.lock_wait,
        lock_key: tenant_run::lock_key(&task.tenant_id),
    };
    let mut outcome = tenant_run::run(&location, &opts);
    if let Some(e) = &mut outcome.error {
        e.message = format!("tenant {slug} ({}): {}", task.tenant_id, e.message);
    }
    outcome
}

fn load(s: &Shared, task: &ClaimedTask) -> Result<(String, Option<String>, DatabaseServer)> {
    let mut conn = s.db.conn()?;
    let tenant = find_row(&mut conn, &task.tenant_id)?;
    let server = servers::find(&mut conn, &tenant.server_id)?;
    Ok((tenant.slug, tenant.schema_version, server))
}
