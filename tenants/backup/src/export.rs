//! Tenant data exports: a tenant (with its key) or an operator asks for one,
//! the [`ExportJob`] reads the tenant's database in one read-only snapshot
//! and writes one file per table (JSON or CSV) into a zip in the artifact
//! store (`exports/<tenant id>/<export id>.zip`), and the row goes
//! `requested → ready` (or `failed`), then `expired` once the
//! [`ExpireExports`] job deleted the file past `expires_at` (24 h after it
//! became ready).
//!
//! Downloads need only a random token ([`TOKEN_PREFIX`] and 40 letters and
//! digits), of which the control database keeps only the SHA-256. A token is
//! shown once, so [`get_with_download`] issues a fresh one every time a
//! ready export is read and stores its hash in place of the previous one
//! (which stops working). A token is valid until the export expires.
//!
//! An export holds one tenant's rows only: the job connects to that tenant's
//! database (its SQLite file, or its own PostgreSQL schema or database,
//! reading only tables of the connection's current schema).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenantplane_api_types::exports::{Export, ExportFormat};
use tenantplane_control_db::audit::{self, Actor, Change};
use tenantplane_control_db::db::{write_tx, ControlDb};
use tenantplane_control_db::error::{report, Error, Result};
use tenantplane_control_db::outbox::{self, EventKind};
use tenantplane_control_db::schema::{exports, tenants};
use tenantplane_control_db::states::{ExportState, TenantStatus};
use tenantplane_control_db::DbError;
use tenantplane_fleet::registry;
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbError};
use tenantplane_jobs::{enqueue, Job, JobContext, JobError};
use uuid::Uuid;

use crate::backup::{locate, work_dir};
use crate::store::ArtifactStore;

/// How long a ready export (its file and its download URLs) lives.
pub const DEFAULT_TTL: Duration = Duration::hours(24);

/// The prefix of download tokens.
pub const TOKEN_PREFIX: &str = "tp_ex_";

/// The diesel migrations table: the schema's bookkeeping, not tenant data.
const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = exports)]
struct ExportRow {
    id: String,
    tenant_id: String,
    state: String,
    format: String,
    requested_by: String,
    artifact: String,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    token_hash: Option<String>,
    expires_at: Option<NaiveDateTime>,
    error: Option<String>,
    created_at: NaiveDateTime,
    ready_at: Option<NaiveDateTime>,
}

impl ExportRow {
    fn wire(self) -> Export {
        Export {
            id: self.id,
            tenant_id: self.tenant_id,
            state: self.state,
            format: self.format,
            requested_by: self.requested_by,
            size_bytes: self.size_bytes,
            sha256: self.sha256,
            error: self.error,
            created_at: self.created_at,
            ready_at: self.ready_at,
            expires_at: self.expires_at,
            download_url: None,
        }
    }
}

/// The store key of an export's zip.
pub fn artifact_key(tenant_id: &str, export_id: &str) -> String {
    format!("exports/{tenant_id}/{export_id}.zip")
}

/// A new download token (only its [`hash_token`] is stored).
fn new_token() -> String {
    let body: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{body}")
}

/// SHA-256 of a download token, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Asks for an export of a tenant (id or slug): the row `requested` and its
/// [`ExportJob`] in one transaction.
pub fn request(
    db: &ControlDb,
    tenant: &str,
    format: ExportFormat,
    actor: &Actor,
) -> Result<Export> {
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |conn| {
        let t = registry::find_row(conn, tenant)?;
        if t.status == TenantStatus::Provisioning.as_str() {
            return Err(Error::Conflict(format!(
                "tenant '{}' is still being provisioned",
                t.slug
            )));
        }
        let id = Uuid::new_v4().to_string();
        let row = ExportRow {
            artifact: artifact_key(&t.id, &id),
            id: id.clone(),
            tenant_id: t.id.clone(),
            state: ExportState::Requested.as_str().to_string(),
            format: format.as_str().to_string(),
            requested_by: actor.id.clone(),
            size_bytes: None,
            sha256: None,
            token_hash: None,
            expires_at: None,
            error: None,
            created_at: Utc::now().naive_utc(),
            ready_at: None,
        };
        diesel::insert_into(exports::table)
            .values(&row)
            .execute(conn)?;
        enqueue(
            conn,
            &ExportJob {
                export_id: id.clone(),
            },
        )?;
        audit::record(
            conn,
            actor,
            Change {
                action: "export.request",
                resource_type: "export",
                resource_id: Some(&id),
                tenant_id: Some(&t.id),
                before: None,
                after: Some(serde_json::json!({ "format": format.as_str() })),
            },
        )?;
        Ok(row.wire())
    })
}

