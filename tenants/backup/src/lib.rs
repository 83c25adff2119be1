//! Tenant backups: consistent snapshots of one tenant's database while it
//! keeps writing, compressed and stored with a manifest in an artifact store;
//! verification by restoring into a scratch database; restores in place and
//! as a new tenant; the jobs that run them.
//!
//! Modules (edges = `use crate::…`, one way):
//!
//! - [`store`]: the [`ArtifactStore`] trait, the `file://` and `s3://` stores,
//!   and the store this process's jobs use (`store::install`);
//! - [`manifest`]: the manifest, server kinds, row hashing;
//! - `sqlite`, `postgres`: snapshot, load and measure per backend (→ manifest);
//! - [`rows`]: the `backups` rows: reads, pin, delete (→ manifest, store);
//! - `heartbeat`: proof of life of a backup or restore in progress;
//! - `held`: the tenant's lock during a restore (→ backup, postgres);
//! - [`backup`]: taking a backup, the sweep (→ heartbeat, rows, store, sqlite,
//!   postgres);
//! - [`verify`]: checking a backup (→ backup, rows, sqlite, postgres);
//! - [`restore`]: in place or as a new tenant (→ backup, verify, rows,
//!   restore_guard);
//! - [`restore_guard`]: the job that settles a restore its process did not
//!   finish, and the undoing of an unfinished new tenant (→ backup, held,
//!   heartbeat, postgres);
//! - [`moving`]: moving a tenant to another server (a backup restored on
//!   the target, checked, the placement switched, the source dropped) and
//!   its job (→ backup, verify, rows, postgres, sqlite, held);
//! - [`drain`]: emptying a server by moving its tenants, its job and
//!   progress (→ moving);
//! - [`export`]: tenant data exports (zips of JSON/CSV files per table),
//!   their download tokens and their jobs (→ backup, store);
//! - [`jobs`]: the job kinds, their registration and the scheduled fan-outs
//!   (→ backup, verify, rows, export, store);
//! - [`retention`]: the retention policy, the decision per tenant (a pure
//!   function), applying it, the API's entry point, and the `retention`
//!   job's run (→ jobs, rows, store).
//!
//! Every function is blocking (diesel, libpq, SQLite, files); the API runs
//! them on a blocking thread, the worker in its job threads.

pub mod backup;
pub mod drain;
pub mod export;
mod heartbeat;
mod held;
pub mod jobs;
pub mod manifest;
pub mod moving;
mod postgres;
pub mod restore;
pub mod restore_guard;
pub mod retention;
pub mod rows;
mod sqlite;
pub mod store;
pub mod verify;

pub use backup::{create, create_by, sweep, SweepAges, SweepReport};
pub use manifest::{Manifest, ServerKind};
pub use restore::{restore_in_place, restore_new_tenant, Restored};
pub use retention::{
    decide, run_retention, Action, Candidate, Decision, Policy, Report as RetentionReport,
    RetentionRequest, Scope, TenantReport,
};
pub use rows::{
    delete, get, list, pin, set_pinned, unpin, Backup, BackupFilter, BackupPage, Reason,
};
pub use store::{ArtifactStore, FileStore, StoreError};
pub use verify::verify;

#[cfg(test)]
mod tests;
