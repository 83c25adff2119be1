//! The tenant held still while a restore (or its guard) replaces its
//! database: PostgreSQL tenants by their advisory lock, the one migrations
//! take, so no migration runs meanwhile.

use std::time::Duration;

use tenantplane_control_db::error::Result;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::tenant_run::lock_key;

use crate::backup::Located;
use crate::postgres::{PgPlace, TenantLock};

/// How long a restore waits for the tenant's lock (a running migration) or
/// its write lock (SQLite writers).
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The tenant held for a restore: PostgreSQL tenants by their advisory
/// lock (so no migration runs meanwhile); SQLite tenants are locked by the
/// write itself.
pub(crate) enum Held {
    Sqlite,
    Pg { place: PgPlace, lock: TenantLock },
}

pub(crate) fn hold(at: &Located) -> Result<Held> {
    match &at.location {
        TenantDbLocation::SqliteFile { .. } => Ok(Held::Sqlite),
        location => {
            let place = PgPlace::of(location)
                .map_err(|e| e.for_tenant(&at.tenant.slug, "locating the tenant failed"))?;
            let lock = TenantLock::acquire(&place.url, lock_key(&at.tenant.id), LOCK_WAIT)
                .map_err(|e| e.for_tenant(&at.tenant.slug, "restore"))?;
            Ok(Held::Pg { place, lock })
        }
    }
}
