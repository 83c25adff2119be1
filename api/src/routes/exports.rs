//! Tenant data exports: `/v1/tenant/exports` (a tenant key, its own tenant
//! only), `/v1/tenants/{id}/exports` (operators), and the download
//! `/v1/exports/download/{token}`, which needs no other credential than the
//! token in its path.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use tenantplane_api_types::exports::{Export, ExportRequest};
use tenantplane_backup::export::{self, DownloadError};
use tenantplane_control_db::Error;

use crate::auth::{Operator, TenantKey};
use crate::error::{blocking, ApiError, ErrorBody};
use crate::AppState;

/// Where a download token is redeemed, as an absolute URL of this API.
fn download_url(req: &HttpRequest, token: &str) -> String {
    let info = req.connection_info();
    format!(
        "{}://{}/v1/exports/download/{token}",
        info.scheme(),
        info.host()
    )
}

/// The export with a fresh download URL while it is ready.
async fn read(
    state: &AppState,
    req: &HttpRequest,
    tenant: String,
    id: String,
) -> Result<Export, ApiError> {
    let db = state.db.clone();
    let (mut e, token) = blocking(move || export::get_with_download(&db, &tenant, &id)).await?;
    e.download_url = token.map(|t| download_url(req, &t));
    Ok(e)
}

/// Asks for an export of the key's tenant: one file per table (JSON or
/// CSV) in a zip, made by a job. Answers 202 with the export `requested`;
/// read it until it is `ready` for its download URL. A suspended tenant's
/// key may read its exports but not request new ones.
#[utoipa::path(post, path = "/v1/tenant/exports", tag = "tenant", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat a request safely: the same key and request replay the first answer")), request_body = ExportRequest,
    responses((status = 202, body = Export), (status = 400, body = ErrorBody, description = "unknown format"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "`tenant_suspended`: a suspended tenant's key reads only"),
        (status = 409, body = ErrorBody, description = "the tenant is still being provisioned")))]
#[post("/v1/tenant/exports")]
pub async fn tenant_request(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: TenantKey,
    body: web::Json<ExportRequest>,
) -> Result<HttpResponse, ApiError> {
    crate::routes::tenant::writable(&state, &key.tenant_id).await?;
    let body = body.into_inner();
    let scope = key.actor.id.clone();
    crate::idempotent::once(&state, &req, &scope, &body, || async {
        let db = state.db.clone();
        let format = body.format;
        let e = blocking(move || export::request(&db, &key.tenant_id, format, &key.actor)).await?;
        Ok(HttpResponse::Accepted().json(e))
    })
    .await
}

/// One export of the key's tenant; while it is `ready`, with a fresh
/// `download_url` (each read issues a new one and invalidates the previous
/// one). Another tenant's export is not found.
#[utoipa::path(get, path = "/v1/tenant/exports/{id}", tag = "tenant", security(("bearer" = [])),
    params(("id" = String, Path, description = "export id")),
    responses((status = 200, body = Export), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/v1/tenant/exports/{id}")]
pub async fn tenant_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    key: TenantKey,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let e = read(&state, &req, key.tenant_id, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(e))
}

/// Asks for an export of a tenant (operators; suspended tenants too).
#[utoipa::path(post, path = "/v1/tenants/{id}/exports", tag = "exports", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")), request_body = ExportRequest,
    responses((status = 202, body = Export), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the tenant is still being provisioned")))]
#[post("/v1/tenants/{id}/exports")]
pub async fn create(
    state: web::Data<AppState>,
    op: Operator,
    id: web::Path<String>,
    body: web::Json<ExportRequest>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let format = body.into_inner().format;
    let e = blocking(move || export::request(&db, &id, format, &op.0)).await?;
    Ok(HttpResponse::Accepted().json(e))
}

/// One export of a tenant (operators); while it is `ready`, with a fresh
/// `download_url` (invalidating the previous one).
#[utoipa::path(get, path = "/v1/tenants/{id}/exports/{export_id}", tag = "exports", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug"), ("export_id" = String, Path, description = "export id")),
    responses((status = 200, body = Export), (status = 404, body = ErrorBody)))]
#[get("/v1/tenants/{id}/exports/{export_id}")]
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    _op: Operator,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let e = read(&state, &req, tenant, id).await?;
    Ok(HttpResponse::Ok().json(e))
}

/// Downloads an export's zip. The token in the path is the only credential:
/// it comes from reading a ready export and works until the export expires
/// or a newer URL is issued.
#[utoipa::path(get, path = "/v1/exports/download/{token}", tag = "exports",
    params(("token" = String, Path, description = "download token")),
    responses((status = 200, content_type = "application/zip", description = "the export's zip"),
        (status = 404, body = ErrorBody, description = "unknown or replaced token"),
        (status = 409, body = ErrorBody, description = "the export is not ready"),
        (status = 410, body = ErrorBody, description = "the export expired")))]
#[get("/v1/exports/download/{token}")]
pub async fn download(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.clone();
    let store = state.backups.clone();
    let result = actix_web::web::block(move || {
        let d = export::download(&db, &*store, &token)?;
        let bytes = std::fs::read(&d.path).map_err(|e| {
            DownloadError::Other(Error::tenant_db(
                &d.export.tenant_id,
                "cannot read the export",
                e,
            ))
        })?;
        Ok::<_, DownloadError>((bytes, d.filename))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("worker thread failed: {e}")))?;
    match result {
        Ok((bytes, filename)) => Ok(HttpResponse::Ok()
            .content_type("application/zip")
            .insert_header(ContentDisposition {
                disposition: DispositionType::Attachment,
                parameters: vec![DispositionParam::Filename(filename)],
            })
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(bytes)),
        // The token is a credential: never echoed in the answer.
        Err(DownloadError::Unknown) => Err(ApiError::Domain(Error::not_found(
            "export download",
            "(unknown or replaced link)",
        ))),
        Err(e @ DownloadError::Expired(_)) => Err(ApiError::Gone(e.to_string())),
        Err(e @ DownloadError::NotReady(_)) => {
            Err(ApiError::Domain(Error::Conflict(e.to_string())))
        }
        Err(DownloadError::Other(e)) => Err(ApiError::Domain(e)),
    }
}
