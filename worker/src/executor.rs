//! One executor thread: claim a task, back its tenant up if the rollout asks,
//! migrate the tenant, record the outcome, restore the tenant if the rollout
//! asks and the migration failed for good.
//!
//! ## Pre-migration backups (`backup: true`)
//!
//! A tenant that will actually migrate (not one already at the target, which
//! finishes from the control database alone, nor one only verified at its
//! target, whose probes change nothing) is backed up with reason
//! `pre_migration` just before `tenant_run::run`, in the same task. No store
//! installed, or the backup failing, fails the attempt as transient and the
//! tenant is not migrated: never without the backup that was asked for. The
//! backup's id is written with the outcome (`tasks::complete`); a task that
//! goes back to `pending` keeps it, and its next attempts reuse it while it
//! is still usable, so retries do not pile up one backup each and a restore
//! goes back to where the tenant was before the task's first attempt. A
//! worker that dies after the backup but before `complete` leaves a backup no
//! task names; the attempt that takes the task over takes its own.
//!
//! Why no lock spans the backup and the migration: the task's lease makes
//! this worker the only one running this task (the maintenance thread
//! extends it while the backup runs; a lease lost meanwhile makes `complete`
//! record nothing), and `tenant_run` takes the tenant's lock for the
//! migration itself, reading the applied versions under it. What the lease
//! does not cover is another rollout's task for the same tenant, which may
//! migrate it between our backup and our run. Our run then starts from
//! wherever the tenant is, which is correct; only a restore would be wrong
//! (it would undo that task's work too), so before restoring we look for
//! migration runs of other tasks since the backup and do not restore if
//! there are any (`tasks::restore_unneeded`). A lock across both would not
//! work as is: on PostgreSQL `tenant_run` takes `pg_try_advisory_xact_lock`
//! on its own connection, so a session lock held on another connection would
//! make every run fail as `Locked` (advisory locks are re-entrant only within
//! one session), and on SQLite the tenant's lock is an exclusive transaction,
//! which cannot outlive the run nor cover the backup's own connection.
//!
//! ## Restores (`restore_on_failure: true`)
//!
//! When `complete` made the task `failed` (a permanent error, or a transient
//! one on the last attempt) and the task has a pre-migration backup, the
//! tenant is restored in place from it (`tenantplane_backup::restore_in_place`,
//! which first takes a `pre_restore` safety backup of the failed state, and
//! points the tenant's `schema_version` at the backup's). It runs after
//! `complete` because a restore in place refuses a tenant a task is
//! migrating, and that order also means `complete`'s write of the failed
//! run's version comes before the restore's, never over it. Then
//! `tasks::record_restore` sets `restored` on the task, or appends to its
//! `last_error` why the tenant was not restored. The task stays `failed` and
//! counts against the failure budget either way.

use std::time::{Duration, Instant};

use tenantplane_backup::jobs::installed_store;
use tenantplane_backup::{Backup, Reason};
use tenantplane_control_db::error::report;
use tenantplane_control_db::{Actor, Error, Result};
use tenantplane_fleet::registry::find_row;
use tenantplane_fleet::servers;
use tenantplane_fleet::servers::DatabaseServer;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::tenant_run::Outcome;
use tenantplane_fleet::tenant_run::{self, ProbeSet, RunOptions};
use tenantplane_rollout::tasks::{self, ClaimedTask, RestoreNote, TaskPolicy};

use crate::{drift_gate, Shared};

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
                let (outcome, backup) = execute(s, &task, &policy);
                if let Some(e) = &outcome.error {
                    tracing::warn!(attempt = task.attempts, transient = e.transient, error = %e.message, "task attempt failed");
                }
                let recorded = tasks::complete(
                    &s.db,
                    &s.id,
                    &task,
                    &policy,
                    &outcome,
                    backup.as_ref().map(|b| b.id.as_str()),
                    started.elapsed(),
                );
                if let Ok(mut set) = s.in_flight.lock() {
                    set.remove(&task.id);
                }
                match recorded {
                    Ok(true) => {
                        if policy.restore_on_failure && tasks::fails_for_good(&task, &outcome) {
                            restore_after_failure(s, &task, backup);
                        }
                    }
                    // The lease was lost: the task is its new owner's.
                    Ok(false) => {}
                    // The lease runs out and another claim retries the task;
                    // the tenant database itself is consistent either way.
                    Err(e) => {
                        tracing::error!(error = %report(&e), "recording the task outcome failed")
                    }
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

/// Runs one attempt; returns its outcome and the pre-migration backup it
/// took or reused, if any.
fn execute(s: &Shared, task: &ClaimedTask, policy: &TaskPolicy) -> (Outcome, Option<Backup>) {
    let (slug, schema_version, server) = match load(s, task) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("tenant {}: {e}", task.tenant_id);
            return (Outcome::failed_before_start(msg, false), None);
        }
    };
    // Already there: finish from the control database alone.
    if !policy.verify && schema_version == task.to_version {
        let done = Outcome {
            reached: schema_version,
            reached_known: true,
            applied: Vec::new(),
            recovered: Vec::new(),
            error: None,
        };
        return (done, None);
    }
    let Ok(id) = uuid::Uuid::parse_str(&task.tenant_id) else {
        let msg = format!("tenant {}: malformed id", task.tenant_id);
        return (Outcome::failed_before_start(msg, false), None);
    };
    let location = TenantDbLocation::new(&server, &id);
    // From here on this run holds tenant connections (the drift gate's, the
    // run's): within this process's budget for the server
    // (`server_slots.rs`), released when it returns.
    let _slot = s.slots.acquire(&server.id);
    // A drifted tenant is not migrated (nor backed up) unless the rollout
    // allows drift.
    if !policy.allow_drift {
        if let Some(refused) = drift_gate::refuse_drifted(s, task, &slug, &location) {
            return (refused, None);
        }
    }
    // A verify-only run of a tenant at its target changes nothing: its
    // probes roll back whatever they find.
    let backup = if policy.backup && schema_version != task.to_version {
        match pre_migration_backup(s, task) {
            Ok(b) => Some(b),
            Err(why) => {
                let msg = format!("tenant {slug} ({}): not migrated: {why}", task.tenant_id);
                return (Outcome::failed_before_start(msg, true), None);
            }
        }
    } else {
        None
    };
    let opts = RunOptions {
        target: task.to_version.clone(),
        // `verify`: every probe of the target, for tenants migrated and not.
        probes: if policy.verify {
            ProbeSet::Full
        } else {
            ProbeSet::Changed
        },
        timeout: Duration::from_secs(policy.timeout_s.max(1) as u64),
        lock_wait: s.config.lock_wait,
        lock_key: tenant_run::lock_key(&task.tenant_id),
        recorded: schema_version.clone(),
    };
    let mut outcome = tenant_run::run(&location, &opts);
    if let Some(e) = &mut outcome.error {
        e.message = format!("tenant {slug} ({}): {}", task.tenant_id, e.message);
    }
    (outcome, backup)
}

