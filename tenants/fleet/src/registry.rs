//! The tenant registry: create (with a real database), list, get, patch,
//! soft-delete.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use tenantplane_migrations::{catalogue, SchemaTarget};
use uuid::Uuid;

use crate::servers::{self, DatabaseServer};
use crate::tenant_db::TenantDbLocation;
use tenantplane_api_types::drift::DriftStatus;
pub use tenantplane_api_types::tenants::{NewTenant, Tenant, TenantPage, TenantPatch};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::changes;
use tenantplane_control_db::db::{locks, write_tx, ControlBackend, ControlConnection, ControlDb};
use tenantplane_control_db::error::{report, DbError, Error, Result};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{
    database_servers, plans, tenant_drift, tenant_labels, tenants,
};
use tenantplane_control_db::validate;

pub const MAX_PAGE: i64 = 500;
pub const DEFAULT_PAGE: i64 = 50;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenants)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub contact_email: Option<String>,
    pub server_id: String,
    pub schema_version: Option<String>,
    pub plan_id: Option<String>,
    pub trial_ends_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
}

/// Filters of `GET /v1/tenants`.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub status: Option<String>,
    pub labels: Vec<(String, String)>,
    pub server: Option<String>,
    pub phase: Option<u8>,
    pub plan: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// How long a `provisioning` row may exist before the sweeper treats it as
/// left behind by a crashed process.
pub const PROVISIONING_GRACE: Duration = Duration::minutes(10);

fn load_labels(
    conn: &mut ControlConnection,
    ids: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, String, String)> = tenant_labels::table
            .filter(tenant_labels::tenant_id.eq_any(chunk))
            .select((
                tenant_labels::tenant_id,
                tenant_labels::key,
                tenant_labels::value,
            ))
            .load(conn)?;
        for (t, k, v) in rows {
            out.entry(t).or_default().insert(k, v);
        }
    }
    Ok(out)
}

/// The plan id for a slug; with no slug, the `free` plan when it exists.
fn resolve_plan(conn: &mut ControlConnection, slug: Option<&str>) -> Result<Option<String>> {
    let wanted = slug.unwrap_or(DEFAULT_PLAN);
    let found: Option<(String, bool)> = plans::table
        .filter(plans::slug.eq(wanted))
        .select((plans::id, plans::active))
        .first(conn)
        .optional()?;
    match (found, slug) {
        (Some((id, true)), _) => Ok(Some(id)),
        (Some((_, false)), Some(p)) => {
            Err(Error::invalid(format!("plan '{p}' takes no new tenants")))
        }
        (None, Some(p)) => Err(Error::invalid(format!("unknown plan '{p}'"))),
        (_, None) => Ok(None),
    }
}

/// The plan new tenants get when none is named.
pub const DEFAULT_PLAN: &str = "free";

fn assemble(conn: &mut ControlConnection, rows: Vec<TenantRow>) -> Result<Vec<Tenant>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut labels = load_labels(conn, &ids)?;
    let plan_slugs: BTreeMap<String, String> = plans::table
        .select((plans::id, plans::slug))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    let mut drift = load_drift(conn, &ids)?;
    let names: BTreeMap<String, String> = database_servers::table
        .select((database_servers::id, database_servers::name))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| Tenant {
            labels: labels.remove(&r.id).unwrap_or_default(),
            drift: drift.remove(&r.id),
            server: names.get(&r.server_id).cloned().unwrap_or_default(),
            phase: catalogue::phase_of(r.schema_version.as_deref()),
            id: r.id,
            slug: r.slug,
            name: r.name,
            status: r.status,
            contact_email: r.contact_email,
            server_id: r.server_id,
            schema_version: r.schema_version,
            plan: r.plan_id.as_ref().and_then(|p| plan_slugs.get(p).cloned()),
            trial_ends_at: r.trial_ends_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect())
}

