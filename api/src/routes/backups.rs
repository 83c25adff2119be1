//! `/v1/backups` and `/v1/tenants/{id}/backups`: taking, listing,
//! verifying, pinning, deleting and restoring tenant backups.
//!
//! Every call runs synchronously on a blocking thread: a backup, a
//! verification or a restore answers when it is done.

use actix_web::{delete, get, post, put, web, HttpResponse};
use serde::Deserialize;
use tenantplane_api_types::backups::{Backup, BackupPage, RestoreRequest, Restored};
use tenantplane_api_types::retention::{Report as RetentionReport, RetentionRequest};
use tenantplane_backup::{self as backup, BackupFilter, Reason};

use crate::auth::Operator;
use crate::error::{blocking, ApiError};
use crate::AppState;

/// The one mapping from the backup crate's row to the wire type.
fn wire(b: backup::Backup) -> Backup {
    let (tenant_slug, row_counts) = match &b.manifest {
        Some(m) => (
            Some(m.tenant_slug.clone()),
            Some(
                m.tables
                    .iter()
                    .map(|(name, t)| (name.clone(), t.rows))
                    .collect(),
            ),
        ),
        None => (None, None),
    };
    Backup {
        id: b.id,
        tenant_id: b.tenant_id,
        tenant_slug,
        server_kind: b.server_kind,
        state: b.state,
        reason: b.reason,
        schema_version: b.schema_version,
        artifact: b.artifact,
        size_bytes: b.size_bytes,
        sha256: b.sha256,
        pinned: b.pinned,
        error: b.error,
        verify_error: b.verify_error,
        row_counts,
        created_at: b.created_at,
        started_at: b.started_at,
        completed_at: b.completed_at,
        verified_at: b.verified_at,
    }
}

fn wire_restored(r: backup::Restored) -> Restored {
    Restored {
        tenant: r.tenant,
        backup: wire(r.backup),
        safety_backup: r.safety_backup.map(wire),
    }
}

/// Takes a manual backup of the tenant now and answers when it is stored.
/// A backup that fails answers with the error; its row stays `failed` with
/// the whole error chain.
#[utoipa::path(post, path = "/v1/tenants/{id}/backups", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 201, body = Backup), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the tenant is still being provisioned"),
        (status = 503, body = crate::error::ErrorBody, description = "the tenant database or the store failed; the backup is recorded as failed")))]
#[post("/v1/tenants/{id}/backups")]
pub async fn create(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let store = state.backups.clone();
    let b = blocking(move || backup::create_by(&db, &*store, &id, Reason::Manual, &op.0)).await?;
    Ok(HttpResponse::Created().json(wire(b)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Tenant id or slug (deleted tenants included).
    pub tenant: Option<String>,
    /// pending, running, completed, verified or failed
    #[param(pattern = "^(pending|running|completed|verified|failed)$")]
    pub state: Option<String>,
    /// 1 to 500, default 50
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Backups, newest first.
#[utoipa::path(get, path = "/v1/backups", tag = "backups", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = BackupPage), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "unknown tenant"),
        (status = 422, body = crate::error::ErrorBody)))]
#[get("/v1/backups")]
pub async fn list(
    state: web::Data<AppState>,
    _op: Operator,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let q = q.into_inner();
    let filter = BackupFilter {
        tenant: q.tenant,
        state: q.state,
        limit: q.limit,
        cursor: q.cursor,
    };
    let page = blocking(move || backup::list(&db, &filter)).await?;
    Ok(HttpResponse::Ok().json(BackupPage {
        items: page.items.into_iter().map(wire).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One backup.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Backup), (status = 404, body = crate::error::ErrorBody)))]
#[get("/v1/backups/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let b = blocking(move || backup::get(&db, &id)).await?;
    Ok(HttpResponse::Ok().json(wire(b)))
}

/// Verifies a backup now: checks the artifact's size and SHA-256, restores
/// it into a scratch database and compares every table with the manifest.
/// Answers with the backup `verified`, or `failed` with `verify_error`.
#[utoipa::path(post, path = "/v1/backups/{id}/verify", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Backup), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the backup is not completed"),
        (status = 503, body = crate::error::ErrorBody, description = "the store or the server could not be reached; nothing changed")))]
