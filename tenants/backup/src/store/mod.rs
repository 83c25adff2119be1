//! Where artifacts live: a small object-store interface ([`ArtifactStore`])
//! and its implementations: the file system ([`FileStore`], `file://<dir>`)
//! and S3-compatible object storage ([`S3Store`], `s3://<bucket>/<prefix>`).
//!
//! Keys are store-relative and URL-safe (`tenants/<tenant id>/<backup
//! id>.sqlite.gz`), so the same keys serve a directory and a bucket. Every
//! write is all-or-nothing: a reader sees the whole object or none.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tenantplane_fleet::urls::redact_url;

mod file;
mod s3;

pub use file::FileStore;
pub use s3::{S3Config, S3Status, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid artifact key {0:?}: segments of letters, digits, '.', '_', '-' separated by '/', none starting with '.'")]
    InvalidKey(String),
    #[error("artifact {0} is not in the store")]
    NotFound(String),
    #[error("unsupported backup store {0}: file:// and s3:// are supported")]
    Unsupported(String),
    /// The store's URL or its settings are wrong (a bad bucket name,
    /// credentials in the URL, credentials missing from the environment).
    #[error("backup store: {0}")]
    Config(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A remote store answered with an error or could not be reached. The
    /// source is what it answered ([`S3Status`]) or the connection's error;
    /// `transient` is decided by the HTTP status (5xx, 408, 429) or by the
    /// kind of connection failure, never by message text.
    #[error("{what}")]
    Remote {
        what: String,
        /// The HTTP status, when the store answered.
        status: Option<u16>,
        transient: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }

    /// The domain error for this failure while `doing` something for
    /// `tenant` (the I/O or remote error stays the source).
    pub fn for_tenant(self, tenant: &str, doing: &str) -> tenantplane_control_db::Error {
        use tenantplane_control_db::{DbError, Error};
        match self {
            StoreError::Io { what, source } => {
                Error::tenant_db(tenant, format!("{doing}: {what}"), DbError::Io(source))
            }
            StoreError::Remote {
                what,
                transient,
                source,
                ..
            } => {
                // control-db classifies by the I/O error's kind: `TimedOut`
                // is one it retries, `Other` one it does not. The remote
                // error stays the source (an `io::Error` made from it shows
                // its text and continues with its source).
                let kind = if transient {
                    io::ErrorKind::TimedOut
                } else {
                    io::ErrorKind::Other
                };
                Error::tenant_db(
                    tenant,
                    format!("{doing}: {what}"),
                    DbError::Io(io::Error::new(kind, source)),
                )
            }
            StoreError::NotFound(key) => Error::not_found("artifact", key),
            other => Error::invalid(other.to_string()),
        }
    }

    /// A retry may cure it: by the I/O error's kind, or the remote store's
    /// status (see [`StoreError::Remote`]).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            StoreError::Remote { transient, .. } => *transient,
            _ => false,
        }
    }

    /// The HTTP status a remote store answered with.
    pub fn status(&self) -> Option<u16> {
        match self {
            StoreError::Remote { status, .. } => *status,
            _ => None,
        }
    }
}

/// One object in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// An artifact store. Object-safe: callers hold `&dyn ArtifactStore` or an
/// `Arc<dyn ArtifactStore>`.
pub trait ArtifactStore: Send + Sync + std::fmt::Debug {
    /// The store's URL with any credentials hidden, for logs and answers.
    fn url(&self) -> String;
    /// Stores the local file under `key`, durably, replacing what was there.
    fn put(&self, key: &str, local: &Path) -> Result<(), StoreError>;
    /// Copies the object to the local file `dest`.
    fn get(&self, key: &str, dest: &Path) -> Result<(), StoreError>;
    /// Removes the object; a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError>;
    /// Removes what interrupted writes left behind (temporary files,
    /// unfinished uploads) older than `older_than`; returns how many.
    fn remove_incomplete(&self, older_than: Duration) -> Result<usize, StoreError> {
        let _ = older_than;
        Ok(0)
    }
}

/// Checks a key: non-empty `/`-separated segments of `[A-Za-z0-9._-]`, none
/// starting with `.` (so no `..`, no hidden or temporary names).
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

/// Opens the store a URL names: `file:///abs/dir` (or a plain path), or
/// `s3://bucket/prefix` with the endpoint, region and credentials from the
/// environment (see [`S3Config::from_url`]). Contacts nothing: a wrong
/// bucket or credentials show at the first use.
pub fn open(url: &str) -> Result<Arc<dyn ArtifactStore>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(FileStore::new(path)?));
    }
    if url.starts_with("s3://") {
        return Ok(Arc::new(S3Store::from_env(url)?));
    }
    if url.contains("://") {
        return Err(StoreError::Unsupported(redact_url(url)));
    }
    Ok(Arc::new(FileStore::new(url)?))
}

/// The default store: `<data dir>/backups`.
pub fn default_url(data_dir: &Path) -> String {
    let dir = std::path::absolute(data_dir.join("backups")).unwrap_or(data_dir.join("backups"));
    format!("file://{}", dir.display())
}

/// The store this process's jobs use: a job's payload and context carry
/// only the control database, so the worker installs the store once at start.
static STORE: RwLock<Option<Arc<dyn ArtifactStore>>> = RwLock::new(None);

/// Sets the store the backup jobs of this process use (replacing any
/// earlier one).
pub fn install(store: Arc<dyn ArtifactStore>) {
    match STORE.write() {
        Ok(mut s) => *s = Some(store),
        Err(poisoned) => *poisoned.into_inner() = Some(store),
    }
}

/// The store [`install`] set.
pub fn installed() -> Option<Arc<dyn ArtifactStore>> {
    match STORE.read() {
        Ok(s) => s.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_safe_relative_paths() {
        for ok in ["a", "tenants/0b9e/1f2d.sqlite.gz", "x_y-z.1/2"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "../up",
            "a/../b",
            ".hidden",
            "a/.tp-tmp-1-x",
            "sp ace",
            "q?x",
            "é",
            "a\\b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn open_picks_the_store_by_scheme_and_hides_credentials() {
        let err = open("s3://key:secret@bucket/prefix")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let err = open("gs://key:secret@bucket/prefix")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("unsupported"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let url = default_url(dir.path());
        assert!(url.ends_with("/backups"));
        assert!(open(&url).is_ok());
    }

    #[test]
    fn remote_errors_keep_their_classification_and_source() {
        let remote = |status: u16, transient: bool| StoreError::Remote {
            what: "cannot store k in s3://b".into(),
            status: Some(status),
            transient,
            source: Box::new(S3Status {
                status,
                code: Some("SlowDown".into()),
                message: Some("Please reduce your request rate.".into()),
                request_id: None,
            }),
        };
        let e = remote(503, true);
        assert!(e.is_transient());
        assert_eq!(e.status(), Some(503));
        let domain = e.for_tenant("shop", "storing the artifact");
        assert!(domain.is_transient());
        let text = tenantplane_control_db::error::report(&domain);
        assert!(
            text.contains("storing the artifact: cannot store k"),
            "{text}"
        );
        assert!(text.contains("HTTP 503 SlowDown"), "{text}");
        let domain = remote(403, false).for_tenant("shop", "storing the artifact");
        assert!(!domain.is_transient());
    }
}