/// The last drift check of each tenant (written by `tenantplane-drift`).
fn load_drift(
    conn: &mut ControlConnection,
    ids: &[String],
) -> Result<BTreeMap<String, DriftStatus>> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, bool, i32, Option<String>, NaiveDateTime)> = tenant_drift::table
            .filter(tenant_drift::tenant_id.eq_any(chunk))
            .select((
                tenant_drift::tenant_id,
                tenant_drift::drifted,
                tenant_drift::difference_count,
                tenant_drift::schema_version,
                tenant_drift::checked_at,
            ))
            .load(conn)?;
        for (id, drifted, differences, schema_version, checked_at) in rows {
            out.insert(
                id,
                DriftStatus {
                    drifted,
                    differences,
                    schema_version,
                    checked_at,
                },
            );
        }
    }
    Ok(out)
}

/// Finds a live (not deleted) tenant row by id or slug.
pub fn find_row(conn: &mut ControlConnection, id_or_slug: &str) -> Result<TenantRow> {
    let q = tenants::table
        .filter(tenants::deleted_at.is_null())
        .select(TenantRow::as_select())
        .into_boxed::<ControlBackend>();
    let q = if Uuid::parse_str(id_or_slug).is_ok() {
        q.filter(tenants::id.eq(id_or_slug.to_string()))
    } else {
        q.filter(tenants::slug.eq(id_or_slug.to_string()))
    };
    q.first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("tenant", id_or_slug))
}

/// Finds a tenant row by id or slug, deleted ones included.
pub fn find_any(conn: &mut ControlConnection, id_or_slug: &str) -> Result<TenantRow> {
    tenants::table
        .filter(tenants::id.eq(id_or_slug).or(tenants::slug.eq(id_or_slug)))
        .select(TenantRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("tenant", id_or_slug))
}

pub fn get(db: &ControlDb, id_or_slug: &str) -> Result<Tenant> {
    let mut conn = db.conn()?;
    let row = find_row(&mut conn, id_or_slug)?;
    one(&mut conn, row)
}

fn one(conn: &mut ControlConnection, row: TenantRow) -> Result<Tenant> {
    assemble(conn, vec![row])?
        .pop()
        .ok_or_else(|| Error::not_found("tenant", "(deleted while reading)"))
}

