//! Embedded SQL migrations for the tenant schema and the control database,
//! and the phase catalogue that maps the seed's phases to migrations and
//! features.
//!
//! Tenant migrations live in `tenant/{sqlite,postgres}` with identical version
//! lists; control migrations in `control/{sqlite,postgres}`. Both are plain SQL
//! so the stock diesel CLI can run each folder.

pub mod catalogue;
pub mod probes;
pub mod runner;
pub mod target;

use diesel_migrations::{embed_migrations, EmbeddedMigrations};

pub use catalogue::{Feature, Phase, FEATURES, PHASES};
pub use runner::{MigrateError, MigrationPlan, Step, StepDirection};
pub use target::{SchemaTarget, TargetError};

/// Tenant schema, SQLite flavour.
pub const TENANT_SQLITE: EmbeddedMigrations = embed_migrations!("tenant/sqlite");
/// Tenant schema, PostgreSQL flavour (runs inside the tenant's schema or database).
pub const TENANT_POSTGRES: EmbeddedMigrations = embed_migrations!("tenant/postgres");
/// Control database, SQLite flavour.
pub const CONTROL_SQLITE: EmbeddedMigrations = embed_migrations!("control/sqlite");
/// Control database, PostgreSQL flavour.
pub const CONTROL_POSTGRES: EmbeddedMigrations = embed_migrations!("control/postgres");
