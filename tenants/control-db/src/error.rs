//! The domain's error type, shared by every domain crate. The API maps each
//! variant to one HTTP status (`api/src/error.rs`).
//!
//! Database failures keep the driver's error as their source, so a log line
//! can show the whole chain ([`report`]), and are classified transient or
//! permanent by the error's kind ([`DbError::is_transient`]) — never by its
//! message text, which PostgreSQL localises and which any server may reword.

use std::error::Error as StdError;

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
    #[error("tenant {tenant}: {context}")]
    TenantDb {
        tenant: String,
        context: String,
        #[source]
        source: DbError,
    },
    /// The control database failed or could not be reached.
    #[error("control database: {context}")]
    Control {
        context: String,
        #[source]
        source: DbError,
    },
}

/// A database failure with the driver's error kept as its source.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Query(diesel::result::Error),
    #[error(transparent)]
    Connect(diesel::ConnectionError),
    #[error("no pooled connection in time")]
    Pool(#[source] diesel::r2d2::PoolError),
    #[error("migration failed")]
    Migration(#[source] Box<dyn StdError + Send + Sync>),
    #[error("file system")]
    Io(#[source] std::io::Error),
    /// The database answered, but not with what we need (a missing file, a
    /// pending migration…): no driver error to keep.
    #[error("{0}")]
    State(String),
}

impl DbError {
    /// Whether a retry may cure this failure, decided by the error's kind:
    /// a connection that could not be opened or was lost, a pool that had no
    /// free connection, a serialization failure. Everything else (syntax,
    /// constraints, missing objects, drift) is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Query(e) => query_is_transient(e),
            DbError::Connect(_) | DbError::Pool(_) => true,
            DbError::Migration(e) => query_in(e.as_ref()).is_some_and(query_is_transient),
            DbError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            DbError::State(_) => false,
        }
    }
}

/// Transient diesel errors, by kind. diesel exposes SQLSTATE only through
/// these kinds (40001 → `SerializationFailure`, class 08 and a broken
/// connection → `ClosedConnection`); SQLite's busy and locked codes arrive
/// as `Unknown`, so lock waits are detected where they happen instead
/// (`fleet::tenant_run` knows when taking the tenant's lock failed).
pub fn query_is_transient(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(
            DatabaseErrorKind::SerializationFailure
                | DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
    )
}

/// The diesel error inside a boxed failure, when the box holds one.
/// (diesel_migrations wraps a failing migration's error in a private type,
/// so a failed step is classified by what the connection does next, in
/// `fleet::tenant_run`.)
pub fn query_in<'a>(
    e: &'a (dyn StdError + Send + Sync + 'static),
) -> Option<&'a diesel::result::Error> {
    e.downcast_ref::<diesel::result::Error>()
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

    pub fn control(context: impl Into<String>, source: impl Into<DbError>) -> Self {
        Error::Control {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn tenant_db(
        tenant: impl std::fmt::Display,
        context: impl Into<String>,
        source: impl Into<DbError>,
    ) -> Self {
        Error::TenantDb {
            tenant: tenant.to_string(),
            context: context.into(),
            source: source.into(),
        }
    }

    /// Worth retrying: only database failures of a transient kind.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::TenantDb { source, .. } | Error::Control { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::Query(e)
    }
}

impl From<diesel::ConnectionError> for DbError {
    fn from(e: diesel::ConnectionError) -> Self {
        DbError::Connect(e)
    }
}

impl From<std::io::Error> for DbError {
    fn from(e: std::io::Error) -> Self {
        DbError::Io(e)
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        match &e {
            diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Error::Conflict(format!("already exists: {}", info.message()))
            }
            _ => Error::control("query failed", e),
        }
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::control("no connection available", DbError::Pool(e))
    }
}

/// The error and every source below it, `outer: inner: innermost`, for logs.
pub fn report(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        // Some drivers repeat their source's text in their own; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error whose message says whatever the test wants.
    #[derive(Debug)]
    struct Info(&'static str);

    impl diesel::result::DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db(kind: DatabaseErrorKind, message: &'static str) -> DbError {
        DbError::Query(diesel::result::Error::DatabaseError(
            kind,
            Box::new(Info(message)),
        ))
    }

    #[test]
    fn classification_reads_the_kind_not_the_text() {
        // Words that used to mean "retry" in an error of a permanent kind…
        for text in ["database is locked", "connection refused", "timed out"] {
            assert!(
                !db(DatabaseErrorKind::Unknown, text).is_transient(),
                "{text}"
            );
            assert!(!db(DatabaseErrorKind::CheckViolation, text).is_transient());
        }
        // …and transient kinds whatever their text says, in any language.
        for text in [
            "",
            "la connexion au serveur a été perdue",
            "接続が切断されました",
        ] {
            assert!(db(DatabaseErrorKind::ClosedConnection, text).is_transient());
            assert!(db(DatabaseErrorKind::SerializationFailure, text).is_transient());
        }
        assert!(
            DbError::Connect(diesel::ConnectionError::BadConnection("x".into())).is_transient()
        );
        assert!(!DbError::State("database is locked".into()).is_transient());
        let boxed: Box<dyn StdError + Send + Sync> =
            Box::new(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection,
                Box::new(Info("gone")),
            ));
        assert!(DbError::Migration(boxed).is_transient());
    }

    #[test]
    fn reports_show_the_whole_chain() {
        let e = Error::tenant_db(
            "corner-shop",
            "creating the database failed",
            db(DatabaseErrorKind::Unknown, "permission denied for database"),
        );
        assert_eq!(
            report(&e),
            "tenant corner-shop: creating the database failed: permission denied for database"
        );
        assert!(!e.is_transient());
        assert!(Error::control(
            "x",
            DbError::Connect(diesel::ConnectionError::BadConnection("refused".into()))
        )
        .is_transient());
    }
}