fn insert_labels(
    conn: &mut ControlConnection,
    tenant_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let rows: Vec<_> = labels
        .iter()
        .map(|(k, v)| {
            (
                tenant_labels::tenant_id.eq(tenant_id),
                tenant_labels::key.eq(k),
                tenant_labels::value.eq(v),
            )
        })
        .collect();
    for row in rows {
        diesel::insert_into(tenant_labels::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// Creates a tenant and its database, migrated to the requested schema.
///
/// The row is written first as `provisioning` (so the slug is reserved and a
/// crash leaves a trace the sweeper cleans up), then the database is created
/// and migrated, then the row turns `active`. Any failure drops what was
/// created and deletes the row: nothing is left behind.
pub fn create(db: &ControlDb, actor: &Actor, new: NewTenant) -> Result<Tenant> {
    validate::slug(&new.slug)?;
    validate::name(&new.name)?;
    validate::labels(&new.labels)?;
    if let Some(email) = &new.contact_email {
        validate::email(email)?;
    }
    let plan_id = resolve_plan(&mut *db.conn()?, new.plan.as_deref())?;
    let target: SchemaTarget = new
        .schema
        .as_deref()
        .unwrap_or("head")
        .parse()
        .map_err(|e: tenantplane_migrations::TargetError| Error::invalid(e.to_string()))?;
    let target_version = target.version();

    let id = Uuid::new_v4();
    let now = Utc::now().naive_utc();
    let mut conn = db.conn()?;
    let server: DatabaseServer = write_tx(&mut conn, Some(locks::PLACEMENT), |conn| {
        let server = servers::place(conn, new.server.as_deref())?;
        let taken: Option<Option<NaiveDateTime>> = tenants::table
            .filter(tenants::slug.eq(&new.slug))
            .select(tenants::deleted_at)
            .first(conn)
            .optional()?;
        match taken {
            Some(None) => return Err(Error::Conflict(format!("slug '{}' is taken", new.slug))),
            Some(Some(_)) => {
                return Err(Error::Conflict(format!(
                    "slug '{}' belongs to a deleted tenant whose database is kept",
                    new.slug
                )))
            }
            None => {}
        }
        let row = TenantRow {
            id: id.to_string(),
            slug: new.slug.clone(),
            name: new.name.trim().to_string(),
            status: "provisioning".to_string(),
            contact_email: new.contact_email.clone(),
            server_id: server.id.clone(),
            schema_version: None,
            plan_id: plan_id.clone(),
            trial_ends_at: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        diesel::insert_into(tenants::table)
            .values(&row)
            .execute(conn)
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(format!("slug '{}' is taken", new.slug)),
                other => other,
            })?;
        insert_labels(conn, &row.id, &new.labels)?;
        Ok(server)
    })?;

    let location = TenantDbLocation::new(&server, &id);
    let mut created = false;
    let provisioned = provision(&location, &new.slug, target_version, &mut created);
    let finished = provisioned.and_then(|version| {
        write_tx(&mut conn, None, |conn| {
            diesel::update(tenants::table.find(id.to_string()))
                .set((
                    tenants::status.eq("active"),
                    tenants::schema_version.eq(version.as_deref()),
                    tenants::updated_at.eq(Utc::now().naive_utc()),
                ))
                .execute(conn)?;
            changes::bump(conn)?;
            let row = find_row(conn, &id.to_string())?;
            let tenant = one(conn, row)?;
            audit::record(
                conn,
                actor,
                Change {
                    action: "tenant.create",
                    resource_type: "tenant",
                    resource_id: Some(&tenant.id),
                    tenant_id: Some(&tenant.id),
                    before: None,
                    after: audit::snapshot(&tenant),
                },
            )?;
            event(conn, EventKind::TenantCreated, &tenant)?;
            Ok(tenant)
        })
    });
    match finished {
        Ok(tenant) => {
            tracing::info!(tenant_id = %tenant.id, slug = %tenant.slug, server = %tenant.server,
                schema_version = ?tenant.schema_version, "tenant created");
            Ok(tenant)
        }
        Err(err) => {
            tracing::warn!(tenant_id = %id, slug = %new.slug, error = %report(&err), "tenant creation failed; undoing");
            if created {
                if let Err(e) = location.drop_if_exists() {
                    // The row stays `provisioning`; the sweeper retries the drop.
                    tracing::error!(tenant_id = %id, error = %report(&e), "could not drop the half-created tenant database");
                    return Err(err);
                }
            }
            diesel::delete(tenants::table.find(id.to_string())).execute(&mut conn)?;
            Err(err)
        }
    }
}

/// Creates and migrates the database; returns the version it reached.
///
/// `created` turns true once something exists that a failure must drop
/// (creating a file, schema or database is all-or-nothing: when `create`
/// fails, nothing is there).
fn provision(
    location: &TenantDbLocation,
    slug: &str,
    target: Option<&str>,
    created: &mut bool,
) -> Result<Option<String>> {
    location
        .create()
        .map_err(|e| e.for_tenant(slug, "creating the database failed"))?;
    *created = true;
    let mut conn = location
        .connect()
        .map_err(|e| e.for_tenant(slug, "connecting failed"))?;
    conn.migrate_to(target).map_err(|e| {
        // Our own words name the failed version; the driver's text stays
        // in the source, for the log.
        Error::tenant_db(
            slug,
            format!("migrating failed: {e}"),
            DbError::Migration(Box::new(e)),
        )
    })?;
    Ok(target.map(str::to_string))
}

/// Narrows a tenants query to the tenants carrying every `key = value` label.
pub fn with_labels<'a, 'l, ST: 'a>(
    mut q: tenants::BoxedQuery<'a, ControlBackend, ST>,
    labels: impl IntoIterator<Item = (&'l String, &'l String)>,
) -> tenants::BoxedQuery<'a, ControlBackend, ST> {
    for (k, v) in labels {
        let with_label = tenant_labels::table
            .filter(tenant_labels::key.eq(k.clone()))
            .filter(tenant_labels::value.eq(v.clone()))
            .select(tenant_labels::tenant_id);
        q = q.filter(tenants::id.eq_any(with_label));
    }
    q
}

