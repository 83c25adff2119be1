//! A tenant's backups from its page: take one, verify one, restore one
//! after a confirmation page that says what will happen. The same backup
//! crate calls as `/v1/tenants/{id}/backups` and `/v1/backups/{id}/…`.

use actix_web::{get, post, web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use serde::Deserialize;
use tenantplane_backup::{self as backup, Reason};
use tenantplane_fleet::registry;

use super::page::{html, see_other, ConsoleError, Layout};
use super::session::ConsoleSession;
use crate::error::blocking;
use crate::AppState;

/// A backup as the console's tables show it.
pub struct BackupLine {
    pub id: String,
    pub tenant_id: String,
    pub state: String,
    pub reason: String,
    pub version: String,
    pub created: String,
    pub size: String,
    /// When it was verified, or why verification failed, or empty.
    pub verified: String,
    pub error: String,
    pub pinned: bool,
    /// Completed or verified: it can be verified and restored.
    pub usable: bool,
}

/// `12.3 KiB`, `4.5 MiB`.
pub fn size(bytes: Option<i64>) -> String {
    match bytes {
        None => String::new(),
        Some(n) if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        Some(n) => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

pub fn when(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl From<backup::Backup> for BackupLine {
    fn from(b: backup::Backup) -> Self {
        let usable = b.is_usable();
        BackupLine {
            verified: match (&b.verified_at, &b.verify_error) {
                (Some(t), _) => when(*t),
                (None, Some(e)) => format!("failed: {}", clip(e, 200)),
                (None, None) => String::new(),
            },
            error: b.error.as_deref().map(|e| clip(e, 300)).unwrap_or_default(),
            size: size(b.size_bytes),
            created: when(b.created_at),
            version: b.schema_version.unwrap_or_else(|| "-".into()),
            id: b.id,
            tenant_id: b.tenant_id,
            state: b.state,
            reason: b.reason,
            pinned: b.pinned,
            usable,
        }
    }
}

/// The first `n` characters of an error (whole chains can be long).
pub fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn back_to(tenant_id: &str) -> HttpResponse {
    see_other(&format!("/console/tenants/{tenant_id}#h-backups"))
}

/// Takes a manual backup now (answers when it is stored, like the API).
/// A failed backup is recorded as such and shows in the list with its error.
#[post("/tenants/{id}/backups")]
pub async fn take(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let db = state.db.clone();
    let store = state.backups.clone();
    let actor = s.actor.clone();
    let id = id.into_inner();
    // Resolve first: an unknown tenant is a 404 page, not a failed backup.
    let tenant = {
        let (db, id) = (db.clone(), id.clone());
        blocking(move || registry::get(&db, &id)).await?
    };
    let tid = tenant.id.clone();
    let taken =
        blocking(move || backup::create_by(&db, &*store, &tid, Reason::Manual, &actor)).await;
    match taken {
        Ok(_) => Ok(back_to(&tenant.id)),
        // The row says `failed` with the whole chain; the page shows it.
        Err(e) if e.status_code().is_server_error() => {
            tracing::warn!(tenant = %tenant.id, error = %e, "console backup failed");
            Ok(back_to(&tenant.id))
        }
        Err(e) => Err(e.into()),
    }
}

/// Verifies a backup now: restores it into a scratch database and compares
/// it with its manifest; the row says `verified` or carries the error.
#[post("/backups/{id}/verify")]
pub async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    s.check_csrf(&req, Some(&form.csrf))?;
    let db = state.db.clone();
    let store = state.backups.clone();
    let id = id.into_inner();
    let b = {
        let (db, id) = (db.clone(), id.clone());
        blocking(move || backup::get(&db, &id)).await?
    };
    blocking(move || backup::verify(&db, &*store, &id)).await?;
    Ok(back_to(&b.tenant_id))
}

#[derive(Template)]
#[template(path = "console/restore_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    b: BackupLine,
    slug: String,
    current_version: String,
    status: String,
}

/// What restoring would do, with the buttons that do it. Nothing changes
/// until one of them is posted.
#[get("/backups/{id}/restore")]
pub async fn confirm(
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let db = state.db.clone();
    let id = id.into_inner();
    let (b, t) = blocking(move || {
        let b = backup::get(&db, &id)?;
        let t = registry::find_any(&mut *db.conn()?, &b.tenant_id)?;
        Ok((b, t))
    })
    .await?;
    html(&ConfirmPage {
        layout: Layout::new(
            format!("Restore a backup of {}", t.slug),
            Some(s.csrf()),
            "tenants",
        ),
        b: b.into(),
        slug: t.slug,
        current_version: t.schema_version.unwrap_or_else(|| "none".into()),
        status: t.status,
    })
}

#[derive(Deserialize)]
pub struct RestoreForm {
    #[serde(default)]
    csrf: String,
    /// `in_place` or `new_tenant`
    mode: String,
    /// The new tenant's slug (`new_tenant`).
    #[serde(default)]
    slug: String,
}

/// Restores, as confirmed: over its own tenant (after a `pre_restore`
/// safety backup) or as a new tenant. Refusals (a backup not usable, a
/// tenant busy migrating) change nothing and show as an error page.
#[post("/backups/{id}/restore")]
pub async fn restore(
    req: HttpRequest,
    state: web::Data<AppState>,
    s: ConsoleSession,
    id: web::Path<String>,
    form: web::Form<RestoreForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    s.check_csrf(&req, Some(&form.csrf))?;
    let db = state.db.clone();
    let store = state.backups.clone();
    let actor = s.actor.clone();
    let id = id.into_inner();
    let restored = match form.mode.as_str() {
        "in_place" => blocking(move || backup::restore_in_place(&db, &*store, &id, &actor)).await?,
        "new_tenant" => {
            let slug = form.slug.trim().to_string();
            blocking(move || backup::restore_new_tenant(&db, &*store, &id, &slug, None, &actor))
                .await?
        }
        other => {
            return Err(tenantplane_control_db::Error::invalid(format!(
                "mode must be in_place or new_tenant, not {other:?}"
            ))
            .into())
        }
    };
    // The tenant's schema version changed (or a tenant was added): the
    // feature snapshot follows, as after the API's restore.
    state.changed().await?;
    Ok(see_other(&format!(
        "/console/tenants/{}",
        restored.tenant.id
    )))
}