/// The task's pre-migration backup: the one an earlier attempt of this task
/// took, while it is still usable (completed or verified, of this tenant),
/// else a new one. `Err` says why there is none.
fn pre_migration_backup(s: &Shared, task: &ClaimedTask) -> std::result::Result<Backup, String> {
    if let Some(id) = &task.backup_id {
        match tenantplane_backup::get(&s.db, id) {
            Ok(b) if b.is_usable() && b.tenant_id == task.tenant_id => {
                tracing::info!(backup_id = %b.id, "reusing the pre-migration backup of an earlier attempt");
                return Ok(b);
            }
            // Deleted or failed since (retention, an operator): take another.
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("cannot read backup {id}: {}", report(&e))),
        }
    }
    let store = installed_store().ok_or_else(|| {
        "the rollout asks for a pre-migration backup and this worker has no backup store \
         (TENANTPLANE_BACKUP_STORE)"
            .to_string()
    })?;
    let started = Instant::now();
    match tenantplane_backup::create(&s.db, store.as_ref(), &task.tenant_id, Reason::PreMigration) {
        Ok(b) => {
            tracing::info!(backup_id = %b.id, ms = started.elapsed().as_millis() as u64, "pre-migration backup taken");
            Ok(b)
        }
        Err(e) => Err(format!("the pre-migration backup failed: {}", report(&e))),
    }
}

/// Restores the tenant of a task `complete` just made `failed` from the
/// task's pre-migration backup (this attempt's, else the one an earlier
/// attempt recorded), and records what came of it on the task.
fn restore_after_failure(s: &Shared, task: &ClaimedTask, backup: Option<Backup>) {
    let backup = match (backup, &task.backup_id) {
        (Some(b), _) => b,
        (None, Some(id)) => match tenantplane_backup::get(&s.db, id) {
            Ok(b) => b,
            Err(e) => {
                let why = format!("cannot read the backup: {}", report(&e));
                note(s, task, id, RestoreNote::NotRestored(why));
                return;
            }
        },
        // The backup itself failed: there is nothing to restore from.
        (None, None) => return,
    };
    let decided = tasks::restore_unneeded(
        &s.db,
        task,
        backup.schema_version.as_deref(),
        backup.created_at,
    );
    let result = match decided {
        Ok(Some(why)) => RestoreNote::NotRestored(why),
        Err(e) => RestoreNote::NotRestored(format!(
            "cannot tell whether a restore is safe: {}",
            report(&e)
        )),
        Ok(None) => match installed_store() {
            None => RestoreNote::NotRestored("this worker has no backup store".into()),
            Some(store) => {
                let actor = Actor::system("rollout");
                match tenantplane_backup::restore_in_place(
                    &s.db,
                    store.as_ref(),
                    &backup.id,
                    &actor,
                ) {
                    Ok(r) => {
                        tracing::info!(backup_id = %backup.id, schema_version = ?r.tenant.schema_version,
                            safety_backup = ?r.safety_backup.as_ref().map(|b| &b.id),
                            "tenant restored from its pre-migration backup after the migration failed");
                        RestoreNote::Restored
                    }
                    Err(e) => {
                        RestoreNote::NotRestored(format!("the restore failed: {}", report(&e)))
                    }
                }
            }
        },
    };
    if let RestoreNote::NotRestored(why) = &result {
        tracing::warn!(backup_id = %backup.id, reason = %why, "tenant not restored after its migration failed");
    }
    note(s, task, &backup.id, result);
}

fn note(s: &Shared, task: &ClaimedTask, backup_id: &str, result: RestoreNote) {
    if let Err(e) = tasks::record_restore(&s.db, task.id, backup_id, &result) {
        tracing::error!(error = %report(&e), ?result, "recording the restore on the task failed");
    }
}

fn load(s: &Shared, task: &ClaimedTask) -> Result<(String, Option<String>, DatabaseServer)> {
    let mut conn = s.db.conn()?;
    let tenant = find_row(&mut conn, &task.tenant_id)?;
    let server = servers::find(&mut conn, &tenant.server_id)?;
    Ok((tenant.slug, tenant.schema_version, server))
}