pub fn list(db: &ControlDb, filter: &TenantFilter) -> Result<TenantPage> {
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let mut conn = db.conn()?;
    let mut q = tenants::table
        .filter(tenants::deleted_at.is_null())
        .select(TenantRow::as_select())
        .into_boxed::<ControlBackend>();
    if let Some(status) = &filter.status {
        if !["provisioning", "active", "suspended"].contains(&status.as_str()) {
            return Err(Error::invalid(format!(
                "invalid status filter {status:?}: provisioning, active or suspended"
            )));
        }
        q = q.filter(tenants::status.eq(status.clone()));
    }
    if let Some(server) = &filter.server {
        let s = servers::find(&mut conn, server)
            .map_err(|_| Error::invalid(format!("unknown server '{server}'")))?;
        q = q.filter(tenants::server_id.eq(s.id));
    }
    if let Some(plan) = &filter.plan {
        let id: Option<String> = plans::table
            .filter(plans::slug.eq(plan))
            .select(plans::id)
            .first(&mut conn)
            .optional()?;
        let id = id.ok_or_else(|| Error::invalid(format!("unknown plan '{plan}'")))?;
        q = q.filter(tenants::plan_id.eq(id));
    }
    if let Some(phase) = filter.phase {
        if phase > catalogue::MAX_PHASE {
            return Err(Error::invalid(format!(
                "phase must be 0 to {}",
                catalogue::MAX_PHASE
            )));
        }
        // Versions that reach exactly `phase`: from the phase's own version up
        // to (not including) the next phase that brings a new version.
        match catalogue::phase_version(phase) {
            None => q = q.filter(tenants::id.is_null()),
            Some(lo) => {
                q = q.filter(tenants::schema_version.ge(lo.to_string()));
                let next = (phase + 1..=catalogue::MAX_PHASE)
                    .filter_map(catalogue::phase_version)
                    .find(|v| *v > lo);
                if catalogue::phase_of(Some(lo)) != Some(phase) {
                    // A phase without migrations of its own (5, 6) is reached
                    // only together with the highest such phase.
                    q = q.filter(tenants::id.is_null());
                } else if let Some(hi) = next {
                    q = q.filter(tenants::schema_version.lt(hi.to_string()));
                }
            }
        }
    }
    q = with_labels(q, filter.labels.iter().map(|(k, v)| (k, v)));
    if let Some(cursor) = &filter.cursor {
        // A cursor is the last slug of the page before: one no tenant ever
        // had was not made by us (deleted tenants keep their row and slug).
        let known = tenants::table
            .filter(tenants::slug.eq(cursor))
            .select(tenants::id)
            .first::<String>(&mut conn)
            .optional()?
            .is_some();
        if !known {
            return Err(Error::invalid(format!(
                "invalid cursor {cursor:?}: pass the next_cursor of the page before"
            )));
        }
        q = q.filter(tenants::slug.gt(cursor.clone()));
    }
    let mut rows: Vec<TenantRow> = q
        .order(tenants::slug.asc())
        .limit(limit + 1)
        .load(&mut conn)?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.slug.clone())
    } else {
        None
    };
    Ok(TenantPage {
        items: assemble(&mut conn, rows)?,
        next_cursor,
    })
}

