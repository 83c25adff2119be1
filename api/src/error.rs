//! The one mapping from errors to HTTP answers:
//! `{"error":{"code":"…","message":"…"}}` with the right status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tenantplane_control_db::error::report;
use tenantplane_control_db::Error as DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Malformed input: JSON that does not parse, a bad query string.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A tenant key of a suspended tenant tried to change something.
    #[error("{0}")]
    TenantSuspended(String),
    #[error("no route for {0}")]
    NoRoute(String),
    /// The path exists, not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Existed, is no more, and will not come back (an expired export link).
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `conflict`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Domain(DomainError::Invalid(_)) => "invalid",
            ApiError::Domain(DomainError::NotFound { .. }) | ApiError::NoRoute(_) => "not_found",
            ApiError::Domain(DomainError::Conflict(_)) => "conflict",
            ApiError::Domain(DomainError::TenantDb { .. }) => "tenant_database",
            ApiError::Domain(DomainError::Control { .. }) => "control_database",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TenantSuspended(_) => "tenant_suspended",
            ApiError::Gone(_) => "gone",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Domain(DomainError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Domain(DomainError::NotFound { .. }) | ApiError::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Domain(DomainError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Domain(DomainError::TenantDb { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Domain(DomainError::Control { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::TenantSuspended(_) => StatusCode::FORBIDDEN,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            // The log gets the whole chain down to the driver's error; the
            // body only our own words (the variants' Display never includes
            // their source).
            tracing::error!(code = self.code(), error = %report(self), "request failed");
        }
        let mut resp = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        resp.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        })
    }
}

/// Runs blocking diesel work off the event loop.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, DomainError> + Send + 'static,
    T: Send + 'static,
{
    actix_web::web::block(f)
        .await
        .map_err(|e| ApiError::Internal(format!("worker thread failed: {e}")))?
        .map_err(ApiError::from)
}
