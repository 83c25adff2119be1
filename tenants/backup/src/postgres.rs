//! PostgreSQL tenants (schema and database isolation alike): the snapshot is
//! one connection in one `REPEATABLE READ READ ONLY` transaction that reads
//! the schema version, every table's rows with `COPY (SELECT … ORDER BY
//! <primary key>) TO STDOUT` and the identity counters. The DDL is not in the
//! artifact: a schema version fully determines it, so a restore runs the
//! embedded tenant migrations up to that version into an empty staging
//! schema, loads the rows with `COPY FROM`, sets the counters, and then
//! swaps the staging schema in for the live one in one transaction.
//!
//! The artifact (gzip) is a line stream: JSON header lines, and after each
//! table header that table's rows in COPY text format ended by `\.`:
//!
//! ```text
//! {"start":{"format":"tenantplane-pgcopy","version":1,"schema_version":"…"}}
//! {"table":{"name":"shop_profile","columns":["id","name",…]}}
//! 1\tShop 1\t…            (tab-separated columns)
//! \.
//! …
//! {"sequences":{"sequences":{"sales_id_seq":{"last_value":360,"is_called":true}}}}
//! {"end":{}}
//! ```
//!
//! Tables come parents first (by foreign key), so rows load with every
//! foreign key checked.

mod libpq;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use tenantplane_control_db::DbError;
use tenantplane_fleet::tenant_db::{TenantDbError, TenantDbLocation};
use tenantplane_fleet::urls::with_database;
use tenantplane_migrations::{runner, TENANT_POSTGRES};

use crate::manifest::{Content, RowHasher, SequenceState};
use libpq::{ident, literal, RawPg};

const FORMAT: &str = "tenantplane-pgcopy";
const FORMAT_VERSION: u32 = 1;
const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// Session settings that make COPY's text output the same on every run
/// (and exact to load back).
const SETTINGS: &str = "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; \
     SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'; SET LOCAL TimeZone = 'UTC';";

/// A tenant schema: the database URL and the schema in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PgPlace {
    pub url: String,
    pub schema: String,
}

impl PgPlace {
    /// Where a PostgreSQL tenant lives. A tenant with its own database lives
    /// in that database's default schema (`public`).
    pub(crate) fn of(location: &TenantDbLocation) -> Result<PgPlace, TenantDbError> {
        match location {
            TenantDbLocation::PgSchema { server_url, schema } => Ok(PgPlace {
                url: server_url.clone(),
                schema: schema.clone(),
            }),
            TenantDbLocation::PgDatabase {
                server_url,
                database,
            } => {
                let url = with_database(server_url, database)
                    .map_err(|e| TenantDbError::new("invalid server URL", DbError::State(e)))?;
                let mut pg = RawPg::connect(&url)
                    .map_err(|e| TenantDbError::new("cannot connect to PostgreSQL", e))?;
                let rows = pg
                    .query("SELECT current_schema()")
                    .map_err(|e| TenantDbError::new("cannot read the default schema", e))?;
                let schema = rows
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next().flatten())
                    .unwrap_or_else(|| "public".to_string());
                Ok(PgPlace { url, schema })
            }
            TenantDbLocation::SqliteFile { path } => Err(TenantDbError::new(
                "not a PostgreSQL tenant",
                DbError::State(path.display().to_string()),
            )),
        }
    }

    /// Another schema in the same database.
    pub(crate) fn sibling(&self, schema: &str) -> PgPlace {
        PgPlace {
            url: self.url.clone(),
            schema: schema.to_string(),
        }
    }
}

/// The artifact's header lines.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Header {
    Start {
        format: String,
        version: u32,
        schema_version: Option<String>,
    },
    Table {
        name: String,
        columns: Vec<String>,
    },
    Sequences {
        sequences: BTreeMap<String, SequenceState>,
    },
    End {},
}

/// One base table of a tenant schema.
struct TableInfo {
    name: String,
    columns: Vec<String>,
    key: Vec<String>,
    parents: BTreeSet<String>,
}

