//! The `Idempotency-Key` header on POSTs that create or change something
//! (`POST /v1/tenants`, `/v1/rollouts`, `/v1/tenant/plan`,
//! `/v1/tenant/exports`): the same key with the same request replays the
//! first answer (`Idempotent-Replayed: true`) and changes nothing; the same
//! key with another request is 422; while the first is still running, 409.
//! A request that fails leaves no trace, so it can be retried with its key.
//! See `tenantplane_control_db::idempotency`.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use tenantplane_control_db::idempotency::{self, Begun};
use tenantplane_control_db::Error as DomainError;

use crate::error::{blocking, ApiError};
use crate::AppState;

pub const HEADER: &str = "Idempotency-Key";

fn answer(status: u16, body: String, replayed: bool) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .insert_header((
            "Idempotent-Replayed",
            if replayed { "true" } else { "false" },
        ))
        .body(body)
}

/// Runs `handler` once per (credential `scope`, key); without the header,
/// simply runs it. `body` is the request as parsed, fingerprinted with the
/// method and path.
pub async fn once<F, Fut>(
    state: &AppState,
    req: &HttpRequest,
    scope: &str,
    body: &impl Serialize,
    handler: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    let Some(raw) = req.headers().get(HEADER) else {
        return handler().await;
    };
    let key = raw
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?
        .to_string();
    let body = serde_json::to_vec(body)
        .map_err(|e| ApiError::Internal(format!("cannot fingerprint the request: {e}")))?;
    let hash = idempotency::fingerprint(req.method().as_str(), req.path(), &body);
    let (db, s, k) = (state.db.clone(), scope.to_string(), key.clone());
    match blocking(move || idempotency::begin(&db, &s, &k, &hash)).await? {
        Begun::Replay { status, response } => return Ok(answer(status, response, true)),
        Begun::InProgress => {
            return Err(ApiError::Domain(DomainError::Conflict(
                "a request with this Idempotency-Key is still running; retry it shortly".into(),
            )))
        }
        Begun::Run => {}
    }
    match handler().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let bytes = actix_web::body::to_bytes(resp.into_body())
                .await
                .map_err(|e| ApiError::Internal(format!("cannot read the answer: {e}")))?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let (db, s, k, t) = (state.db.clone(), scope.to_string(), key, text.clone());
            if let Err(e) = blocking(move || idempotency::finish(&db, &s, &k, status, &t)).await {
                // The change stands; only a replay of it is lost.
                tracing::warn!(error = %e, "cannot record the idempotent answer");
            }
            Ok(answer(status, text, false))
        }
        Err(err) => {
            let (db, s, k) = (state.db.clone(), scope.to_string(), key);
            if let Err(e) = blocking(move || idempotency::abandon(&db, &s, &k)).await {
                tracing::warn!(error = %e, "cannot free the idempotency key");
            }
            Err(err)
        }
    }
}
