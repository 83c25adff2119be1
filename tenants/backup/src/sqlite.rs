//! SQLite tenants: the snapshot is `VACUUM INTO` a temporary file (one read
//! transaction, so it is consistent while the tenant keeps writing, and it
//! never copies a file mid-write), gzip-compressed into the artifact. A
//! restore writes the unpacked file into the tenant's database with SQLite's
//! online backup API, under SQLite's own write lock, so connections that hold
//! the tenant open (and its WAL) stay correct.

use std::ffi::CString;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::raw::c_int;
use std::path::Path;
use std::ptr;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tenantplane_control_db::DbError;
use tenantplane_fleet::tenant_db::TenantDbError;

use crate::manifest::{Content, RowHasher};

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Integer)]
    pk: i32,
}

fn failed<E: Into<DbError>>(what: impl Into<String>) -> impl FnOnce(E) -> TenantDbError {
    let what = what.into();
    move |e| TenantDbError::new(what, e)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn open(path: &Path) -> Result<SqliteConnection, TenantDbError> {
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(failed(format!("cannot open {}", path.display())))?;
    conn.batch_execute("PRAGMA busy_timeout = 10000;")
        .map_err(failed("cannot set the busy timeout"))?;
    Ok(conn)
}

/// Snapshots the tenant file at `tenant` into `out` (gzip of the SQLite
/// file); `work` is a scratch directory. Returns what the snapshot holds.
pub(crate) fn snapshot(
    tenant: &Path,
    work: &Path,
    out: impl Write,
) -> Result<Content, TenantDbError> {
    if !tenant.exists() {
        return Err(TenantDbError::new(
            "cannot open the tenant database",
            DbError::State(format!("{} does not exist", tenant.display())),
        ));
    }
    let snap = work.join("snapshot.db");
    let mut conn = open(tenant)?;
    conn.batch_execute(&format!(
        "VACUUM INTO {}",
        quote_literal(&snap.to_string_lossy())
    ))
    .map_err(failed("VACUUM INTO failed"))?;
    drop(conn);
    let content = measure_file(&snap)?;
    let mut gz = GzEncoder::new(out, flate2::Compression::fast());
    let mut file = std::fs::File::open(&snap).map_err(failed("cannot read the snapshot"))?;
    io::copy(&mut file, &mut gz).map_err(failed("cannot compress the snapshot"))?;
    gz.finish()
        .and_then(|mut w| w.flush())
        .map_err(failed("cannot write the artifact"))?;
    Ok(content)
}

/// Unpacks an artifact into the file `dest`, checks its integrity and
/// measures it.
pub(crate) fn unpack(artifact: &Path, dest: &Path) -> Result<Content, Unpacked> {
    let src = std::fs::File::open(artifact)
        .map_err(|e| Unpacked::Io(TenantDbError::new("cannot read the artifact", e)))?;
    let out = std::fs::File::create(dest)
        .map_err(|e| Unpacked::Io(TenantDbError::new("cannot write the unpacked file", e)))?;
    let mut writer = BufWriter::new(out);
    io::copy(&mut GzDecoder::new(BufReader::new(src)), &mut writer)
        .map_err(|e| Unpacked::Bad(format!("the artifact does not decompress: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .map_err(|e| Unpacked::Io(TenantDbError::new("cannot write the unpacked file", e)))?;
    let mut conn = open(dest).map_err(Unpacked::Io)?;
    let check: Vec<TextRow> =
        diesel::sql_query("SELECT integrity_check AS v FROM pragma_integrity_check()")
            .load(&mut conn)
            .map_err(|e| Unpacked::Bad(format!("integrity check failed: {e}")))?;
    let verdict: Vec<String> = check.into_iter().filter_map(|r| r.v).collect();
    if verdict != ["ok"] {
        return Err(Unpacked::Bad(format!(
            "integrity check: {}",
            verdict.join("; ")
        )));
    }
    drop(conn);
    measure_file(dest).map_err(|e| Unpacked::Bad(format!("cannot read the unpacked file: {e}")))
}

/// Why an artifact could not be unpacked: the artifact is bad (a finding
/// about the backup) or the machine failed us.
#[derive(Debug)]
pub(crate) enum Unpacked {
    Bad(String),
    Io(TenantDbError),
}

/// Row counts and checksums of every table of a SQLite file (including
/// `sqlite_sequence`, the AUTOINCREMENT counters) and its schema version.
pub(crate) fn measure_file(path: &Path) -> Result<Content, TenantDbError> {
    let mut conn = open(path)?;
    measure(&mut conn)
}

pub(crate) fn measure(conn: &mut SqliteConnection) -> Result<Content, TenantDbError> {
    let tables: Vec<TextRow> = diesel::sql_query(
        "SELECT name AS v FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_stat%' ORDER BY name",
    )
    .load(conn)
    .map_err(failed("cannot list the tables"))?;
    let mut content = Content::default();
    for name in tables.into_iter().filter_map(|t| t.v) {
        let digest = table_digest(conn, &name)?;
        content.tables.insert(name, digest);
    }
    if content.tables.contains_key("__diesel_schema_migrations") {
        let v: Vec<TextRow> =
            diesel::sql_query("SELECT max(version) AS v FROM __diesel_schema_migrations")
                .load(conn)
                .map_err(failed("cannot read the schema version"))?;
        content.schema_version = v.into_iter().next().and_then(|r| r.v);
    }
    Ok(content)
}

/// Rows in primary-key order (all columns when there is no key), each as
/// its columns' SQL literals (`quote()`, exact for every storage class).
fn table_digest(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<crate::manifest::TableDigest, TenantDbError> {
    let mut cols: Vec<ColumnRow> = diesel::sql_query(format!(
        "SELECT name, pk FROM pragma_table_info({}) ORDER BY cid",
        quote_literal(table)
    ))
    .load(conn)
    .map_err(failed(format!("cannot read the columns of {table}")))?;
    let expr = cols
        .iter()
        .map(|c| format!("quote({})", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(" || '|' || ");
    let all: Vec<String> = cols.iter().map(|c| quote_ident(&c.name)).collect();
    cols.retain(|c| c.pk > 0);
    cols.sort_by_key(|c| c.pk);
    let order = if cols.is_empty() {
        all.join(", ")
    } else {
        cols.iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!(
        "SELECT {expr} AS v FROM {} ORDER BY {order}",
        quote_ident(table)
    );
    let mut hasher = RowHasher::default();
    let rows = diesel::sql_query(sql)
        .load_iter::<TextRow, diesel::connection::DefaultLoadingMode>(conn)
        .map_err(failed(format!("cannot read {table}")))?;
    for row in rows {
        let row = row.map_err(failed(format!("cannot read {table}")))?;
        let mut line = row.v.unwrap_or_default().into_bytes();
        line.push(b'\n');
        hasher.row(&line);
    }
    Ok(hasher.finish())
}

/// Raw SQLite handles for the online backup API (diesel does not expose
/// it); closed on drop.
struct Handle(*mut libsqlite3_sys::sqlite3);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle from sqlite3_open_v2 (possibly NULL), closed once.
        unsafe { libsqlite3_sys::sqlite3_close(self.0) };
    }
}

impl Handle {
    fn open(path: &Path, flags: c_int) -> Result<Handle, TenantDbError> {
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| {
            TenantDbError::new(
                "invalid path",
                DbError::State(format!("{} contains a NUL byte", path.display())),
            )
        })?;
        let mut db = ptr::null_mut();
        // SAFETY: valid C string and out-pointer; the handle is closed by
        // Drop even when opening failed (sqlite3_close accepts it).
        let rc =
            unsafe { libsqlite3_sys::sqlite3_open_v2(c.as_ptr(), &mut db, flags, ptr::null()) };
        let h = Handle(db);
        if rc != libsqlite3_sys::SQLITE_OK {
            return Err(TenantDbError::new(
                format!("cannot open {}", path.display()),
                DbError::State(h.message()),
            ));
        }
        Ok(h)
    }

    fn message(&self) -> String {
        if self.0.is_null() {
            return "out of memory".into();
        }
        // SAFETY: a live handle; the message is copied at once.
        unsafe { std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_errmsg(self.0)) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Replaces the content of the SQLite database at `dest` with the file at
/// `src`, page for page, in one write transaction of `dest` (SQLite's
/// online backup API): connections that have `dest` open see the old
/// database or the new one, and a WAL-mode `dest` stays in WAL mode. Waits
/// up to `lock_wait` for other writers.
pub(crate) fn restore_into(
    src: &Path,
    dest: &Path,
    lock_wait: Duration,
) -> Result<(), TenantDbError> {
    if !dest.exists() {
        return Err(TenantDbError::new(
            "cannot open the tenant database",
            DbError::State(format!("{} does not exist", dest.display())),
        ));
    }
    let source = Handle::open(src, libsqlite3_sys::SQLITE_OPEN_READONLY)?;
    let target = Handle::open(dest, libsqlite3_sys::SQLITE_OPEN_READWRITE)?;
    // SAFETY: live handles; the backup object is finished before either
    // handle is closed (they drop after this block).
    let (step, finish) = unsafe {
        libsqlite3_sys::sqlite3_busy_timeout(
            target.0,
            lock_wait.as_millis().min(i32::MAX as u128) as c_int,
        );
        let main = c"main";
        let backup =
            libsqlite3_sys::sqlite3_backup_init(target.0, main.as_ptr(), source.0, main.as_ptr());
        if backup.is_null() {
            return Err(TenantDbError::new(
                "cannot start the restore",
                DbError::State(target.message()),
            ));
        }
        let step = libsqlite3_sys::sqlite3_backup_step(backup, -1);
        let finish = libsqlite3_sys::sqlite3_backup_finish(backup);
        (step, finish)
    };
    match step {
        libsqlite3_sys::SQLITE_DONE if finish == libsqlite3_sys::SQLITE_OK => Ok(()),
        libsqlite3_sys::SQLITE_BUSY | libsqlite3_sys::SQLITE_LOCKED => Err(TenantDbError::new(
            "the tenant database stayed locked for the whole lock wait",
            // Busy is worth retrying: an I/O error of a transient kind.
            io::Error::new(io::ErrorKind::WouldBlock, target.message()),
        )),
        _ => Err(TenantDbError::new(
            "restoring the tenant file failed",
            DbError::State(target.message()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_unpack_and_restore_keep_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.db");
        let mut conn = SqliteConnection::establish(&live.to_string_lossy()).unwrap();
        conn.batch_execute(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT, b BLOB, r REAL);
             INSERT INTO t (v, b, r) VALUES ('a''b', x'00ff', 1.5), (NULL, NULL, -0.1), ('x|y', x'', 3);
             DELETE FROM t WHERE id = 3;",
        )
        .unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut gz = Vec::new();
        let content = snapshot(&live, work.path(), &mut gz).unwrap();
        assert_eq!(content.tables["t"].rows, 2);
        assert_eq!(content.tables["sqlite_sequence"].rows, 1);
        assert_eq!(content.schema_version, None);

        let artifact = dir.path().join("a.gz");
        std::fs::write(&artifact, &gz).unwrap();
        let unpacked = dir.path().join("u.db");
        let again = unpack(&artifact, &unpacked).unwrap();
        assert_eq!(again, content);

        // Change the live file while a connection keeps it open, then restore.
        conn.batch_execute("INSERT INTO t (v) VALUES ('new'); DELETE FROM t WHERE id = 1;")
            .unwrap();
        restore_into(&unpacked, &live, Duration::from_secs(5)).unwrap();
        assert_eq!(measure(&mut conn).unwrap(), content);
        let mode: Vec<TextRow> =
            diesel::sql_query("SELECT journal_mode AS v FROM pragma_journal_mode()")
                .load(&mut conn)
                .unwrap();
        assert_eq!(mode[0].v.as_deref(), Some("wal"));
        // The open connection still works and writes continue after the
        // restored AUTOINCREMENT counter.
        conn.batch_execute("INSERT INTO t (v) VALUES ('after')")
            .unwrap();
        let max: Vec<TextRow> = diesel::sql_query("SELECT CAST(max(id) AS TEXT) AS v FROM t")
            .load(&mut conn)
            .unwrap();
        assert_eq!(max[0].v.as_deref(), Some("4"));

        // A damaged artifact is a finding, not an I/O failure.
        let mut bytes = gz.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&artifact, &bytes).unwrap();
        assert!(matches!(
            unpack(&artifact, &dir.path().join("bad.db")),
            Err(Unpacked::Bad(_))
        ));
    }
}
