//! A minimal safe wrapper over libpq (`pq-sys`, the library diesel itself
//! links) for what diesel cannot do with table names known only at run time:
//! `COPY (SELECT …) TO STDOUT` and `COPY "t" (…) FROM STDIN` on one
//! connection, inside one transaction. diesel 2.3's `copy_to`/`copy_from`
//! need a `table!` type, and the tables of a tenant schema depend on its
//! version.
//!
//! Failures become diesel errors of the matching kind (from the SQLSTATE), so
//! `DbError::is_transient` classifies them like every other database error.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::ptr;

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use pq_sys::{ConnStatusType, ExecStatusType, PGconn, PGresult};
use tenantplane_control_db::DbError;

/// One libpq connection, closed on drop.
pub(crate) struct RawPg {
    conn: *mut PGconn,
}

// SAFETY: a PGconn may move between threads as long as one thread uses it at
// a time, which `&mut self` on every call guarantees.
unsafe impl Send for RawPg {}

impl Drop for RawPg {
    fn drop(&mut self) {
        // SAFETY: `conn` came from PQconnectdb and is finished exactly once.
        unsafe { pq_sys::PQfinish(self.conn) }
    }
}

/// The error PostgreSQL reported, in the shape diesel's errors carry.
#[derive(Debug)]
struct PgInfo {
    message: String,
    detail: Option<String>,
}

impl DatabaseErrorInformation for PgInfo {
    fn message(&self) -> &str {
        &self.message
    }
    fn details(&self) -> Option<&str> {
        self.detail.as_deref()
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

/// diesel's error kinds by SQLSTATE (the ones `is_transient` and the
/// conflict mapping look at).
fn kind_of(sqlstate: &str) -> DatabaseErrorKind {
    match sqlstate {
        "40001" => DatabaseErrorKind::SerializationFailure,
        "23505" => DatabaseErrorKind::UniqueViolation,
        "23503" => DatabaseErrorKind::ForeignKeyViolation,
        "23502" => DatabaseErrorKind::NotNullViolation,
        "23514" => DatabaseErrorKind::CheckViolation,
        "25006" => DatabaseErrorKind::ReadOnlyTransaction,
        s if s.starts_with("08") => DatabaseErrorKind::ClosedConnection,
        _ => DatabaseErrorKind::Unknown,
    }
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libpq returns NUL-terminated strings that live as long as the
    // result or connection they came from; we copy at once.
    unsafe { CStr::from_ptr(p) }
        .to_string_lossy()
        .trim_end()
        .to_string()
}

/// A result, cleared on drop.
struct Res(*mut PGresult);

impl Drop for Res {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a result from PQexec/PQgetResult, cleared once.
            unsafe { pq_sys::PQclear(self.0) }
        }
    }
}

impl Res {
    fn status(&self) -> ExecStatusType {
        // SAFETY: PQresultStatus accepts any result pointer, NULL included.
        unsafe { pq_sys::PQresultStatus(self.0) }
    }
}

fn cstring(s: &str) -> Result<CString, DbError> {
    CString::new(s).map_err(|_| DbError::State("SQL text contains a NUL byte".into()))
}

impl RawPg {
    /// Connects with the same URL diesel would use (libpq parses it).
    pub(crate) fn connect(url: &str) -> Result<RawPg, DbError> {
        let c = cstring(url)?;
        // SAFETY: a valid C string; the returned pointer is never NULL except
        // out of memory, checked below, and owned by the RawPg.
        let conn = unsafe { pq_sys::PQconnectdb(c.as_ptr()) };
        if conn.is_null() {
            return Err(DbError::Connect(diesel::ConnectionError::BadConnection(
                "libpq could not allocate a connection".into(),
            )));
        }
        let raw = RawPg { conn };
        // SAFETY: a live connection.
        if unsafe { pq_sys::PQstatus(raw.conn) } != ConnStatusType::CONNECTION_OK {
            return Err(DbError::Connect(diesel::ConnectionError::BadConnection(
                raw.conn_error(),
            )));
        }
        raw.check(
            Res(unsafe_exec(
                raw.conn,
                "SET client_encoding TO 'UTF8'; SET client_min_messages TO warning",
            )?),
            None,
        )?;
        Ok(raw)
    }

