//! Control-DB rows for benchmark tenants whose databases the bench made
//! itself: one multi-row insert per statement (the registry's one-by-one
//! path would dominate provisioning time), shared by every bench.

use anyhow::{Context, Result};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_control_db::schema::tenants;
use tenantplane_control_db::{write_tx, ControlConnection, ControlDb};
use tenantplane_fleet::servers::DatabaseServer;
use uuid::Uuid;

/// Rows per statement.
const CHUNK: usize = 500;

#[derive(Insertable)]
#[diesel(table_name = tenants)]
struct BenchTenant {
    id: String,
    slug: String,
    name: String,
    status: &'static str,
    server_id: String,
    schema_version: &'static str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// Inserts `active` tenants at `version`; the first is numbered `first + 1`
/// (slugs `bench-0000001`, …).
pub fn insert_tenants(
    db: &ControlDb,
    server: &DatabaseServer,
    version: &'static str,
    first: usize,
    ids: &[Uuid],
) -> Result<()> {
    let now = Utc::now().naive_utc();
    for (c, chunk) in ids.chunks(CHUNK).enumerate() {
        let rows: Vec<BenchTenant> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let n = first + c * CHUNK + i + 1;
                BenchTenant {
                    id: id.to_string(),
                    slug: format!("bench-{n:07}"),
                    name: format!("Bench shop {n}"),
                    status: "active",
                    server_id: server.id.clone(),
                    schema_version: version,
                    created_at: now,
                    updated_at: now,
                }
            })
            .collect();
        let mut conn = db.conn()?;
        write_tx(&mut conn, None, |c| {
            let insert = diesel::insert_into(tenants::table).values(&rows);
            match c {
                ControlConnection::Sqlite(c) => insert.execute(c)?,
                ControlConnection::Postgres(c) => insert.execute(c)?,
            };
            Ok(())
        })
        .context("inserting tenant rows")?;
    }
    Ok(())
}
