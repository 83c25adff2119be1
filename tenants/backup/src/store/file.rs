//! The file-system store: artifacts as files under a directory
//! (`file://<dir>`).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{check_key, ArtifactStore, StoreError, StoredObject};

/// Prefix of the temporary files a [`FileStore`] writes before renaming them
/// into place; never a valid key segment (keys do not start with a dot).
const TEMP_PREFIX: &str = ".tp-tmp-";

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
}
