//! The domain and the control database of tenantplane: database servers,
//! tenants and their databases, API tokens and the audit log.
//!
//! Every function here is blocking (diesel); callers on an async runtime run
//! them on a blocking thread.

pub mod audit;
pub mod changes;
pub mod db;
pub mod error;
pub mod flags;
pub mod keys;
pub mod metrics;
pub mod overrides;
pub mod plans;
pub mod registry;
pub mod rollouts;
pub mod schema;
mod selection;
pub mod servers;
pub mod tasks;
pub mod tenant_db;
pub mod tenant_run;
pub mod time;
pub mod tokens;
pub mod validate;

pub use audit::Actor;
pub use db::{ControlConnection, ControlDb};
pub use error::{Error, Result};
