//! A SQLite tenant's schema from `sqlite_schema` and the pragma table-valued
//! functions, in one statement.

use diesel::prelude::*;
use diesel::SqliteConnection;

use super::{squash_whitespace, Row, Snapshot};

/// Every table (with its `CREATE` text, which carries its `CHECK`
/// constraints), column, index (unique, key columns with order and
/// collation, partial, its `CREATE INDEX` text), foreign key (grouped by
/// constraint), trigger and view. `sqlite_*` internals are left out.
/// (`group_concat` keeps the order of ordered subqueries: its own `ORDER BY`
/// needs SQLite 3.44, newer than some system libraries.)
const CATALOGUE: &str = r#"
WITH t AS (
  SELECT name FROM sqlite_schema
   WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'
)
SELECT 'table' AS kind, m.name AS name, m.name AS tbl, m.sql AS v1,
       NULL AS v2, NULL AS v3, NULL AS v4
  FROM sqlite_schema m JOIN t ON t.name = m.name WHERE m.type = 'table'
UNION ALL
SELECT 'column', t.name || '.' || p.name, t.name, p.type,
       CASE p."notnull" WHEN 0 THEN 'null' ELSE 'not null' END,
       p.dflt_value,
       CASE p.pk WHEN 0 THEN NULL ELSE 'primary key ' || p.pk END
  FROM t JOIN pragma_table_info(t.name) p
UNION ALL
SELECT 'index', il.name, t.name, t.name,
       CASE il."unique" WHEN 0 THEN 'no' ELSE 'yes' END,
       (SELECT group_concat(k, ', ') FROM (
          SELECT coalesce(x.name, '<expression>')
                 || CASE x."desc" WHEN 0 THEN '' ELSE ' DESC' END
                 || CASE WHEN x.coll IS NULL OR x.coll = 'BINARY' THEN '' ELSE ' COLLATE ' || x.coll END AS k
            FROM pragma_index_xinfo(il.name) x WHERE x."key" = 1 ORDER BY x.seqno)),
       (SELECT s.sql FROM sqlite_schema s WHERE s.type = 'index' AND s.name = il.name)
  FROM t JOIN pragma_index_list(t.name) il
UNION ALL
SELECT 'foreign key',
       tname || '(' || group_concat("from", ', ') || ')', tname,
       "table" || '(' || group_concat(coalesce("to", '<primary key>'), ', ') || ')',
       on_update, on_delete, "match"
  FROM (SELECT t.name AS tname, f.* FROM t JOIN pragma_foreign_key_list(t.name) f
         ORDER BY t.name, f.id, f.seq)
 GROUP BY tname, id
UNION ALL
SELECT type, name, CASE type WHEN 'trigger' THEN tbl_name END, sql, NULL, NULL, NULL
  FROM sqlite_schema WHERE type IN ('trigger', 'view')
"#;

/// Reads the schema of the database behind `conn`.
pub fn snapshot(conn: &mut SqliteConnection) -> QueryResult<Snapshot> {
    let rows: Vec<Row> = diesel::sql_query(CATALOGUE).load(conn)?;
    Ok(Snapshot::from_rows(rows, squash_whitespace))
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;

    fn db(sql: &str) -> SqliteConnection {
        let mut c = SqliteConnection::establish(":memory:").expect("memory");
        c.batch_execute(sql).expect("schema");
        c
    }

    #[test]
    fn reads_columns_indexes_foreign_keys_triggers_and_views() {
        let mut c = db("
            CREATE TABLE shops (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
            CREATE TABLE sales (
                id INTEGER PRIMARY KEY,
                shop_id BIGINT NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
                total BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
                note TEXT
            );
            CREATE UNIQUE INDEX sales_day ON sales (shop_id, total DESC) WHERE note IS NULL;
            CREATE VIEW big AS SELECT * FROM sales WHERE total > 100;
            CREATE TRIGGER sales_ai AFTER INSERT ON sales BEGIN SELECT 1; END;
            CREATE TABLE __diesel_schema_migrations (version TEXT PRIMARY KEY, run_on TIMESTAMP);
        ");
        let s = snapshot(&mut c).expect("snapshot");
        let a = |key: &str, aspect: &str| {
            s.get(key)
                .unwrap_or_else(|| panic!("{key} missing from {:#?}", s.objects.keys()))
                .aspects
                .get(aspect)
                .cloned()
                .flatten()
        };
        assert_eq!(a("column sales.total", "type").as_deref(), Some("BIGINT"));
        assert_eq!(a("column sales.total", "default").as_deref(), Some("0"));
        assert_eq!(
            a("column sales.total", "nullability").as_deref(),
            Some("not null")
        );
        assert_eq!(
            a("column sales.note", "nullability").as_deref(),
            Some("null")
        );
        assert_eq!(
            a("column sales.id", "key").as_deref(),
            Some("primary key 1")
        );
        assert_eq!(a("index sales_day", "unique").as_deref(), Some("yes"));
        assert_eq!(
            a("index sales_day", "columns").as_deref(),
            Some("shop_id, total DESC")
        );
        assert_eq!(
            a("foreign key sales(shop_id)", "references").as_deref(),
            Some("shops(id)")
        );
        assert_eq!(
            a("foreign key sales(shop_id)", "on delete").as_deref(),
            Some("CASCADE")
        );
        assert!(a("view big", "definition").is_some_and(|d| d.contains("total > 100")));
        assert!(a("trigger sales_ai", "definition").is_some());
        assert!(a("table sales", "definition").is_some_and(|d| d.contains("CHECK (total >= 0)")));
        assert!(
            !s.objects
                .keys()
                .any(|k| k.contains("__diesel") || k.contains("sqlite_sequence")),
            "{:?}",
            s.objects.keys()
        );
    }
}
