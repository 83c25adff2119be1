//! Tenants: the filtered, paged list and one tenant's page (schema, phase,
//! effective features with reasons, overrides, backups).

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use tenantplane_backup::BackupFilter;
use tenantplane_control_db::{validate, Error};
use tenantplane_flags::overrides::{self, OverrideRequest};
use tenantplane_fleet::registry::{self, Tenant, TenantFilter};
use tenantplane_migrations::catalogue;

use super::backups::BackupLine;
use super::page::{html, see_other, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

/// The list's filters, kept in the URL.
#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    server: String,
    /// `key=value`
    #[serde(default)]
    label: String,
    #[serde(default)]
    cursor: String,
}

impl Filters {
    /// The query string of these filters without the cursor.
    fn query(&self) -> String {
        serde_urlencoded::to_string([
            ("status", &self.status),
            ("plan", &self.plan),
            ("phase", &self.phase),
            ("server", &self.server),
            ("label", &self.label),
        ])
        .unwrap_or_default()
    }
}

pub struct TenantLine {
    id: String,
    slug: String,
    name: String,
    status: String,
    plan: String,
    server: String,
    version: String,
    phase: String,
    labels: String,
}

fn line(t: Tenant) -> TenantLine {
    TenantLine {
        labels: t
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        id: t.id,
        slug: t.slug,
        name: t.name,
        status: t.status,
        plan: t.plan.unwrap_or_else(|| "-".into()),
        server: t.server,
        version: t.schema_version.unwrap_or_else(|| "none".into()),
        phase: t.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
    }
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct ListPage {
    layout: Layout,
    f: Filters,
    tenants: Vec<TenantLine>,
    next: Option<String>,
    query: String,
}

#[get("/tenants")]
pub async fn list(
    state: web::Data<AppState>,
    s: ConsoleSession,
    q: web::Query<Filters>,
) -> Result<HttpResponse, ConsoleError> {
    let f = q.into_inner();
    let some = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let mut filter = TenantFilter {
        status: some(&f.status),
        labels: Vec::new(),
        server: some(&f.server),
        phase: None,
        plan: some(&f.plan),
        limit: Some(50),
        cursor: some(&f.cursor),
    };
    if let Some(l) = some(&f.label) {
        filter.labels.push(validate::label_pair(&l)?);
    }
    if let Some(p) = some(&f.phase) {
        filter.phase = Some(
            p.parse()
                .map_err(|_| Error::invalid(format!("phase must be 0 to 7, not {p:?}")))?,
        );
    }
    let db = state.db.clone();
    let page = blocking(move || registry::list(&db, &filter)).await?;
    html(&ListPage {
        layout: Layout::new("Tenants", Some(s.csrf()), "tenants"),
        query: f.query(),
        f,
        tenants: page.items.into_iter().map(line).collect(),
        next: page.next_cursor,
    })
}

pub struct FeatureLine {
    name: String,
    enabled: bool,
    reason: String,
    phase: u8,
}

#[derive(Template)]
#[template(path = "console/tenant.html")]
struct ShowPage {
    layout: Layout,
    t: TenantLine,
    effective_plan: String,
    features: Vec<FeatureLine>,
    catalogue: Vec<&'static str>,
    backups: Vec<BackupLine>,
    audit: Vec<AuditLine>,
    keys: Vec<(String, String, String)>,
    plans: Vec<String>,
    plan_slug: String,
}

pub struct AuditLine {
    when: String,
    actor: String,
    action: String,
    after: String,
}

#[get("/tenants/{id}")]
pub async fn show(
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let id = id.into_inner();
    let (tenant, backups, trail, keys, plans) = blocking(move || {
        let t = registry::get(&db, &id)?;
        let keys = tenantplane_access::keys::list(&db, &t.id)?;
        let plans = tenantplane_flags::plans::list(&db)?;
        let trail = tenantplane_control_db::audit::list(&mut *db.conn()?, Some(&t.id), 20)?;
        let b = tenantplane_backup::list(
            &db,
            &BackupFilter {
                tenant: Some(t.id.clone()),
                limit: Some(20),
                ..BackupFilter::default()
            },
        )?;
        Ok((t, b, trail, keys, plans))
    })
    .await?;
    let features = state.flags.evaluate(&tenant.id);
    html(&ShowPage {
        layout: Layout::new(format!("Tenant {}", tenant.slug), Some(s.csrf()), "tenants"),
        effective_plan: features
            .as_ref()
            .and_then(|f| f.effective_plan.clone())
            .unwrap_or_else(|| "-".into()),
        features: features
            .map(|f| {
                f.features
                    .iter()
                    .map(|x| FeatureLine {
                        name: x.feature.to_string(),
                        enabled: x.enabled,
                        reason: reason(&x.reason),
                        phase: x.phase,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        catalogue: catalogue::FEATURES.iter().map(|f| f.name).collect(),
        backups: backups.items.into_iter().map(BackupLine::from).collect(),
        audit: trail
            .into_iter()
            .map(|a| AuditLine {
                when: a.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                actor: a.actor,
                action: a.action,
                after: a
                    .after_state
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            })
            .collect(),
        keys: keys
            .into_iter()
            .map(|(id, name, at)| (id, name, at.format("%Y-%m-%d %H:%M UTC").to_string()))
            .collect(),
        plans: plans.into_iter().map(|p| p.slug).collect(),
        plan_slug: tenant.plan.clone().unwrap_or_default(),
        t: line(tenant),
    })
}

#[derive(Deserialize)]
pub struct OverrideForm {
    #[serde(default)]
    csrf: String,
    feature: String,
    /// `on` or `off`
    enabled: String,
    #[serde(default)]
    reason: String,
    /// Hours from now; empty for no expiry.
    #[serde(default)]
    expires_in_hours: String,
}

#[post("/tenants/{id}/overrides")]
pub async fn set_override(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<OverrideForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    s.check_csrf(&req, Some(&form.csrf))?;
    let id = id.into_inner();
    let expires_at = match form.expires_in_hours.trim() {
        "" => None,
        h => {
            let h: i64 = h
                .parse()
                .ok()
                .filter(|h| (1..=24 * 365).contains(h))
                .ok_or_else(|| Error::invalid("expiry must be 1 to 8760 hours"))?;
            Some(chrono::Utc::now() + chrono::Duration::hours(h))
        }
    };
    let request = OverrideRequest {
        enabled: form.enabled == "on",
        reason: Some(form.reason.trim().to_string()).filter(|r| !r.is_empty()),
        expires_at,
    };
    let db = state.db.clone();
    let actor = s.actor.clone();
    let tid = id.clone();
    blocking(move || overrides::set(&db, &actor, &tid, &form.feature, request)).await?;
    state.changed().await?;
    Ok(see_other(&format!("/console/tenants/{id}")))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[post("/tenants/{id}/overrides/{feature}/clear")]
pub async fn clear_override(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let (id, feature) = path.into_inner();
    let db = state.db.clone();
    let actor = s.actor.clone();
    let tid = id.clone();
    blocking(move || overrides::clear(&db, &actor, &tid, &feature)).await?;
    state.changed().await?;
    Ok(see_other(&format!("/console/tenants/{id}")))
}

/// The wire name of a reason (`PLAN`, `PENDING_MIGRATION`, …).
fn reason<T: serde::Serialize>(r: &T) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct PlanForm {
    #[serde(default)]
    csrf: String,
    plan: String,
}

/// Moves the tenant to another plan (features needing a newer schema wait
/// for the one-tenant rollout the change queues).
#[post("/tenants/{id}/plan")]
pub async fn change_plan(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<PlanForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    s.check_csrf(&req, Some(&form.csrf))?;
    let id = id.into_inner();
    let db = state.db.clone();
    let snap = state.flags.snapshot();
    let actor = s.actor.clone();
    let tid = id.clone();
    blocking(move || tenantplane_flags::plans::change(&db, &snap, &actor, &tid, &form.plan, None))
        .await?;
    state.changed().await?;
    Ok(see_other(&format!("/console/tenants/{id}")))
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

#[derive(Template)]
#[template(path = "console/key_issued.html")]
struct KeyIssued {
    layout: Layout,
    tenant_id: String,
    name: String,
    key: String,
}

/// Issues a tenant API key and shows it this once (no redirect: the page
/// is the only place the key ever appears; it is not cached).
#[post("/tenants/{id}/keys")]
pub async fn issue_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    s.check_csrf(&req, Some(&form.csrf))?;
    let db = state.db.clone();
    let actor = s.actor.clone();
    let tid = id.into_inner();
    let name = Some(form.name.trim().to_string()).filter(|n| !n.is_empty());
    let key = blocking(move || {
        tenantplane_access::keys::issue(
            &db,
            &actor,
            &tid,
            tenantplane_access::keys::KeyRequest { name },
        )
    })
    .await?;
    state.changed().await?;
    html(&KeyIssued {
        layout: Layout::new("Key issued", Some(s.csrf()), "tenants"),
        tenant_id: key.tenant,
        name: key.name,
        key: key.key,
    })
}

#[post("/tenants/{id}/keys/{key_id}/revoke")]
pub async fn revoke_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let (id, key_id) = path.into_inner();
    let db = state.db.clone();
    let actor = s.actor.clone();
    let tid = id.clone();
    blocking(move || tenantplane_access::keys::revoke(&db, &actor, &tid, &key_id)).await?;
    state.changed().await?;
    Ok(see_other(&format!("/console/tenants/{id}")))
}
