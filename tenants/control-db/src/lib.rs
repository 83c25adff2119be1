//! The control database: one code path for SQLite and PostgreSQL, write
//! transactions, advisory locks, the control migrations applied at start,
//! the diesel schema, the audit log, the change counter, the states rows
//! move through, the input rules, and the domain's error type.
//!
//! Every function here is blocking (diesel); callers on an async runtime run
//! them on a blocking thread.

pub mod audit;
pub mod changes;
pub mod db;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod schema;
pub mod states;
pub mod validate;

pub use audit::Actor;
pub use db::{write_tx, ControlBackend, ControlConnection, ControlDb};
pub use error::{DbError, Error, Result};