pub fn patch(
    db: &ControlDb,
    actor: &Actor,
    id_or_slug: &str,
    patch: TenantPatch,
) -> Result<Tenant> {
    if let Some(name) = &patch.name {
        validate::name(name)?;
    }
    if let Some(labels) = &patch.labels {
        validate::labels(labels)?;
    }
    if let Some(email) = patch.contact_email.as_deref().filter(|e| !e.is_empty()) {
        validate::email(email)?;
    }
    if let Some(status) = &patch.status {
        if status != "active" && status != "suspended" {
            return Err(Error::invalid(format!(
                "invalid status {status:?}: 'active' or 'suspended'"
            )));
        }
    }
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let row = find_row(conn, id_or_slug)?;
        if row.status == "provisioning" {
            return Err(Error::Conflict(format!(
                "tenant '{}' is still being provisioned",
                row.slug
            )));
        }
        let before = one(conn, row.clone())?;
        let now = Utc::now().naive_utc();
        diesel::update(tenants::table.find(&row.id))
            .set((
                tenants::name.eq(patch.name.as_deref().map(str::trim).unwrap_or(&row.name)),
                tenants::contact_email.eq(match patch.contact_email.as_deref() {
                    None => row.contact_email.clone(),
                    Some("") => None,
                    Some(e) => Some(e.to_string()),
                }),
                tenants::status.eq(patch.status.as_deref().unwrap_or(&row.status)),
                tenants::updated_at.eq(now),
            ))
            .execute(conn)?;
        if let Some(labels) = &patch.labels {
            diesel::delete(tenant_labels::table.filter(tenant_labels::tenant_id.eq(&row.id)))
                .execute(conn)?;
            insert_labels(conn, &row.id, labels)?;
        }
        let updated = find_row(conn, &row.id)?;
        let after = one(conn, updated)?;
        changes::bump(conn)?;
        let action = match (before.status.as_str(), after.status.as_str()) {
            ("active", "suspended") => "tenant.suspend",
            ("suspended", "active") => "tenant.resume",
            _ => "tenant.update",
        };
        audit::record(
            conn,
            actor,
            Change {
                action,
                resource_type: "tenant",
                resource_id: Some(&row.id),
                tenant_id: Some(&row.id),
                before: audit::snapshot(&before),
                after: audit::snapshot(&after),
            },
        )?;
        if action == "tenant.suspend" {
            event(conn, EventKind::TenantSuspended, &after)?;
        }
        Ok(after)
    })
}

/// Soft delete: the row is marked and hidden, the tenant database is kept, the
/// slug stays reserved.
pub fn delete(db: &ControlDb, actor: &Actor, id_or_slug: &str) -> Result<()> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let row = find_row(conn, id_or_slug)?;
        if row.status == "provisioning" {
            return Err(Error::Conflict(format!(
                "tenant '{}' is still being provisioned",
                row.slug
            )));
        }
        let before = one(conn, row.clone())?;
        let now = Utc::now().naive_utc();
        diesel::update(tenants::table.find(&row.id))
            .set((
                tenants::deleted_at.eq(Some(now)),
                tenants::updated_at.eq(now),
            ))
            .execute(conn)?;
        changes::bump(conn)?;
        audit::record(
            conn,
            actor,
            Change {
                action: "tenant.delete",
                resource_type: "tenant",
                resource_id: Some(&row.id),
                tenant_id: Some(&row.id),
                before: audit::snapshot(&before),
                after: None,
            },
        )?;
        event(conn, EventKind::TenantDeleted, &before)
    })
}

/// Records a tenant's lifecycle event in the outbox (inside the caller's
/// transaction).
fn event(conn: &mut ControlConnection, kind: EventKind, t: &Tenant) -> Result<()> {
    outbox::record(
        conn,
        kind,
        Some(&t.id),
        &tenantplane_api_types::notify::TenantEvent {
            tenant_id: t.id.clone(),
            slug: t.slug.clone(),
            name: t.name.clone(),
            status: t.status.clone(),
            contact_email: t.contact_email.clone(),
            plan: t.plan.clone(),
        },
    )?;
    Ok(())
}

