//! Where artifacts live: a small object-store interface ([`ArtifactStore`])
//! and its file-system implementation ([`FileStore`], `file://<dir>`).
//!
//! Keys are store-relative and URL-safe (`tenants/<tenant id>/<backup
//! id>.sqlite.gz`), so the same keys serve an S3 bucket behind the same trait
//! later. Every write is all-or-nothing: a reader sees the whole object or
//! none.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tenantplane_fleet::urls::redact_url;

/// Prefix of the temporary files a [`FileStore`] writes before renaming them
/// into place; never a valid key segment (keys do not start with a dot).
const TEMP_PREFIX: &str = ".tp-tmp-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid artifact key {0:?}: segments of letters, digits, '.', '_', '-' separated by '/', none starting with '.'")]
    InvalidKey(String),
    #[error("artifact {0} is not in the store")]
    NotFound(String),
    #[error("unsupported backup store {0}: only file:// for now")]
    Unsupported(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }

    /// The domain error for this failure while `doing` something for
    /// `tenant` (the I/O error stays the source).
    pub fn for_tenant(self, tenant: &str, doing: &str) -> tenantplane_control_db::Error {
        use tenantplane_control_db::{DbError, Error};
        match self {
            StoreError::Io { what, source } => {
                Error::tenant_db(tenant, format!("{doing}: {what}"), DbError::Io(source))
            }
            StoreError::NotFound(key) => Error::not_found("artifact", key),
            other => Error::invalid(other.to_string()),
        }
    }

    /// A retry may cure it (by the I/O error's kind).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            _ => false,
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

/// Opens the store a URL names: `file:///abs/dir` (or a plain path).
pub fn open(url: &str) -> Result<Arc<dyn ArtifactStore>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(FileStore::new(path)?));
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

/// Artifacts as files under a directory: `<root>/<key>`.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Creates the directory if needed.
    pub fn new(root: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let root = std::path::absolute(root.as_ref()).map_err(StoreError::io(format!(
            "cannot resolve {}",
            root.as_ref().display()
        )))?;
        fs::create_dir_all(&root)
            .map_err(StoreError::io(format!("cannot create {}", root.display())))?;
        Ok(FileStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind a key (checked).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Creates the key's directories, fsyncing each parent whose entries
    /// changed so the new directories survive a power cut.
    fn make_dirs(&self, dir: &Path) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.exists() && d.starts_with(&self.root) {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        fs::create_dir_all(dir)
            .map_err(StoreError::io(format!("cannot create {}", dir.display())))?;
        for created in missing.iter().rev() {
            if let Some(parent) = created.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(format!("cannot list {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(StoreError::io(format!("cannot list {}", dir.display())))?;
            let meta = entry.metadata().map_err(StoreError::io(format!(
                "cannot stat {}",
                entry.path().display()
            )))?;
            if meta.is_dir() {
                self.walk(&entry.path(), out)?;
            } else if meta.is_file() {
                out.push((entry.path(), meta));
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!("cannot fsync {}", dir.display())))
}

impl ArtifactStore for FileStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    /// Copies to a temporary name in the key's directory, fsyncs it, renames
    /// it over the key and fsyncs the directory: after a crash the key holds
    /// the old object, the new one, or nothing, never a torn file.
    fn put(&self, key: &str, local: &Path) -> Result<(), StoreError> {
        let dest = self.path_of(key)?;
        let dir = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        self.make_dirs(&dir)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}-{name}",
            uuid::Uuid::new_v4().simple()
        ));
        let written = fs::copy(local, &tmp)
            .and_then(|_| File::options().write(true).open(&tmp))
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&tmp, &dest));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(format!("cannot store {key}"))(e));
        }
        sync_dir(&dir)
    }

    fn get(&self, key: &str, dest: &Path) -> Result<(), StoreError> {
        let src = self.path_of(key)?;
        match fs::copy(&src, dest) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(key.to_string()))
            }
            Err(e) => Err(StoreError::io(format!("cannot read {key}"))(e)),
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => match path.parent() {
                Some(dir) => sync_dir(dir),
                None => Ok(()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("cannot delete {key}"))(e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.path_of(key)?.is_file())
    }

    fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
        let mut files = Vec::new();
        self.walk(&self.root, &mut files)?;
        let mut out: Vec<StoredObject> = files
            .into_iter()
            .filter_map(|(path, meta)| {
                let rel = path.strip_prefix(&self.root).ok()?;
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                // Temporary files and anything else that is not a key are
                // not objects.
                check_key(&key).ok()?;
                key.starts_with(prefix).then(|| StoredObject {
                    key,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn remove_incomplete(&self, older_than: Duration) -> Result<usize, StoreError> {
        let mut files = Vec::new();
        self.walk(&self.root, &mut files)?;
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for (path, meta) in files {
            let is_temp = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX));
            let old = meta.modified().map(|m| m < cutoff).unwrap_or(false);
            if is_temp && old {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(StoreError::io(format!("cannot remove {}", path.display()))(
                            e,
                        ))
                    }
                }
            }
        }
        Ok(removed)
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
    fn file_store_puts_gets_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("store")).unwrap();
        let local = dir.path().join("local");
        std::fs::write(&local, b"hello").unwrap();
        store.put("tenants/t1/a.sqlite.gz", &local).unwrap();
        store.put("tenants/t2/b.pgcopy.gz", &local).unwrap();
        assert!(store.exists("tenants/t1/a.sqlite.gz").unwrap());
        assert!(!store.exists("tenants/t1/zzz").unwrap());

        let back = dir.path().join("back");
        store.get("tenants/t1/a.sqlite.gz", &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), b"hello");
        assert!(matches!(
            store.get("tenants/t1/missing", &back),
            Err(StoreError::NotFound(_))
        ));

        // A temporary file of an interrupted put is not an object, and is
        // removed once old enough.
        std::fs::write(
            store.root().join("tenants/t1/.tp-tmp-x-a.sqlite.gz"),
            b"half",
        )
        .unwrap();
        let keys: Vec<String> = store
            .list("tenants/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["tenants/t1/a.sqlite.gz", "tenants/t2/b.pgcopy.gz"]);
        assert_eq!(store.list("tenants/t2/").unwrap().len(), 1);
        assert_eq!(
            store.remove_incomplete(Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(store.remove_incomplete(Duration::ZERO).unwrap(), 1);

        store.delete("tenants/t1/a.sqlite.gz").unwrap();
        store.delete("tenants/t1/a.sqlite.gz").unwrap();
        assert!(!store.exists("tenants/t1/a.sqlite.gz").unwrap());
        assert!(store.put("../escape", &local).is_err());
        assert_eq!(store.url(), format!("file://{}", store.root().display()));
    }

    #[test]
    fn only_file_urls_for_now_and_no_credentials_in_errors() {
        let err = open("s3://key:secret@bucket/prefix")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let url = default_url(dir.path());
        assert!(url.ends_with("/backups"));
        assert!(open(&url).is_ok());
    }
}