    fn conn_error(&self) -> String {
        // SAFETY: a live connection; the message is copied at once.
        text(unsafe { pq_sys::PQerrorMessage(self.conn) })
    }

    fn lost(&self) -> bool {
        // SAFETY: a live connection.
        let status = unsafe { pq_sys::PQstatus(self.conn) };
        status == ConnStatusType::CONNECTION_BAD
    }

    /// The error of a failed result (or of the connection when there is no
    /// result), as a diesel error of the right kind.
    fn error(&self, res: &Res) -> DbError {
        let (message, sqlstate) = if res.0.is_null() {
            (self.conn_error(), String::new())
        } else {
            // SAFETY: a live result; strings copied at once.
            unsafe {
                (
                    text(pq_sys::PQresultErrorMessage(res.0)),
                    text(pq_sys::PQresultErrorField(
                        res.0,
                        pq_sys::PG_DIAG_SQLSTATE as c_int,
                    )),
                )
            }
        };
        let kind = if self.lost() {
            DatabaseErrorKind::ClosedConnection
        } else {
            kind_of(&sqlstate)
        };
        let message = if message.is_empty() {
            "the server reported an error without a message".to_string()
        } else {
            message
        };
        DbError::Query(diesel::result::Error::DatabaseError(
            kind,
            Box::new(PgInfo {
                message,
                detail: (!sqlstate.is_empty()).then(|| format!("SQLSTATE {sqlstate}")),
            }),
        ))
    }

    /// Ok when the result has the expected status (command or tuples when
    /// `want` is None).
    fn check(&self, res: Res, want: Option<ExecStatusType>) -> Result<Res, DbError> {
        let status = res.status();
        let ok = match want {
            Some(w) => status == w,
            None => matches!(
                status,
                ExecStatusType::PGRES_COMMAND_OK | ExecStatusType::PGRES_TUPLES_OK
            ),
        };
        if ok {
            Ok(res)
        } else {
            Err(self.error(&res))
        }
    }

    /// Runs one or more statements that return nothing we need.
    pub(crate) fn exec(&mut self, sql: &str) -> Result<(), DbError> {
        let res = Res(unsafe_exec(self.conn, sql)?);
        self.check(res, None).map(drop)
    }

    /// Runs a query; every value as text (`None` = NULL).
    pub(crate) fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, DbError> {
        let res = self.check(
            Res(unsafe_exec(self.conn, sql)?),
            Some(ExecStatusType::PGRES_TUPLES_OK),
        )?;
        // SAFETY: a live TUPLES_OK result; indexes stay within its bounds and
        // every value is copied before the result is cleared.
        let rows = unsafe {
            let (n, f) = (pq_sys::PQntuples(res.0), pq_sys::PQnfields(res.0));
            (0..n)
                .map(|r| {
                    (0..f)
                        .map(|c| {
                            (pq_sys::PQgetisnull(res.0, r, c) == 0)
                                .then(|| text(pq_sys::PQgetvalue(res.0, r, c)))
                        })
                        .collect()
                })
                .collect()
        };
        Ok(rows)
    }