fn db(what: impl Into<String>) -> impl FnOnce(DbError) -> TenantDbError {
    let what = what.into();
    move |e| TenantDbError::new(what, e)
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TenantDbError {
    let what = what.into();
    move |e| TenantDbError::new(what, e)
}

fn schema_oid(schema: &str) -> String {
    format!(
        "(SELECT oid FROM pg_namespace WHERE nspname = {})",
        literal(schema)
    )
}

/// `FROM` clause of the relations (alias `c`) of the schema whose oid
/// expression is `ns`, found through `pg_depend`'s index on the schema
/// (every relation records a normal dependency on its schema). A plain
/// `pg_class WHERE relnamespace = …` has no index to use and reads the whole
/// catalog: with 1,000 tenant schemas that was ~128,000 rows per query and
/// made backing up every tenant quadratic in the fleet.
fn relations_of(ns: &str) -> String {
    format!(
        "pg_depend d JOIN pg_class c ON c.oid = d.objid \
         WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = {ns} \
           AND d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.deptype = 'n' \
           AND c.relnamespace = {ns}"
    )
}

fn parse_list(v: Option<String>) -> Vec<String> {
    v.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok())
        .unwrap_or_default()
}

/// The schema's base tables, parents before children (ties by name).
fn tables(pg: &mut RawPg, schema: &str) -> Result<Vec<TableInfo>, DbError> {
    let ns = schema_oid(schema);
    let exists = pg.query(&format!("SELECT {ns} IS NOT NULL"))?;
    if exists
        .first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .as_deref()
        != Some("t")
    {
        return Err(DbError::State(format!("schema {schema} does not exist")));
    }
    let rows = pg.query(&format!(
        "SELECT c.relname::text,
           (SELECT json_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '')::text,
           (SELECT json_agg(a.attname::text ORDER BY k.ord)
              FROM pg_index i
              CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = c.oid AND i.indisprimary)::text,
           (SELECT json_agg(DISTINCT p.relname::text) FROM pg_constraint f JOIN pg_class p ON p.oid = f.confrelid
             WHERE f.conrelid = c.oid AND f.contype = 'f' AND p.relnamespace = c.relnamespace AND p.oid <> c.oid)::text
         FROM {from} AND c.relkind = 'r'
         ORDER BY c.relname",
        from = relations_of(&ns)
    ))?;
    let mut infos: Vec<TableInfo> = rows
        .into_iter()
        .filter_map(|mut r| {
            let parents = parse_list(r.get_mut(3).and_then(Option::take));
            let key = parse_list(r.get_mut(2).and_then(Option::take));
            let columns = parse_list(r.get_mut(1).and_then(Option::take));
            let name = r.get_mut(0).and_then(Option::take)?;
            Some(TableInfo {
                name,
                columns,
                key,
                parents: parents.into_iter().collect(),
            })
        })
        .collect();
    // Kahn's algorithm over the foreign keys inside the schema.
    let mut ordered = Vec::with_capacity(infos.len());
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while !infos.is_empty() {
        let ready = infos
            .iter()
            .position(|t| t.parents.iter().all(|p| placed.contains(p)))
            // A cycle (none in the tenant schema): keep name order.
            .unwrap_or(0);
        let t = infos.remove(ready);
        placed.insert(t.name.clone());
        ordered.push(t);
    }
    Ok(ordered)
}

