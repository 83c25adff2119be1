//! Set-up shared by the tenants crate's integration tests.

use std::path::Path;

use tenantplane_control_db::ControlDb;
use tenantplane_fleet::servers;

/// A SQLite control database in `dir`, with the default SQLite server
/// (tenant files also go into `dir`).
pub fn sqlite_control_db(dir: &Path) -> ControlDb {
    let db = ControlDb::open(&format!("sqlite://{}", dir.join("control.db").display()))
        .expect("open the control database");
    servers::ensure_default(&db, dir).expect("default server");
    db
}
