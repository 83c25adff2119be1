//! The request and response bodies of tenantplane's HTTP API, shared by the
//! domain crates (which take and return them), the API (which documents them
//! in OpenAPI), the CLI and the tests.
//!
//! One definition per body: the domain functions take these as their input
//! and build them as their output, so there is no second, mapped copy of each
//! type. The OpenAPI derives live here and nowhere else.

pub mod audit;
pub mod backups;
pub mod drift;
pub mod exports;
pub mod features;
pub mod flags;
pub mod notify;
pub mod plans;
pub mod retention;
pub mod rollouts;
pub mod schedules;
pub mod servers;
pub mod tenants;
pub mod time;