fn find(
    conn: &mut tenantplane_control_db::db::ControlConnection,
    tenant: &str,
    id: &str,
) -> Result<ExportRow> {
    let t = registry::find_row(conn, tenant)?;
    exports::table
        .filter(exports::id.eq(id))
        .filter(exports::tenant_id.eq(&t.id))
        .select(ExportRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::not_found("export", id))
}

/// One export of a tenant (id or slug); another tenant's export is not
/// found.
pub fn get(db: &ControlDb, tenant: &str, id: &str) -> Result<Export> {
    let mut conn = db.conn()?;
    Ok(find(&mut conn, tenant, id)?.wire())
}

/// One export of a tenant and, while it is ready and not expired, a fresh
/// download token (its hash replaces the previous token's, which stops
/// working). The token is the caller's to show; it is not stored.
pub fn get_with_download(
    db: &ControlDb,
    tenant: &str,
    id: &str,
) -> Result<(Export, Option<String>)> {
    let mut conn = db.conn()?;
    let row = find(&mut conn, tenant, id)?;
    let now = Utc::now().naive_utc();
    let live = row.state == ExportState::Ready.as_str() && row.expires_at.is_some_and(|e| e > now);
    if !live {
        return Ok((row.wire(), None));
    }
    let token = new_token();
    let hash = hash_token(&token);
    let n = write_tx(&mut conn, None, |conn| {
        Ok(diesel::update(
            exports::table
                .filter(exports::id.eq(&row.id))
                .filter(exports::state.eq(ExportState::Ready.as_str())),
        )
        .set(exports::token_hash.eq(&hash))
        .execute(conn)?)
    })?;
    Ok((row.wire(), (n == 1).then_some(token)))
}

/// Why a download was refused.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No export has this token (never issued, or replaced by a newer one).
    #[error("unknown download token")]
    Unknown,
    /// The export expired (its file is or will soon be deleted).
    #[error("this export expired at {0}Z")]
    Expired(NaiveDateTime),
    /// The export is not ready (it failed).
    #[error("the export is {0}, not ready")]
    NotReady(String),
    #[error(transparent)]
    Other(#[from] Error),
}

/// A downloaded export: the zip in a scratch directory (deleted on drop).
#[derive(Debug)]
pub struct Downloaded {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    /// The name to offer for saving (`tenantplane-export-<id>.zip`).
    pub filename: String,
    pub export: Export,
}

/// The export a download token points to, copied from the store.
pub fn download(
    db: &ControlDb,
    store: &dyn ArtifactStore,
    token: &str,
) -> std::result::Result<Downloaded, DownloadError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(DownloadError::Unknown);
    }
    let mut conn = db.conn()?;
    let row: ExportRow = exports::table
        .filter(exports::token_hash.eq(hash_token(token)))
        .select(ExportRow::as_select())
        .first(&mut conn)
        .optional()
        .map_err(Error::from)?
        .ok_or(DownloadError::Unknown)?;
    let now = Utc::now().naive_utc();
    if let Some(at) = row.expires_at.filter(|e| *e <= now) {
        return Err(DownloadError::Expired(at));
    }
    if row.state == ExportState::Expired.as_str() {
        return Err(DownloadError::Expired(row.expires_at.unwrap_or(now)));
    }
    if row.state != ExportState::Ready.as_str() {
        return Err(DownloadError::NotReady(row.state));
    }
    let dir = work_dir(&row.tenant_id)?;
    let path = dir.path().join("export.zip");
    store
        .get(&row.artifact, &path)
        .map_err(|e| e.for_tenant(&row.tenant_id, "reading the export"))?;
    Ok(Downloaded {
        _dir: dir,
        path,
        filename: format!("tenantplane-export-{}.zip", row.id),
        export: row.wire(),
    })
}

// ---------------------------------------------------------------- reading

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn texts(conn: &mut TenantConnection, sql: &str) -> QueryResult<Vec<String>> {
    let rows: Vec<TextRow> = match conn {
        TenantConnection::Sqlite(c) => diesel::sql_query(sql).load(c)?,
        TenantConnection::Postgres(c) => diesel::sql_query(sql).load(c)?,
    };
    Ok(rows.into_iter().filter_map(|r| r.v).collect())
}

