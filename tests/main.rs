//! The integration tests of the whole system, in one test binary (each
//! binary links the whole workspace; one keeps the build short). Each module
//! covers one capability; `common` is the harness: the real `tenantplane`
//! binary on 127.0.0.1:0 with its own data dir, fresh PostgreSQL databases.

// A failed step is the test's report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod api_contract;
mod backup_kills;
mod backups;
mod cli_flags;
mod cli_rollout;
mod console;
mod drift;
mod error_kinds;
mod exports;
mod hardening;
mod notify;
mod plans_flags;
mod processes;
mod provisioning_failures;
mod provisioning_sweep;
mod reclaim;
mod rollout_backups;
mod rollout_creation;
mod rollouts;
mod scale_out;
mod schedules;
mod servers;
mod shutdown;
mod tenants_lifecycle;
mod worker_health;