fn sequences(pg: &mut RawPg, schema: &str) -> Result<BTreeMap<String, SequenceState>, DbError> {
    let names: Vec<String> = pg
        .query(&format!(
            "SELECT c.relname::text FROM {} AND c.relkind = 'S' ORDER BY 1",
            relations_of(&schema_oid(schema))
        ))?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    // A sequence's own row is the only place that has both values
    // (`pg_sequences.last_value` is NULL until the first nextval).
    let sql = names
        .iter()
        .map(|n| {
            format!(
                "SELECT {}::text, last_value::text, is_called::text FROM {}.{}",
                literal(n),
                ident(schema),
                ident(n)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut out = BTreeMap::new();
    for r in pg.query(&sql)? {
        let text = |i: usize| r.get(i).cloned().flatten();
        if let (Some(name), Some(Ok(last_value)), Some(called)) =
            (text(0), text(1).map(|v| v.parse::<i64>()), text(2))
        {
            out.insert(
                name,
                SequenceState {
                    last_value,
                    is_called: called == "t" || called == "true",
                },
            );
        }
    }
    Ok(out)
}

fn header_line(out: &mut (impl Write + ?Sized), h: &Header) -> io::Result<()> {
    let mut line = serde_json::to_vec(h).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

/// Reads the tenant at `place` in one repeatable-read snapshot, writing the
/// artifact stream (uncompressed) to `out` when given. Returns what it holds.
fn read_snapshot(
    place: &PgPlace,
    mut out: Option<&mut dyn Write>,
) -> Result<Content, TenantDbError> {
    let mut pg = RawPg::connect(&place.url).map_err(db("cannot connect to PostgreSQL"))?;
    pg.exec(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL search_path TO {}; {SETTINGS}",
        ident(&place.schema)
    ))
    .map_err(db("cannot start the snapshot"))?;
    let infos = tables(&mut pg, &place.schema).map_err(db("cannot read the catalog"))?;
    let mut content = Content::default();
    if infos.iter().any(|t| t.name == MIGRATIONS_TABLE) {
        let v = pg
            .query(&format!(
                "SELECT max(version)::text FROM {}",
                ident(MIGRATIONS_TABLE)
            ))
            .map_err(db("cannot read the schema version"))?;
        content.schema_version = v
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten());
    }
    if let Some(w) = out.as_deref_mut() {
        header_line(
            w,
            &Header::Start {
                format: FORMAT.into(),
                version: FORMAT_VERSION,
                schema_version: content.schema_version.clone(),
            },
        )
        .map_err(io_err("cannot write the artifact"))?;
    }
    for t in &infos {
        if t.columns.is_empty() {
            continue;
        }
        let cols = t
            .columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let order = if t.key.is_empty() {
            format!("{}::text", ident(&t.name))
        } else {
            t.key
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(w) = out.as_deref_mut() {
            header_line(
                w,
                &Header::Table {
                    name: t.name.clone(),
                    columns: t.columns.clone(),
                },
            )
            .map_err(io_err("cannot write the artifact"))?;
        }
        let mut hasher = RowHasher::default();
        pg.copy_out(
            &format!(
                "COPY (SELECT {cols} FROM {} ORDER BY {order}) TO STDOUT",
                ident(&t.name)
            ),
            |row| {
                hasher.row(row);
                match out.as_deref_mut() {
                    Some(w) => w.write_all(row),
                    None => Ok(()),
                }
            },
        )
        .map_err(db(format!("cannot read table {}", t.name)))?;
        if let Some(w) = out.as_deref_mut() {
            w.write_all(b"\\.\n")
                .map_err(io_err("cannot write the artifact"))?;
        }
        content.tables.insert(t.name.clone(), hasher.finish());
    }
    content.sequences =
        sequences(&mut pg, &place.schema).map_err(db("cannot read the sequences"))?;
    if let Some(w) = out {
        header_line(
            w,
            &Header::Sequences {
                sequences: content.sequences.clone(),
            },
        )
        .and_then(|()| header_line(w, &Header::End {}))
        .map_err(io_err("cannot write the artifact"))?;
    }
    pg.exec("COMMIT").map_err(db("cannot end the snapshot"))?;
    Ok(content)
}

/// Snapshots the tenant at `place` into `out` (gzip).
pub(crate) fn snapshot(place: &PgPlace, out: impl Write) -> Result<Content, TenantDbError> {
    let mut gz = GzEncoder::new(
        io::BufWriter::with_capacity(1 << 16, out),
        flate2::Compression::fast(),
    );
    let content = read_snapshot(place, Some(&mut gz))?;
    gz.finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|mut w| w.flush())
        .map_err(io_err("cannot write the artifact"))?;
    Ok(content)
}

/// What the schema at `place` holds, measured the way a snapshot is.
pub(crate) fn measure(place: &PgPlace) -> Result<Content, TenantDbError> {
    read_snapshot(place, None)
}

/// Why loading an artifact failed: the artifact is bad (a finding about the
/// backup) or the database failed us.
#[derive(Debug)]
pub(crate) enum Loaded {
    Bad(String),
    Db(TenantDbError),
}

impl From<TenantDbError> for Loaded {
    fn from(e: TenantDbError) -> Self {
        Loaded::Db(e)
    }
}

/// A failure while loading rows: transient ones are the database's
/// fault, the rest the data's.
fn load_failure(what: String, e: DbError) -> Loaded {
    if e.is_transient() {
        Loaded::Db(TenantDbError::new(what, e))
    } else {
        let text = tenantplane_control_db::error::report(&e);
        Loaded::Bad(format!("{what}: {text}"))
    }
}

/// Creates the schema `place.schema` (which must not exist), migrates it to
/// `version` with the embedded tenant migrations, and loads the artifact's
/// rows and counters into it, in one transaction after the migrations.
pub(crate) fn load(place: &PgPlace, artifact: &Path, version: Option<&str>) -> Result<(), Loaded> {
    let mut conn = PgConnection::establish(&place.url)
        .map_err(|e| TenantDbError::new("cannot connect to PostgreSQL", e))?;
    conn.batch_execute(&format!(
        "CREATE SCHEMA {0}; SET search_path TO {0};",
        ident(&place.schema)
    ))
    .map_err(|e| TenantDbError::new(format!("cannot create schema {}", place.schema), e))?;
    runner::migrate(&mut conn, &TENANT_POSTGRES, version, |_| {}).map_err(|e| {
        TenantDbError::new(
            format!("migrating schema {} failed: {e}", place.schema),
            DbError::Migration(Box::new(e)),
        )
    })?;
    drop(conn);

    let mut pg = RawPg::connect(&place.url).map_err(db("cannot connect to PostgreSQL"))?;
    pg.exec(&format!(
        "BEGIN; SET LOCAL search_path TO {}; {SETTINGS}",
        ident(&place.schema)
    ))
    .map_err(db("cannot start loading"))?;
    let infos = tables(&mut pg, &place.schema).map_err(db("cannot read the catalog"))?;
    let known: BTreeMap<&str, &TableInfo> = infos.iter().map(|t| (t.name.as_str(), t)).collect();
    // Triggers derive rows (invoice counters, customer metrics) that the
    // artifact already holds: off while loading, back on afterwards.
    let triggers = pg
        .query(&format!(
            "SELECT r.relname::text, t.tgname::text FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
              WHERE r.oid IN (SELECT c.oid FROM {} AND c.relkind = 'r')
                AND NOT t.tgisinternal AND t.tgenabled = 'O'
              ORDER BY 1, 2",
            relations_of(&schema_oid(&place.schema))
        ))
        .map_err(db("cannot list the triggers"))?;
    let toggle = |on: bool| -> String {
        triggers
            .iter()
            .filter_map(
                |r| match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
                    (Some(t), Some(g)) => Some(format!(
                        "ALTER TABLE {} {} TRIGGER {};",
                        ident(&t),
                        if on { "ENABLE" } else { "DISABLE" },
                        ident(&g)
                    )),
                    _ => None,
                },
            )
            .collect()
    };
    let mut setup = toggle(false);
    if !infos.is_empty() {
        setup.push_str(&format!(
            "TRUNCATE {};",
            infos
                .iter()
                .map(|t| ident(&t.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !setup.is_empty() {
        pg.exec(&setup)
            .map_err(db("cannot prepare the schema for loading"))?;
    }

    let file = std::fs::File::open(artifact).map_err(io_err("cannot read the artifact"))?;
    let mut reader = BufReader::with_capacity(1 << 16, GzDecoder::new(BufReader::new(file)));
    let mut line = Vec::new();
    let mut next_line = |line: &mut Vec<u8>| -> Result<bool, Loaded> {
        line.clear();
        reader
            .read_until(b'\n', line)
            .map(|n| n > 0)
            .map_err(|e| Loaded::Bad(format!("the artifact does not decompress: {e}")))
    };
    let header = |line: &[u8]| -> Result<Header, Loaded> {
        serde_json::from_slice(line)
            .map_err(|e| Loaded::Bad(format!("the artifact is malformed: {e}")))
    };
    if !next_line(&mut line)? {
        return Err(Loaded::Bad("the artifact is empty".into()));
    }
    match header(&line)? {
        Header::Start {
            format,
            version: v,
            schema_version,
        } => {
            if format != FORMAT || v != FORMAT_VERSION {
                return Err(Loaded::Bad(format!(
                    "unknown artifact format {format} v{v}"
                )));
            }
            if schema_version.as_deref() != version {
                return Err(Loaded::Bad(format!(
                    "the artifact is at schema version {schema_version:?}, the manifest says {version:?}"
                )));
            }
        }
        _ => {
            return Err(Loaded::Bad(
                "the artifact does not start with its header".into(),
            ))
        }
    }
    loop {
        if !next_line(&mut line)? {
            return Err(Loaded::Bad("the artifact is truncated".into()));
        }
        match header(&line)? {
            Header::Table { name, columns } => {
                if !known.contains_key(name.as_str()) {
                    return Err(Loaded::Bad(format!(
                        "table {name} does not exist at schema version {version:?}"
                    )));
                }
                let cols = columns
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut copy = pg
                    .copy_in(&format!("COPY {} ({cols}) FROM STDIN", ident(&name)))
                    .map_err(|e| load_failure(format!("loading table {name}"), e))?;
                let mut chunk: Vec<u8> = Vec::with_capacity(1 << 16);
                loop {
                    if !next_line(&mut line)? {
                        return Err(Loaded::Bad(format!(
                            "the artifact is truncated in table {name}"
                        )));
                    }
                    if line == b"\\.\n" {
                        break;
                    }
                    chunk.extend_from_slice(&line);
                    if chunk.len() >= 1 << 16 {
                        copy.send(&chunk)
                            .map_err(|e| load_failure(format!("loading table {name}"), e))?;
                        chunk.clear();
                    }
                }
                if !chunk.is_empty() {
                    copy.send(&chunk)
                        .map_err(|e| load_failure(format!("loading table {name}"), e))?;
                }
                copy.finish()
                    .map_err(|e| load_failure(format!("loading table {name}"), e))?;
            }
            Header::Sequences { sequences } => {
                let sql: String = sequences
                    .iter()
                    .map(|(name, s)| {
                        format!(
                            "SELECT setval({}, {}, {});",
                            literal(&ident(name)),
                            s.last_value,
                            s.is_called
                        )
                    })
                    .collect();
                if !sql.is_empty() {
                    pg.exec(&sql)
                        .map_err(|e| load_failure("setting the sequences".into(), e))?;
                }
            }
            Header::End {} => break,
            Header::Start { .. } => {
                return Err(Loaded::Bad("the artifact has a second header".into()))
            }
        }
    }
    let mut finish = toggle(true);
    let matviews = pg
        .query(&format!(
            "SELECT c.relname::text FROM {} AND c.relkind = 'm' AND c.relispopulated ORDER BY 1",
            relations_of(&schema_oid(&place.schema))
        ))
        .map_err(db("cannot list the materialized views"))?;
    for m in matviews
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        // Derived data: recomputed from the restored rows.
        finish.push_str(&format!("REFRESH MATERIALIZED VIEW {};", ident(&m)));
    }
    finish.push_str("COMMIT;");
    pg.exec(&finish)
        .map_err(|e| load_failure("finishing the load".into(), e))?;
    Ok(())
}

/// Drops a staging or scratch schema (and everything in it).
pub(crate) fn drop_schema(place: &PgPlace) -> Result<(), TenantDbError> {
    let mut pg = RawPg::connect(&place.url).map_err(db("cannot connect to PostgreSQL"))?;
    pg.exec(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        ident(&place.schema)
    ))
    .map_err(db(format!("cannot drop schema {}", place.schema)))
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct Grant {
    #[diesel(sql_type = Text)]
    grantee: String,
    #[diesel(sql_type = Text)]
    privilege: String,
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = Text)]
    me: String,
}

/// The tenant's advisory lock (the key rollouts take with
/// `pg_try_advisory_xact_lock`), held by a session on the tenant's database
/// until dropped.
pub(crate) struct TenantLock {
    conn: PgConnection,
    key: i64,
}

impl TenantLock {
    /// Waits up to `wait` for the lock; a lock still held then is a
    /// transient failure (a migration or another restore is running).
    pub(crate) fn acquire(
        url: &str,
        key: i64,
        wait: Duration,
    ) -> Result<TenantLock, TenantDbError> {
        let mut conn = PgConnection::establish(url)
            .map_err(|e| TenantDbError::new("cannot connect to PostgreSQL", e))?;
        let started = Instant::now();
        loop {
            let got: Locked =
                diesel::sql_query(format!("SELECT pg_try_advisory_lock({key}) AS locked"))
                    .get_result(&mut conn)
                    .map_err(|e| TenantDbError::new("cannot take the tenant's lock", e))?;
            if got.locked {
                return Ok(TenantLock { conn, key });
            }
            if started.elapsed() >= wait {
                return Err(TenantDbError::new(
                    "the tenant is locked by a migration or another restore",
                    io::Error::new(io::ErrorKind::WouldBlock, "advisory lock held"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// In one transaction: drops the live schema and renames the staging
    /// schema to its name, carrying the live schema's owner and grants.
    /// Sessions using the tenant wait for the swap (up to the lock timeout)
    /// and then see the restored schema.
    pub(crate) fn swap(&mut self, staging: &str, live: &str) -> Result<(), TenantDbError> {
        let owner: Option<Owner> = diesel::sql_query(
            "SELECT pg_get_userbyid(nspowner)::text AS owner, current_user::text AS me FROM pg_namespace WHERE nspname = $1",
        )
        .bind::<Text, _>(live)
        .get_result(&mut self.conn)
        .optional()
        .map_err(|e| TenantDbError::new("cannot read the schema's owner", e))?;
        let grants: Vec<Grant> = diesel::sql_query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
                    a.privilege_type::text AS privilege
               FROM pg_namespace n, aclexplode(n.nspacl) a
              WHERE n.nspname = $1 AND a.grantee <> n.nspowner",
        )
        .bind::<Text, _>(live)
        .load(&mut self.conn)
        .map_err(|e| TenantDbError::new("cannot read the schema's grants", e))?;
        self.conn
            .transaction(|c| {
                c.batch_execute(&format!(
                    "SET LOCAL lock_timeout = '30s'; DROP SCHEMA IF EXISTS {0} CASCADE; ALTER SCHEMA {1} RENAME TO {0};",
                    ident(live),
                    ident(staging)
                ))?;
                // Owner and grants as they were; a role we may not hand the
                // schema to keeps it ours (logged), the restore stands.
                let mut acl = String::new();
                if let Some(o) = owner.as_ref().filter(|o| o.owner != o.me) {
                    acl.push_str(&format!("ALTER SCHEMA {} OWNER TO {};", ident(live), ident(&o.owner)));
                }
                for g in &grants {
                    acl.push_str(&format!(
                        "GRANT {} ON SCHEMA {} TO {};",
                        g.privilege,
                        ident(live),
                        g.grantee
                    ));
                }
                if !acl.is_empty() {
                    if let Err(e) = c.transaction(|c| c.batch_execute(&acl)) {
                        tracing::warn!(schema = live, error = %e, "restored schema: could not carry its owner and grants");
                    }
                }
                Ok::<_, diesel::result::Error>(())
            })
            .map_err(|e| TenantDbError::new(format!("swapping schema {staging} in for {live} failed"), e))
    }
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        // Closing the session releases it too; unlocking first keeps a
        // pooled-looking connection from holding it a moment longer.
        let _ = self
            .conn
            .batch_execute(&format!("SELECT pg_advisory_unlock({})", self.key));
    }
}