    /// `COPY … TO STDOUT`: `row` gets each data row (text format: one line
    /// with its newline). An error from `row` stops the copy.
    pub(crate) fn copy_out(
        &mut self,
        sql: &str,
        mut row: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), DbError> {
        self.check(
            Res(unsafe_exec(self.conn, sql)?),
            Some(ExecStatusType::PGRES_COPY_OUT),
        )?;
        let mut failed: Option<std::io::Error> = None;
        loop {
            let mut buf: *mut c_char = ptr::null_mut();
            // SAFETY: blocking read of the next row; libpq allocates `buf`,
            // freed below with PQfreemem.
            let n = unsafe { pq_sys::PQgetCopyData(self.conn, &mut buf, 0) };
            if n > 0 {
                if failed.is_none() {
                    // SAFETY: libpq says `buf` holds `n` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) };
                    if let Err(e) = row(bytes) {
                        failed = Some(e);
                    }
                }
                // SAFETY: `buf` was allocated by libpq for this row.
                unsafe { pq_sys::PQfreemem(buf.cast()) };
                continue;
            }
            // -1: the copy is done (its result follows); -2: an error.
            break;
        }
        self.finish_results()?;
        match failed {
            Some(e) => Err(DbError::Io(e)),
            None => Ok(()),
        }
    }

    /// Starts `COPY … FROM STDIN`; send the data with [`CopyIn::send`] and
    /// end it with [`CopyIn::finish`].
    pub(crate) fn copy_in(&mut self, sql: &str) -> Result<CopyIn<'_>, DbError> {
        self.check(
            Res(unsafe_exec(self.conn, sql)?),
            Some(ExecStatusType::PGRES_COPY_IN),
        )?;
        Ok(CopyIn {
            pg: self,
            done: false,
        })
    }

    /// Reads the results after a COPY until libpq has none left; the first
    /// failed one is the error.
    fn finish_results(&mut self) -> Result<(), DbError> {
        let mut first: Option<DbError> = None;
        loop {
            // SAFETY: a live connection; each result is cleared by `Res`.
            let res = Res(unsafe { pq_sys::PQgetResult(self.conn) });
            if res.0.is_null() {
                break;
            }
            if let Err(e) = self.check(res, None) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn unsafe_exec(conn: *mut PGconn, sql: &str) -> Result<*mut PGresult, DbError> {
    let c = cstring(sql)?;
    // SAFETY: a live connection and a valid C string; the result (or NULL on
    // a fatal error, reported through the connection) is owned by the caller.
    Ok(unsafe { pq_sys::PQexec(conn, c.as_ptr()) })
}

/// An open `COPY … FROM STDIN`. Dropped without `finish`, it is aborted.
pub(crate) struct CopyIn<'a> {
    pg: &'a mut RawPg,
    done: bool,
}

impl CopyIn<'_> {
    /// Sends a chunk of rows (any split of the text-format stream).
    pub(crate) fn send(&mut self, data: &[u8]) -> Result<(), DbError> {
        for chunk in data.chunks(1 << 30) {
            // SAFETY: a live connection in COPY IN state; the chunk's length
            // fits in a c_int.
            let rc = unsafe {
                pq_sys::PQputCopyData(
                    self.pg.conn,
                    chunk.as_ptr() as *const c_char,
                    chunk.len() as c_int,
                )
            };
            if rc != 1 {
                return Err(self.pg.error(&Res(ptr::null_mut())));
            }
        }
        Ok(())
    }

    /// Ends the copy; the server's verdict on the data is the result.
    pub(crate) fn finish(mut self) -> Result<(), DbError> {
        self.done = true;
        // SAFETY: a live connection in COPY IN state.
        let rc = unsafe { pq_sys::PQputCopyEnd(self.pg.conn, ptr::null()) };
        if rc != 1 {
            return Err(self.pg.error(&Res(ptr::null_mut())));
        }
        self.pg.finish_results()
    }
}

impl Drop for CopyIn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let msg = c"copy abandoned";
            // SAFETY: a live connection in COPY IN state; the copy fails on
            // the server, and its results are drained.
            unsafe { pq_sys::PQputCopyEnd(self.pg.conn, msg.as_ptr()) };
            let _ = self.pg.finish_results();
        }
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (no backslash escapes: standard
/// strings are on since PostgreSQL 9.1).
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
