//! A PostgreSQL tenant's schema from `pg_catalog`, for the connection's
//! `current_schema()` (the tenant's schema under schema isolation, `public`
//! in its own database), in one statement: one round trip.

use diesel::prelude::*;
use diesel::PgConnection;

use super::{squash_whitespace, strip_schema, Row, Snapshot};

/// Tables, columns (type, nullability, default, identity), indexes
/// (`pg_get_indexdef`), constraints (`pg_get_constraintdef`), triggers,
/// views, functions, enum types and sequences of the current schema, and a
/// first row naming the schema and the server's version.
const CATALOGUE: &str = r#"
WITH s AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = current_schema())
SELECT 'schema' AS kind, current_schema()::text AS name, NULL::text AS tbl,
       current_setting('server_version_num') AS v1, NULL::text AS v2, NULL::text AS v3, NULL::text AS v4
UNION ALL
SELECT 'table', c.relname::text, c.relname::text, NULL, NULL, NULL, NULL
  FROM pg_class c JOIN s ON c.relnamespace = s.oid WHERE c.relkind IN ('r', 'p')
UNION ALL
SELECT 'column', c.relname || '.' || a.attname, c.relname::text,
       format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
       pg_get_expr(d.adbin, d.adrelid),
       CASE a.attidentity WHEN 'a' THEN 'identity always' WHEN 'd' THEN 'identity by default'
            ELSE CASE a.attgenerated WHEN 's' THEN 'generated stored' END END
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN s ON c.relnamespace = s.oid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'index', ci.relname::text, ct.relname::text, ct.relname::text,
       CASE WHEN i.indisunique THEN 'yes' ELSE 'no' END, NULL, pg_get_indexdef(i.indexrelid)
  FROM pg_index i
  JOIN pg_class ci ON ci.oid = i.indexrelid
  JOIN pg_class ct ON ct.oid = i.indrelid
  JOIN s ON ct.relnamespace = s.oid
UNION ALL
SELECT 'constraint', c.relname || '.' || k.conname, c.relname::text,
       CASE k.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key'
            WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' ELSE k.contype::text END,
       pg_get_constraintdef(k.oid), NULL, NULL
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN s ON k.connamespace = s.oid
UNION ALL
SELECT 'trigger', t.tgname::text, c.relname::text, pg_get_triggerdef(t.oid), NULL, NULL, NULL
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN s ON c.relnamespace = s.oid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT 'view', c.relname::text, NULL, pg_get_viewdef(c.oid), NULL, NULL, NULL
  FROM pg_class c JOIN s ON c.relnamespace = s.oid WHERE c.relkind IN ('v', 'm')
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', NULL,
       pg_get_functiondef(p.oid), NULL, NULL, NULL
  FROM pg_proc p JOIN s ON p.pronamespace = s.oid WHERE p.prokind IN ('f', 'p')
UNION ALL
SELECT 'type', t.typname::text, NULL,
       string_agg(e.enumlabel::text, ', ' ORDER BY e.enumsortorder), NULL, NULL, NULL
  FROM pg_type t JOIN s ON t.typnamespace = s.oid JOIN pg_enum e ON e.enumtypid = t.oid
 GROUP BY t.typname
UNION ALL
SELECT 'sequence', c.relname::text, NULL, format_type(q.seqtypid, NULL), NULL, NULL, NULL
  FROM pg_class c JOIN s ON c.relnamespace = s.oid JOIN pg_sequence q ON q.seqrelid = c.oid
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

/// Reads the schema `current_schema()` names on `conn`.
pub fn snapshot(conn: &mut PgConnection) -> QueryResult<PgSnapshot> {
    let mut rows: Vec<Row> = diesel::sql_query(CATALOGUE).load(conn)?;
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