#[post("/v1/backups/{id}/verify")]
pub async fn verify(
    state: web::Data<AppState>,
    _op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let store = state.backups.clone();
    let b = blocking(move || backup::verify(&db, &*store, &id)).await?;
    Ok(HttpResponse::Ok().json(wire(b)))
}

async fn set_pinned(
    state: web::Data<AppState>,
    op: Operator,
    id: String,
    pinned: bool,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let b = blocking(move || backup::set_pinned(&db, &op.0, &id, pinned)).await?;
    Ok(HttpResponse::Ok().json(wire(b)))
}

/// Pins a backup: retention keeps it and it cannot be deleted.
#[utoipa::path(put, path = "/v1/backups/{id}/pin", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Backup), (status = 404, body = crate::error::ErrorBody)))]
#[put("/v1/backups/{id}/pin")]
pub async fn pin(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_pinned(state, op, id.into_inner(), true).await
}

/// Unpins a backup.
#[utoipa::path(delete, path = "/v1/backups/{id}/pin", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Backup), (status = 404, body = crate::error::ErrorBody)))]
#[delete("/v1/backups/{id}/pin")]
pub async fn unpin(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_pinned(state, op, id.into_inner(), false).await
}

/// Deletes a backup: its artifact and manifest, then its row.
#[utoipa::path(delete, path = "/v1/backups/{id}", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "pinned, or still being taken")))]
#[delete("/v1/backups/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let store = state.backups.clone();
    blocking(move || backup::delete(&db, &*store, &op.0, &id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Restores a completed or verified backup: `in_place` replaces its own
/// tenant (after a `pre_restore` safety backup; 200), `new_tenant` creates
/// a new tenant from it (201). A backup that is not usable, or whose
/// artifact turns out damaged (it is then marked `failed`), is refused with
/// 409 before anything changes.
#[utoipa::path(post, path = "/v1/backups/{id}/restore", tag = "backups", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RestoreRequest,
    responses((status = 200, body = Restored, description = "restored in place"),
        (status = 201, body = Restored, description = "restored as a new tenant"),
        (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "the backup is not usable, or the tenant is busy; nothing changed"),
        (status = 422, body = crate::error::ErrorBody)))]
#[post("/v1/backups/{id}/restore")]
pub async fn restore(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Json<RestoreRequest>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let store = state.backups.clone();
    let id = id.into_inner();
    let (restored, created) = match body.into_inner() {
        RestoreRequest::InPlace {} => (
            blocking(move || backup::restore_in_place(&db, &*store, &id, &op.0)).await?,
            false,
        ),
        RestoreRequest::NewTenant { slug, server } => (
            blocking(move || {
                backup::restore_new_tenant(&db, &*store, &id, &slug, server.as_deref(), &op.0)
            })
            .await?,
            true,
        ),
    };
    // The tenant's schema version changed (or a tenant was added): the
    // feature snapshot follows.
    state.changed().await?;
    let body = wire_restored(restored);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Applies a retention policy now to the backups of one tenant or of the
/// tenants a selector picks (all live tenants without either). Pinned
/// backups, backups in progress and each tenant's newest verified backup
/// are always kept, and a backup goes only when a newer verified backup of
/// its tenant exists. `dry_run` reports what would go and changes nothing.
/// A deletion that fails is listed under `errors` (the backup stays).
#[utoipa::path(post, path = "/v1/backups/retention", tag = "backups", security(("bearer" = [])),
    operation_id = "backups_retention", request_body = RetentionRequest,
    responses((status = 200, body = RetentionReport, description = "what was (or, in a dry run, would be) kept and deleted"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody, description = "unknown tenant"),
        (status = 422, body = crate::error::ErrorBody, description = "invalid policy or selector; nothing changed")))]
#[post("/v1/backups/retention")]
pub async fn retention(
    state: web::Data<AppState>,
    op: Operator,
    body: web::Json<RetentionRequest>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let store = state.backups.clone();
    let request = body.into_inner();
    let report = blocking(move || backup::run_retention(&db, &*store, request, &op.0)).await?;
    Ok(HttpResponse::Ok().json(report))
}
