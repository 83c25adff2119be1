//! A rollout refuses a drifted tenant: before a task migrates (or verifies)
//! its tenant, the tenant's schema is compared with the reference of the
//! version its own migration history says it is at — not the control DB's
//! record, which a worker killed between the two commits leaves behind
//! (the retry records those steps as recovered) — (`tenantplane_drift::gate`,
//! which also records the finding, flagging the tenant). Any difference
//! fails the task for good, the differences as its error, unless the
//! rollout was created with `"allow_drift": true` (the caller checks).
//!
//! Migrating a schema that is not what the migrations expect either trips
//! on it half-way or, worse, succeeds and leaves an unknown schema labelled
//! with a known version. The check is the cheap one: one catalogue query
//! against a reference cached per version; no full verification.
//!
//! It takes a connection of its own, outside the run's transaction
//! (PostgreSQL builds a missing reference in a transaction of its own,
//! rolled back); for a PostgreSQL tenant schema that is a pooled
//! connection, which the run then reuses (`pg_pool`).

use tenantplane_control_db::error::report;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::tenant_run;
use tenantplane_fleet::tenant_run::Outcome;
use tenantplane_rollout::tasks::ClaimedTask;

use crate::Shared;

/// `Some(outcome)` fails the task without migrating: the tenant drifted
/// (permanent), or the check could not be made (transient or permanent by
/// the failure's kind; a tenant is never migrated unchecked).
pub(crate) fn refuse_drifted(
    s: &Shared,
    task: &ClaimedTask,
    slug: &str,
    location: &TenantDbLocation,
) -> Option<Outcome> {
    let who = format!("tenant {slug} ({})", task.tenant_id);
    let mut conn = match location.connect_pooled() {
        Ok(c) => c,
        Err(e) => {
            let transient = e.is_transient();
            let msg = format!("{who}: drift check: cannot connect: {}", report(&e));
            return Some(Outcome::failed_before_start(msg, transient));
        }
    };
    // Under the tenant's lock, as the run: a tenant another run (or a
    // dead worker's abandoned session, or a move) holds is left for later
    // at once, not read while it changes or waited on without end. The
    // session lock goes with the connection's reset when it is dropped.
    match tenant_run::try_lock_session(&mut conn, &task.tenant_id) {
        Ok(true) => {}
        Ok(false) => {
            let msg = format!("{who}: the tenant is locked by another migration");
            return Some(Outcome::failed_before_start(msg, true));
        }
        Err(e) => {
            let msg = format!("{who}: drift check: taking the tenant's lock: {e}");
            return Some(Outcome::failed_before_start(msg, true));
        }
    }
    match tenantplane_drift::gate(&s.db, &task.tenant_id, slug, &mut conn) {
        Ok(None) => None,
        Ok(Some(diff)) => {
            tracing::warn!(%diff, "tenant refused: its schema drifted");
            Some(Outcome::failed_before_start(
                format!("{who}: {diff}"),
                false,
            ))
        }
        Err(e) => {
            let transient = e.is_transient();
            let msg = format!("{who}: drift check failed: {}", report(&e));
            Some(Outcome::failed_before_start(msg, transient))
        }
    }
}
