//! The bench's fleet: N active tenants with a mix of plans, schema
//! versions, trials and overrides, and one tenant key each, inserted in bulk.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use chrono::{NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_access::tokens;
use tenantplane_control_db::schema::{
    api_tokens, database_servers, feature_overrides, plans, tenants,
};
use tenantplane_control_db::{ControlConnection, ControlDb};
use tenantplane_fleet::servers;
use tenantplane_migrations::catalogue;
use uuid::Uuid;

/// Rows per multi-row INSERT.
const CHUNK: usize = 1000;

#[derive(Insertable)]
#[diesel(table_name = tenants, treat_none_as_default_value = false)]
struct TenantRow {
    id: String,
    slug: String,
    name: String,
    status: &'static str,
    server_id: String,
    schema_version: Option<&'static str>,
    plan_id: Option<String>,
    trial_ends_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = api_tokens, treat_none_as_default_value = false)]
struct KeyRow {
    id: String,
    kind: &'static str,
    tenant_id: Option<String>,
    name: &'static str,
    token_hash: String,
    created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = feature_overrides, treat_none_as_default_value = false)]
struct OverrideRow {
    tenant_id: String,
    feature: &'static str,
    enabled: bool,
    reason: Option<&'static str>,
    actor: &'static str,
    expires_at: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
}

/// Head, and the version after each phase that has migrations.
fn schema_versions() -> Result<Vec<&'static str>> {
    let mut v: Vec<&'static str> = (0..=catalogue::MAX_PHASE)
        .filter_map(catalogue::phase_version)
        .collect();
    v.dedup();
    let head = catalogue::head().context("the catalogue has no tenant migrations")?;
    v.retain(|x| *x != head);
    v.push(head);
    Ok(v)
}

/// Inserts the tenants, their keys and some overrides in bulk; returns the
/// keys in tenant order (plaintext, only for the wrk script).
pub(super) fn populate(db: &ControlDb, n: usize) -> Result<Vec<String>> {
    let mut pooled = db.conn().context("connecting to the control database")?;
    let ControlConnection::Sqlite(conn) = &mut *pooled else {
        bail!("the bench's control database must be SQLite");
    };
    let server_id: String = database_servers::table
        .filter(database_servers::name.eq(servers::DEFAULT_SERVER))
        .select(database_servers::id)
        .first(conn)
        .context("reading the default server")?;
    let plan_rows: Vec<(String, String)> = plans::table
        .select((plans::slug, plans::id))
        .load(conn)
        .context("reading the plans")?;
    let plan = |slug: &str| {
        plan_rows
            .iter()
            .find(|(s, _)| s == slug)
            .map(|(_, id)| id.clone())
            .with_context(|| format!("default plan {slug} missing"))
    };
    let plan_ids = [plan("free")?, plan("standard")?, plan("pro")?];
    let versions = schema_versions()?;
    let head = versions[versions.len() - 1];
    let now = Utc::now().naive_utc();

    let mut tenant_rows = Vec::with_capacity(n);
    let mut key_rows = Vec::with_capacity(n);
    let mut override_rows = Vec::new();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let id = Uuid::new_v4().to_string();
        // Most shops at head; the rest spread over the phase versions.
        let schema_version = if i % 2 == 0 {
            head
        } else {
            versions[(i / 2) % versions.len()]
        };
        let paid = i % 3 != 0;
        let trial_ends_at = match i % 50 {
            7 if paid => Some(now + chrono::Duration::days(30)),
            13 if paid => Some(now - chrono::Duration::days(1)),
            _ => None,
        };
        tenant_rows.push(TenantRow {
            id: id.clone(),
            slug: format!("bench-{:06}", i + 1),
            name: format!("Bench shop {}", i + 1),
            status: "active",
            server_id: server_id.clone(),
            schema_version: Some(schema_version),
            plan_id: Some(plan_ids[i % 3].clone()),
            trial_ends_at,
            created_at: now,
            updated_at: now,
        });
        let overrides: &[(&'static str, bool, Option<NaiveDateTime>)] = match i % 10 {
            0 => &[("webhooks", true, None), ("sales_heatmap", false, None)],
            5 => &[("ai_assistant", true, Some(now + chrono::Duration::days(7)))],
            _ => &[],
        };
        for &(feature, enabled, expires_at) in overrides {
            override_rows.push(OverrideRow {
                tenant_id: id.clone(),
                feature,
                enabled,
                reason: Some("bench"),
                actor: "system:bench",
                expires_at,
                created_at: now,
            });
        }
        let key = tokens::generate("tp_tk_");
        key_rows.push(KeyRow {
            id: Uuid::new_v4().to_string(),
            kind: "tenant",
            tenant_id: Some(id),
            name: "bench key",
            token_hash: tokens::hash(&key),
            created_at: now,
        });
        keys.push(key);
    }
    for o in &override_rows {
        ensure!(
            catalogue::feature(o.feature).is_some(),
            "feature {} is not in the catalogue",
            o.feature
        );
    }
    conn.immediate_transaction(|c| {
        for chunk in tenant_rows.chunks(CHUNK) {
            diesel::insert_into(tenants::table)
                .values(chunk)
                .execute(c)?;
        }
        diesel::QueryResult::Ok(())
    })
    .context("inserting tenants")?;
    conn.immediate_transaction(|c| {
        for chunk in key_rows.chunks(CHUNK) {
            diesel::insert_into(api_tokens::table)
                .values(chunk)
                .execute(c)?;
        }
        for chunk in override_rows.chunks(CHUNK) {
            diesel::insert_into(feature_overrides::table)
                .values(chunk)
                .execute(c)?;
        }
        diesel::QueryResult::Ok(())
    })
    .context("inserting tenant keys and overrides")?;
    Ok(keys)
}

pub(super) fn write_keys(path: &Path, keys: &[String]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for k in keys {
        writeln!(w, "{k}")?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_end_at_head() {
        let v = schema_versions().expect("versions");
        assert_eq!(v.last().copied(), catalogue::head());
        assert!(v.len() > 1);
    }
}
