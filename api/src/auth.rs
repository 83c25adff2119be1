//! Bearer-token authentication.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use tenantplane_access::tokens;
use tenantplane_control_db::Actor;

use crate::error::ApiError;
use crate::AppState;

/// An authenticated operator request; carries who and from where for the
/// audit log.
pub struct Operator(pub Actor);

/// The token of an `Authorization: Bearer <token>` header; 401 when it is
/// missing or malformed.
pub fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))
}

/// Who and from where, for the audit log.
pub fn actor(req: &HttpRequest, id: String) -> Actor {
    Actor {
        id,
        ip: req.peer_addr().map(|a| a.ip().to_string()),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
    }
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let state = state(req)?;
            let token = bearer(req)?;
            if state.operator.accepts(token) {
                return Ok(Operator(actor(req, "operator".to_string())));
            }
            if state
                .flags
                .snapshot()
                .keys
                .contains_key(&tokens::hash(token))
            {
                return Err(ApiError::Forbidden(
                    "a tenant key cannot use operator routes; use /v1/tenant".into(),
                ));
            }
            Err(ApiError::Unauthorized("invalid token".into()))
        })();
        ready(result)
    }
}

/// A request authenticated with a tenant key: it reaches only its own tenant.
pub struct TenantKey {
    pub tenant_id: String,
    pub key_id: String,
    pub actor: Actor,
}

impl FromRequest for TenantKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let state = state(req)?;
            let token = bearer(req)?;
            // In memory: the hot path never waits on the database. A revoked
            // key disappears from the snapshot when the revocation lands.
            if let Some(k) = state.flags.snapshot().keys.get(&tokens::hash(token)) {
                if let Err(wait) = crate::rate_limit::take(&k.id) {
                    return Err(ApiError::TooManyRequests(
                        wait.as_secs_f64().ceil().max(1.0) as u64,
                    ));
                }
                return Ok(TenantKey {
                    tenant_id: k.tenant_id.clone(),
                    key_id: k.id.clone(),
                    actor: actor(req, format!("tenant-key:{}", k.id)),
                });
            }
            if state.operator.accepts(token) {
                return Err(ApiError::Forbidden(
                    "the operator token cannot use tenant routes; use /v1/tenants/{id}".into(),
                ));
            }
            Err(ApiError::Unauthorized("invalid or revoked key".into()))
        })();
        ready(result)
    }
}