fn failed<E: Into<DbError>>(what: impl Into<String>) -> impl FnOnce(E) -> TenantDbError {
    let what = what.into();
    move |e| TenantDbError::new(what, e)
}

/// One table: its columns in order, its rows as JSON objects (text).
struct Table {
    name: String,
    columns: Vec<String>,
    rows: Vec<String>,
}

/// Reads every table of the connection's tenant inside one read-only
/// snapshot, handing each to `each` (which writes it out).
fn read_tables(
    conn: &mut TenantConnection,
    mut each: impl FnMut(Table) -> io::Result<()>,
) -> std::result::Result<(), TenantDbError> {
    let sqlite = matches!(conn, TenantConnection::Sqlite(_));
    let (begin, list) = if sqlite {
        (
            // A deferred transaction whose first read starts the snapshot:
            // every later read sees the same state (WAL).
            "BEGIN DEFERRED",
            format!(
                "SELECT name AS v FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> {} ORDER BY name",
                quote_literal(MIGRATIONS_TABLE)
            ),
        )
    } else {
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            // Only the connection's own schema: the tenant's schema (its
            // search_path) or its database's default schema.
            format!(
                "SELECT c.relname::text AS v FROM pg_class c \
                 WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) \
                 AND c.relkind IN ('r', 'p') AND c.relname <> {} ORDER BY 1",
                quote_literal(MIGRATIONS_TABLE)
            ),
        )
    };
    let batch = |conn: &mut TenantConnection, sql: &str| match conn {
        TenantConnection::Sqlite(c) => c.batch_execute(sql),
        TenantConnection::Postgres(c) => c.batch_execute(sql),
    };
    batch(conn, begin).map_err(failed("cannot start the snapshot"))?;
    let result = (|| {
        let names = texts(conn, &list).map_err(failed("cannot list the tables"))?;
        for name in names {
            let columns = if sqlite {
                texts(
                    conn,
                    &format!(
                        "SELECT name AS v FROM pragma_table_info({}) ORDER BY cid",
                        quote_literal(&name)
                    ),
                )
            } else {
                texts(
                    conn,
                    &format!(
                        "SELECT a.attname::text AS v FROM pg_attribute a \
                         WHERE a.attrelid = (SELECT c.oid FROM pg_class c WHERE c.relname = {} \
                           AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())) \
                         AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                        quote_literal(&name)
                    ),
                )
            }
            .map_err(failed(format!("cannot read the columns of {name}")))?;
            let rows_sql = if sqlite {
                let pairs = columns
                    .iter()
                    .map(|c| {
                        let q = quote_ident(c);
                        format!(
                            "{}, CASE typeof({q}) WHEN 'blob' THEN hex({q}) ELSE {q} END",
                            quote_literal(c)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "SELECT json_object({pairs}) AS v FROM {}",
                    quote_ident(&name)
                )
            } else {
                format!(
                    "SELECT row_to_json(t)::text AS v FROM {} t",
                    quote_ident(&name)
                )
            };
            let rows =
                texts(conn, &rows_sql).map_err(failed(format!("cannot read table {name}")))?;
            each(Table {
                name,
                columns,
                rows,
            })
            .map_err(failed("cannot write the export"))?;
        }
        Ok(())
    })();
    // A read-only transaction: ending it changes nothing either way.
    let end = batch(conn, if sqlite { "COMMIT" } else { "ROLLBACK" });
    result?;
    end.map_err(failed("cannot end the snapshot"))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a
/// line break. NULL is an empty field.
fn csv_field(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::Null => return String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_line(fields: impl Iterator<Item = String>) -> String {
    let mut line = fields.collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

/// Writes one table as a file of the zip.
fn write_table<W: Write + io::Seek>(
    zip: &mut zip::ZipWriter<W>,
    format: ExportFormat,
    t: &Table,
) -> io::Result<()> {
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(format!("{}.{}", t.name, format.as_str()), options)
        .map_err(io::Error::other)?;
    match format {
        ExportFormat::Json => {
            zip.write_all(b"[")?;
            for (i, row) in t.rows.iter().enumerate() {
                zip.write_all(if i == 0 { b"\n" } else { b",\n" })?;
                zip.write_all(row.as_bytes())?;
            }
            zip.write_all(if t.rows.is_empty() { b"]\n" } else { b"\n]\n" })?;
        }
        ExportFormat::Csv => {
            zip.write_all(
                csv_line(
                    t.columns
                        .iter()
                        .map(|c| csv_field(&serde_json::Value::String(c.clone()))),
                )
                .as_bytes(),
            )?;
            for row in &t.rows {
                let obj: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(row).map_err(io::Error::other)?;
                let line = csv_line(
                    t.columns
                        .iter()
                        .map(|c| csv_field(obj.get(c).unwrap_or(&serde_json::Value::Null))),
                );
                zip.write_all(line.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Size and SHA-256 (hex) of a file.
fn measure(path: &Path) -> io::Result<(i64, String)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0i64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as i64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Makes the export: reads the tenant, writes the zip, stores it and marks
/// the row `ready`. A row that is not `requested` any more is left alone.
pub fn run_export(db: &ControlDb, store: &dyn ArtifactStore, export_id: &str) -> Result<()> {
    let mut conn = db.conn()?;
    let Some(row) = exports::table
        .find(export_id)
        .select(ExportRow::as_select())
        .first(&mut conn)
        .optional()?
    else {
        return Ok(());
    };
    if row.state != ExportState::Requested.as_str() {
        return Ok(());
    }
    let format = ExportFormat::parse(&row.format)
        .ok_or_else(|| Error::invalid(format!("unknown export format '{}'", row.format)))?;
    let at = locate(&mut conn, &row.tenant_id, false)?;
    if at.tenant.status == TenantStatus::Provisioning.as_str() {
        return Err(Error::Conflict(format!(
            "tenant '{}' is still being provisioned",
            at.tenant.slug
        )));
    }
    let tenant = at.tenant.id.clone();
    let dir = work_dir(&tenant)?;
    let path = dir.path().join("export.zip");
    let file = File::create(&path)
        .map_err(|e| Error::tenant_db(&tenant, "cannot create the export file", e))?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    let mut tconn = at
        .location
        .connect()
        .map_err(|e| e.for_tenant(&tenant, "connecting for the export"))?;
    read_tables(&mut tconn, |t| write_table(&mut zip, format, &t))
        .map_err(|e| e.for_tenant(&tenant, "reading the tenant"))?;
    drop(tconn);
    zip.finish()
        .map_err(io::Error::other)
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::tenant_db(&tenant, "cannot write the export file", e))?;
    let (size, sha) =
        measure(&path).map_err(|e| Error::tenant_db(&tenant, "cannot read the export file", e))?;
    store
        .put(&row.artifact, &path)
        .map_err(|e| e.for_tenant(&tenant, "storing the export"))?;
    let now = Utc::now().naive_utc();
    write_tx(&mut conn, None, |conn| {
        diesel::update(
            exports::table
                .find(&row.id)
                .filter(exports::state.eq(ExportState::Requested.as_str())),
        )
        .set((
            exports::state.eq(ExportState::Ready.as_str()),
            exports::size_bytes.eq(size),
            exports::sha256.eq(&sha),
            exports::ready_at.eq(now),
            exports::expires_at.eq(now + DEFAULT_TTL),
            exports::error.eq(None::<String>),
        ))
        .execute(conn)?;
        let facts: Option<(String, Option<String>)> = tenants::table
            .find(&row.tenant_id)
            .select((tenants::slug, tenants::contact_email))
            .first(conn)
            .optional()?;
        let (slug, contact_email) = facts.map_or((None, None), |(s, c)| (Some(s), c));
        outbox::record(
            conn,
            EventKind::ExportReady,
            Some(&row.tenant_id),
            &tenantplane_api_types::notify::ExportReadyEvent {
                export_id: row.id.clone(),
                tenant_id: row.tenant_id.clone(),
                slug,
                contact_email,
                format: row.format.clone(),
                size_bytes: Some(size),
                expires_at: Some((now + DEFAULT_TTL).and_utc()),
            },
        )?;
        Ok(())
    })
}

/// Marks an export `failed` with its error and removes any file it left.
fn mark_failed(
    db: &ControlDb,
    store: Option<&dyn ArtifactStore>,
    export_id: &str,
    error: &str,
) -> Result<()> {
    let mut conn = db.conn()?;
    let artifact: Option<String> = write_tx(&mut conn, None, |conn| {
        let n = diesel::update(
            exports::table
                .find(export_id)
                .filter(exports::state.eq(ExportState::Requested.as_str())),
        )
        .set((
            exports::state.eq(ExportState::Failed.as_str()),
            exports::error.eq(error),
        ))
        .execute(conn)?;
        if n == 0 {
            return Ok(None);
        }
        Ok(exports::table
            .find(export_id)
            .select(exports::artifact)
            .first(conn)
            .optional()?)
    })?;
    if let (Some(store), Some(key)) = (store, artifact) {
        if let Err(e) = store.delete(&key) {
            tracing::warn!(export_id, error = %e, "cannot remove a failed export's file");
        }
    }
    Ok(())
}

/// Marks ready exports whose `expires_at` passed (at `now`) `expired` and
/// deletes their files. Returns how many.
pub fn expire(db: &ControlDb, store: &dyn ArtifactStore, now: NaiveDateTime) -> Result<usize> {
    let mut conn = db.conn()?;
    let due: Vec<(String, String, String)> = exports::table
        .filter(exports::state.eq(ExportState::Ready.as_str()))
        .filter(exports::expires_at.le(now))
        .order(exports::expires_at)
        .select((exports::id, exports::tenant_id, exports::artifact))
        .load(&mut conn)?;
    let mut n = 0;
    for (id, tenant, key) in due {
        // The file first: a row marked expired never points to a file left
        // behind.
        store
            .delete(&key)
            .map_err(|e| e.for_tenant(&tenant, "deleting an expired export"))?;
        n += write_tx(&mut conn, None, |conn| {
            Ok(diesel::update(
                exports::table
                    .find(&id)
                    .filter(exports::state.eq(ExportState::Ready.as_str())),
            )
            // The token's hash stays: its URL answers 410 Gone, not 404.
            .set(exports::state.eq(ExportState::Expired.as_str()))
            .execute(conn)?)
        })?;
    }
    Ok(n)
}

/// The files of an export's zip with their text, by name (for checks and
/// tools; an export's files are text).
pub fn read_zip(path: &Path) -> io::Result<std::collections::BTreeMap<String, String>> {
    let mut archive = zip::ZipArchive::new(File::open(path)?).map_err(io::Error::other)?;
    let mut out = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).map_err(io::Error::other)?;
        let name = f.name().map_err(io::Error::other)?.to_string();
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        out.insert(name, text);
    }
    Ok(out)
}

// ---------------------------------------------------------------- jobs

/// Makes one export. At most one is queued per export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportJob {
    pub export_id: String,
}

impl Job for ExportJob {
    const KIND: &'static str = "export.tenant";
    const MAX_ATTEMPTS: i32 = 3;

    fn dedup_key(&self) -> Option<String> {
        Some(self.export_id.clone())
    }

    /// A permanent failure, or a transient one on the last attempt, marks
    /// the row `failed` with the whole error chain.
    fn run(&self, ctx: &JobContext) -> std::result::Result<(), JobError> {
        let store = crate::store::installed();
        let outcome = match &store {
            Some(s) => run_export(ctx.db(), s.as_ref(), &self.export_id),
            None => Err(Error::invalid(
                "no artifact store is installed in this worker (tenantplane_backup::jobs::install_store)",
            )),
        };
        let e = match outcome {
            Ok(()) => return Ok(()),
            // The tenant was deleted meanwhile: nothing to export.
            Err(e @ Error::NotFound { .. }) => e,
            // Still provisioning: it will not be for long.
            Err(e @ Error::Conflict(_)) => e,
            Err(e) => e,
        };
        let err = JobError::from(e);
        let last = ctx.attempt() >= Self::MAX_ATTEMPTS;
        if err.is_permanent() || last {
            let text = report(&err);
            mark_failed(ctx.db(), store.as_deref(), &self.export_id, &text)?;
            tracing::warn!(export_id = %self.export_id, error = %text, "export failed");
            return Ok(());
        }
        Err(err)
    }
}

/// Expires exports past their `expires_at` and deletes their files. Queued
/// hourly by the worker's housekeeping (with `due`), or by a schedule of
/// kind `export-cleanup` (its payload is a `schedules::Fire`, whose fields
/// this job does not need; the schedule sets the dedup key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpireExports {
    /// The housekeeping period boundary this run belongs to.
    #[serde(default)]
    pub due: Option<NaiveDateTime>,
}

impl Job for ExpireExports {
    const KIND: &'static str = "export-cleanup";

    fn dedup_key(&self) -> Option<String> {
        self.due.map(|d| d.to_string())
    }

    fn run(&self, ctx: &JobContext) -> std::result::Result<(), JobError> {
        let Some(store) = crate::store::installed() else {
            return Ok(());
        };
        let n = expire(ctx.db(), store.as_ref(), Utc::now().naive_utc())?;
        if n > 0 {
            tracing::info!(expired = n, "expired exports removed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        use serde_json::json;
        assert_eq!(csv_field(&json!(null)), "");
        assert_eq!(csv_field(&json!(12)), "12");
        assert_eq!(csv_field(&json!("plain")), "plain");
        assert_eq!(csv_field(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(&json!("two\nlines")), "\"two\nlines\"");
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, b) = (new_token(), new_token());
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 40);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn the_cleanup_accepts_a_schedule_fire_and_the_housekeeping_payload() {
        let fire = serde_json::json!({
            "schedule": "exports", "run_id": 7, "fire_at": "2026-11-29T15:00:00",
            "selector": null, "params": null
        });
        let job: ExpireExports = serde_json::from_value(fire).expect("parses");
        assert_eq!(job.due, None);
        assert_eq!(job.dedup_key(), None);
        let job: ExpireExports =
            serde_json::from_value(serde_json::json!({"due": "2026-11-29T16:00:00"}))
                .expect("parses");
        assert!(job.dedup_key().is_some());
    }

    #[test]
    fn sqlite_tables_are_exported_in_one_zip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut c = SqliteConnection::establish(&db.to_string_lossy()).unwrap();
        c.batch_execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, note TEXT);
             INSERT INTO items VALUES (1, 'one', NULL), (2, 'a,b', 'x');
             CREATE TABLE __diesel_schema_migrations (version TEXT);",
        )
        .unwrap();
        let mut conn = TenantConnection::Sqlite(c);
        for format in [ExportFormat::Json, ExportFormat::Csv] {
            let out = dir.path().join(format!("x.{}.zip", format.as_str()));
            let mut zip = zip::ZipWriter::new(File::create(&out).unwrap());
            read_tables(&mut conn, |t| write_table(&mut zip, format, &t)).unwrap();
            zip.finish().unwrap();
            let mut archive = zip::ZipArchive::new(File::open(&out).unwrap()).unwrap();
            assert_eq!(archive.len(), 1, "the migrations table is not exported");
            let mut text = String::new();
            archive
                .by_name(&format!("items.{}", format.as_str()))
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            match format {
                ExportFormat::Json => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        v,
                        serde_json::json!([
                            {"id": 1, "name": "one", "note": null},
                            {"id": 2, "name": "a,b", "note": "x"}
                        ])
                    );
                }
                ExportFormat::Csv => {
                    assert_eq!(text, "id,name,note\r\n1,one,\r\n2,\"a,b\",x\r\n");
                }
            }
        }
    }

    #[test]
    fn postgres_exports_read_only_the_tenants_own_schema() {
        use tenantplane_fleet::tenant_db::TenantDbLocation;
        let Some(pg) = tenantplane_testkit::TestPg::new() else {
            return;
        };
        pg.connect()
            .batch_execute(
                "CREATE SCHEMA t_mine; CREATE SCHEMA t_theirs;
                 CREATE TABLE t_mine.items (id SERIAL PRIMARY KEY, name TEXT, at TIMESTAMP);
                 INSERT INTO t_mine.items (name, at) VALUES ('mine', '2026-11-29 12:00:00'), (NULL, NULL);
                 CREATE TABLE t_theirs.items (id SERIAL PRIMARY KEY, name TEXT);
                 INSERT INTO t_theirs.items (name) VALUES ('theirs');
                 CREATE TABLE t_theirs.secrets (v TEXT);",
            )
            .unwrap();
        let location = TenantDbLocation::PgSchema {
            server_url: pg.url(),
            schema: "t_mine".into(),
        };
        let mut conn = location.connect().unwrap();
        let mut seen = Vec::new();
        read_tables(&mut conn, |t| {
            seen.push((t.name, t.columns, t.rows));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1, "only the tenant's own tables");
        let (name, columns, rows) = &seen[0];
        assert_eq!(name, "items");
        assert_eq!(columns, &["id", "name", "at"]);
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect();
        assert!(
            rows.contains(
                &serde_json::json!({"id": 1, "name": "mine", "at": "2026-11-29T12:00:00"})
            ),
            "{rows:?}"
        );
        assert!(
            rows.contains(&serde_json::json!({"id": 2, "name": null, "at": null})),
            "{rows:?}"
        );
        assert!(!format!("{rows:?}").contains("theirs"));
    }
}