/// Cleans up tenants left `provisioning` by a crashed process: drops whatever
/// database was created and deletes the row. Returns how many were removed.
pub fn sweep_abandoned(db: &ControlDb, older_than: Duration) -> Result<usize> {
    let mut conn = db.conn()?;
    let cutoff = Utc::now().naive_utc() - older_than;
    let stale: Vec<(TenantRow, DatabaseServer)> = tenants::table
        .inner_join(database_servers::table)
        .filter(tenants::status.eq("provisioning"))
        .filter(tenants::created_at.lt(cutoff))
        .select((TenantRow::as_select(), DatabaseServer::as_select()))
        .load(&mut conn)?;
    let mut removed = 0;
    for (row, server) in stale {
        let Ok(id) = Uuid::parse_str(&row.id) else {
            continue;
        };
        let location = TenantDbLocation::new(&server, &id);
        match location.drop_if_exists() {
            Ok(()) => {
                diesel::delete(
                    tenants::table
                        .find(&row.id)
                        .filter(tenants::status.eq("provisioning")),
                )
                .execute(&mut conn)?;
                tracing::info!(tenant_id = %row.id, slug = %row.slug, "removed a tenant abandoned while provisioning");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(tenant_id = %row.id, error = %report(&e), "cannot drop abandoned tenant database yet")
            }
        }
    }
    Ok(removed)
}

/// Live (not deleted) tenants counted four ways, for the console overview.
#[derive(Debug, Clone, Default)]
pub struct FleetCounts {
    pub total: i64,
    pub by_status: Vec<(String, i64)>,
    /// Plan slug (`none` for tenants without a plan).
    pub by_plan: Vec<(String, i64)>,
    /// Server name.
    pub by_server: Vec<(String, i64)>,
    /// Schema version (`none` for an empty schema), oldest first.
    pub by_version: Vec<(String, i64)>,
}

/// Counts the live tenants by status, plan, server and schema version.
pub fn counts(db: &ControlDb) -> Result<FleetCounts> {
    use diesel::dsl::count_star;
    let mut conn = db.conn()?;
    let live = || tenants::table.filter(tenants::deleted_at.is_null());
    let by_status: Vec<(String, i64)> = live()
        .group_by(tenants::status)
        .select((tenants::status, count_star()))
        .order(tenants::status)
        .load(&mut conn)?;
    let by_plan_id: Vec<(Option<String>, i64)> = live()
        .group_by(tenants::plan_id)
        .select((tenants::plan_id, count_star()))
        .load(&mut conn)?;
    let slugs: BTreeMap<String, String> = plans::table
        .select((plans::id, plans::slug))
        .load::<(String, String)>(&mut conn)?
        .into_iter()
        .collect();
    let mut by_plan: Vec<(Option<String>, i64)> = by_plan_id
        .into_iter()
        .map(|(id, n)| (id.and_then(|id| slugs.get(&id).cloned()), n))
        .collect();
    by_plan.sort();
    let by_server: Vec<(String, i64)> = live()
        .inner_join(database_servers::table)
        .group_by(database_servers::name)
        .select((database_servers::name, count_star()))
        .order(database_servers::name)
        .load(&mut conn)?;
    let by_version: Vec<(Option<String>, i64)> = live()
        .group_by(tenants::schema_version)
        .select((tenants::schema_version, count_star()))
        .order(tenants::schema_version)
        .load(&mut conn)?;
    let none = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
    Ok(FleetCounts {
        total: by_status.iter().map(|(_, n)| n).sum(),
        by_status,
        by_plan: by_plan.into_iter().map(|(p, n)| (none(p), n)).collect(),
        by_server,
        by_version: by_version.into_iter().map(|(v, n)| (none(v), n)).collect(),
    })
}
