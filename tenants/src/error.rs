//! The domain's error type. The API maps each variant to one HTTP status.

use diesel::result::DatabaseErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Well-formed input that breaks a rule (bad slug, unknown schema target…).
    #[error("{0}")]
    Invalid(String),
    #[error("{what} '{key}' not found")]
    NotFound { what: &'static str, key: String },
    /// The request clashes with existing state (duplicate slug, no capacity…).
    #[error("{0}")]
    Conflict(String),
    /// Creating, migrating or dropping a tenant database failed.
    #[error("tenant {tenant}: {message}")]
    TenantDb { tenant: String, message: String },
    #[error("control database: {0}")]
    Control(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn not_found(what: &'static str, key: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            key: key.into(),
        }
    }

    pub fn tenant_db(tenant: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        Error::TenantDb {
            tenant: tenant.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        match &e {
            diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Error::Conflict(format!("already exists: {}", info.message()))
            }
            _ => Error::Control(e.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::Control(format!("no connection available: {e}"))
    }
}
