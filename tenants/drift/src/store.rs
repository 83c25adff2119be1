//! The last drift check of each tenant (`tenant_drift`, one row per
//! tenant, replaced by each check): what flags a drifted tenant in the
//! tenant JSON (read by `fleet::registry`) and what `GET /v1/drift` lists.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use tenantplane_api_types::drift::{Difference, DriftReport};
use tenantplane_control_db::db::{write_tx, ControlDb};
use tenantplane_control_db::error::{Error, Result};
use tenantplane_control_db::schema::{database_servers, tenant_drift, tenants};

#[derive(Insertable)]
#[diesel(table_name = tenant_drift)]
struct NewRow<'a> {
    tenant_id: &'a str,
    schema_version: Option<&'a str>,
    drifted: bool,
    difference_count: i32,
    differences: String,
    checked_at: NaiveDateTime,
}

/// Replaces the tenant's last check with `r`.
pub fn record(db: &ControlDb, r: &DriftReport) -> Result<()> {
    let differences = serde_json::to_string(&r.differences)
        .map_err(|e| Error::invalid(format!("differences are not JSON: {e}")))?;
    let row = NewRow {
        tenant_id: &r.tenant_id,
        schema_version: r.schema_version.as_deref(),
        drifted: r.drifted,
        difference_count: r.differences.len() as i32,
        differences,
        checked_at: r.checked_at,
    };
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        diesel::delete(tenant_drift::table.find(&r.tenant_id)).execute(conn)?;
        diesel::insert_into(tenant_drift::table)
            .values(&row)
            .execute(conn)?;
        Ok(())
    })
}

type Listed = (
    String,
    String,
    String,
    Option<String>,
    bool,
    String,
    NaiveDateTime,
);

/// The last check of every live tenant checked so far (only the drifted
/// ones with `drifted_only`), by slug.
pub fn list(db: &ControlDb, drifted_only: bool) -> Result<Vec<DriftReport>> {
    let mut conn = db.conn()?;
    let mut q = tenant_drift::table
        .inner_join(tenants::table.inner_join(database_servers::table))
        .filter(tenants::deleted_at.is_null())
        .select((
            tenants::id,
            tenants::slug,
            database_servers::kind,
            tenant_drift::schema_version,
            tenant_drift::drifted,
            tenant_drift::differences,
            tenant_drift::checked_at,
        ))
        .order(tenants::slug)
        .into_boxed();
    if drifted_only {
        q = q.filter(tenant_drift::drifted.eq(true));
    }
    let rows: Vec<Listed> = q.load(&mut conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(tenant_id, slug, backend, schema_version, drifted, differences, checked_at)| {
                DriftReport {
                    tenant_id,
                    slug,
                    backend,
                    schema_version,
                    drifted,
                    // Written by `record` from the same type.
                    differences: serde_json::from_str::<Vec<Difference>>(&differences)
                        .unwrap_or_default(),
                    checked_at,
                }
            },
        )
        .collect())
}
