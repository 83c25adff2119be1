//! A PostgreSQL tenant's schema from `pg_catalog`, for the connection's
//! `current_schema()` (the tenant's schema under schema isolation, `public`
//! in its own database), in one statement.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::PgConnection;

use super::{squash_whitespace, strip_schema, Row, Snapshot};

/// Tables, columns (type, nullability, default, identity), indexes
/// (`pg_get_indexdef`), constraints (`pg_get_constraintdef`), triggers,
/// views, functions, enum types and sequences of the current schema, and a
/// first row naming the schema and the server's version.
///
/// Shaped for a database holding many tenant schemas: the schema's
/// relations are read once (`rel`), and everything hanging off them is
/// looked up per relation through the catalogue's indexes (`LATERAL` on
/// `attrelid`, `indrelid`, `conrelid`, `tgrelid`), not by scanning
/// `pg_attribute` or `pg_constraint` of every schema (`OFFSET 0` keeps
/// each lookup a per-relation index scan; flattened, the planner hash-joins
/// whole catalogues). At 200 schemas in one database this took a check
/// from ~20 ms to ~3 ms (with [`PLANNER`]; docs/benchmarks.md).
const CATALOGUE: &str = r#"
WITH s AS MATERIALIZED (
  SELECT oid FROM pg_namespace WHERE nspname = current_schema()
),
rel AS MATERIALIZED (
  SELECT c.oid, c.relname::text AS relname, c.relkind
    FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM s)
)
SELECT 'schema' AS kind, current_schema()::text AS name, NULL::text AS tbl,
       current_setting('server_version_num') AS v1, NULL::text AS v2, NULL::text AS v3, NULL::text AS v4
UNION ALL
SELECT 'table', c.relname, c.relname, NULL, NULL, NULL, NULL
  FROM rel c WHERE c.relkind IN ('r', 'p')
UNION ALL
SELECT 'column', c.relname || '.' || a.attname, c.relname,
       format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
       (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
         WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum),
       CASE a.attidentity WHEN 'a' THEN 'identity always' WHEN 'd' THEN 'identity by default'
            ELSE CASE a.attgenerated WHEN 's' THEN 'generated stored' END END
  FROM rel c
 CROSS JOIN LATERAL (
   SELECT * FROM pg_attribute a
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped OFFSET 0) a
 WHERE c.relkind IN ('r', 'p')
UNION ALL
SELECT 'index', i.relname, c.relname, c.relname, i.uniq, NULL, i.def
  FROM rel c
 CROSS JOIN LATERAL (
   SELECT ci.relname::text AS relname,
          CASE WHEN x.indisunique THEN 'yes' ELSE 'no' END AS uniq,
          pg_get_indexdef(x.indexrelid) AS def
     FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
    WHERE x.indrelid = c.oid OFFSET 0) i
UNION ALL
SELECT 'constraint', c.relname || '.' || k.conname, c.relname, k.kind, k.def, NULL, NULL
  FROM rel c
 CROSS JOIN LATERAL (
   SELECT x.conname::text AS conname,
          CASE x.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key'
               WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' ELSE x.contype::text END AS kind,
          pg_get_constraintdef(x.oid) AS def
     FROM pg_constraint x WHERE x.conrelid = c.oid OFFSET 0) k
UNION ALL
SELECT 'trigger', t.tgname, c.relname, t.def, NULL, NULL, NULL
  FROM rel c
 CROSS JOIN LATERAL (
   SELECT x.tgname::text AS tgname, pg_get_triggerdef(x.oid) AS def
     FROM pg_trigger x WHERE x.tgrelid = c.oid AND NOT x.tgisinternal OFFSET 0) t
UNION ALL
SELECT 'view', c.relname, NULL, pg_get_viewdef(c.oid), NULL, NULL, NULL
  FROM rel c WHERE c.relkind IN ('v', 'm')
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', NULL,
       pg_get_functiondef(p.oid), NULL, NULL, NULL
  FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM s) AND p.prokind IN ('f', 'p')
UNION ALL
SELECT 'type', t.typname::text, NULL,
       (SELECT string_agg(e.enumlabel::text, ', ' ORDER BY e.enumsortorder)
          FROM pg_enum e WHERE e.enumtypid = t.oid), NULL, NULL, NULL
  FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM s) AND t.typtype = 'e'
UNION ALL
SELECT 'sequence', c.relname, NULL,
       (SELECT format_type(q.seqtypid, NULL) FROM pg_sequence q WHERE q.seqrelid = c.oid),
       NULL, NULL, NULL
  FROM rel c WHERE c.relkind = 'S'
"#;

/// A PostgreSQL schema's snapshot, with what the reference must match.
#[derive(Debug, Clone)]
pub struct PgSnapshot {
    pub snapshot: Snapshot,
    /// The schema it was read from (normalised away in the snapshot).
    pub schema: String,
    /// The server's major version: catalogue text (defaults, view
    /// definitions) may print differently across majors, so a reference is
    /// only compared with tenants on the same major.
    pub server_major: u32,
}

/// The planner settings the catalogue query runs under, for its
/// transaction only. Without them a database of 200 freshly created tenant
/// schemas (catalogue statistics not yet gathered) made the planner expect
/// thousands of rows per relation: the estimated cost crossed
/// `jit_above_cost` and JIT compilation alone took ~1 s per check (measured
/// under load; docs/benchmarks.md). With JIT off and nested loops over the
/// catalogue's indexes the query costs the same whatever the statistics.
const PLANNER: &str = "SET LOCAL jit = off; SET LOCAL enable_seqscan = off; \
    SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;";

/// Reads the schema `current_schema()` names on `conn` (in a transaction of
/// its own, or a savepoint inside the caller's).
pub fn snapshot(conn: &mut PgConnection) -> QueryResult<PgSnapshot> {
    let mut rows: Vec<Row> = conn.transaction(|c| {
        c.batch_execute(PLANNER)?;
        diesel::sql_query(CATALOGUE).load(c)
    })?;
    let (schema, version) = match rows.iter().position(|r| r.kind == "schema") {
        Some(i) => {
            let r = rows.swap_remove(i);
            (r.name, r.v1)
        }
        None => (String::new(), None),
    };
    let server_major = version
        .and_then(|v| v.parse::<u32>().ok())
        .map(|v| v / 10_000)
        .unwrap_or(0);
    let snapshot = Snapshot::from_rows(rows, |v| squash_whitespace(&strip_schema(v, &schema)));
    Ok(PgSnapshot {
        snapshot,
        schema,
        server_major,
    })
}
