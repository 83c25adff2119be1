//! Drift detection: whether a tenant's schema is still what the migrations
//! made it. A schema changed by hand (an index added, a column dropped, a
//! default changed) is found before a migration trips on it.
//!
//! - [`diff`]: two schema snapshots compared, as readable differences
//!   (pure functions);
//! - [`check`]: one tenant's schema (read by
//!   `tenantplane_migrations::snapshot`) against the cached reference of the
//!   version the control database records, on an open connection or by id;
//! - [`store`]: the last check of each tenant (`tenant_drift`), which flags
//!   drifted tenants in the tenant JSON;
//! - [`jobs`]: `drift` (a selector's fan-out, from `POST /v1/drift` or a
//!   schedule) and `drift.tenant` (one tenant's check, its result stored).
//!
//! The rollout gate (a task refuses a drifted tenant unless the rollout
//! allows drift) is [`check::gate`], called by the worker's executor on the
//! connection it then migrates with.

pub mod check;
pub mod diff;
pub mod jobs;
pub mod store;

pub use check::{check_tenant, gate};
pub use jobs::{queue, register, DriftJob, TenantDriftJob};
pub use tenantplane_api_types::drift::{
    Change, Difference, DriftPage, DriftQueued, DriftReport, DriftRequest, DriftStatus,
};
