//! The fleet: the database servers tenant databases live on and where new
//! tenants go, each tenant's database (create, drop, connect, migrate), the
//! tenant registry, and one tenant's locked migration run.

pub mod pg_pool;
pub mod registry;
pub mod servers;
pub mod tenant_db;
pub mod tenant_run;
pub mod urls;
