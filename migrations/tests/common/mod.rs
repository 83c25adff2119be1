//! A tenant database on either backend, with the helpers the migration tests
//! need: run SQL, read one column, dump the schema, digest table data.
#![allow(dead_code)]

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use tenantplane_migrations::{runner, MigrateError, MigrationPlan, TENANT_POSTGRES, TENANT_SQLITE};
use tenantplane_testkit::{fixture, TestPg};

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

#[derive(QueryableByName)]
struct IntRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    v: Option<i64>,
}

pub enum TenantDb {
    Sqlite {
        conn: SqliteConnection,
        _dir: tempfile::TempDir,
    },
    Postgres {
        conn: PgConnection,
        _pg: TestPg,
    },
}

/// The tenant schema used inside a test database on PostgreSQL: not `public`,
/// to prove the migrations never qualify names.
pub const PG_SCHEMA: &str = "t_test";

impl TenantDb {
    pub fn sqlite() -> TenantDb {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn =
            SqliteConnection::establish(&dir.path().join("t.db").to_string_lossy()).expect("open");
        conn.batch_execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .expect("pragmas");
        TenantDb::Sqlite { conn, _dir: dir }
    }

    pub fn postgres() -> Option<TenantDb> {
        let pg = TestPg::new()?;
        let mut conn = pg.connect();
        conn.batch_execute(&format!(
            "CREATE SCHEMA {PG_SCHEMA}; SET search_path TO {PG_SCHEMA};"
        ))
        .expect("schema");
        Some(TenantDb::Postgres { conn, _pg: pg })
    }

    /// Both backends (PostgreSQL only when reachable, see `TestPg`).
    pub fn all() -> Vec<TenantDb> {
        let mut v = vec![TenantDb::sqlite()];
        v.extend(TenantDb::postgres());
        v
    }

    pub fn name(&self) -> &'static str {
        match self {
            TenantDb::Sqlite { .. } => "sqlite",
            TenantDb::Postgres { .. } => "postgres",
        }
    }

    pub fn is_pg(&self) -> bool {
        matches!(self, TenantDb::Postgres { .. })
    }

    pub fn exec(&mut self, sql: &str) -> QueryResult<()> {
        match self {
            TenantDb::Sqlite { conn, .. } => conn.batch_execute(sql),
            TenantDb::Postgres { conn, .. } => conn.batch_execute(sql),
        }
    }

    /// Runs a query whose one column is named `v`, as text.
    pub fn texts(&mut self, sql: &str) -> Vec<Option<String>> {
        let rows: Vec<TextRow> = match self {
            TenantDb::Sqlite { conn, .. } => diesel::sql_query(sql).load(conn),
            TenantDb::Postgres { conn, .. } => diesel::sql_query(sql).load(conn),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|r| r.v).collect()
    }

    pub fn strings(&mut self, sql: &str) -> Vec<String> {
        self.texts(sql)
            .into_iter()
            .map(|v| v.unwrap_or_else(|| "<null>".into()))
            .collect()
    }

    pub fn ints(&mut self, sql: &str) -> Vec<i64> {
        let rows: Vec<IntRow> = match self {
            TenantDb::Sqlite { conn, .. } => diesel::sql_query(sql).load(conn),
            TenantDb::Postgres { conn, .. } => diesel::sql_query(sql).load(conn),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|r| r.v.unwrap_or(i64::MIN)).collect()
    }

    pub fn int(&mut self, sql: &str) -> i64 {
        self.ints(sql)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no row: {sql}"))
    }

    pub fn migrate_to(&mut self, target: Option<&str>) -> Result<MigrationPlan, MigrateError> {
        match self {
            TenantDb::Sqlite { conn, .. } => runner::migrate(conn, &TENANT_SQLITE, target, |_| {}),
            TenantDb::Postgres { conn, .. } => {
                runner::migrate(conn, &TENANT_POSTGRES, target, |_| {})
            }
        }
    }

    /// Loads the phase-0 fixture (needs the baseline tables).
    pub fn load_fixture(&mut self, shops: u32, sales_per_shop: u32) -> fixture::Fixture {
        let f = fixture::phase0(shops, sales_per_shop);
        self.exec(&f.sql).expect("fixture");
        if self.is_pg() {
            self.exec(fixture::PG_RESET_SEQUENCES).expect("sequences");
        }
        f
    }

    /// Base tables (no views), without diesel's bookkeeping.
    pub fn tables(&mut self) -> Vec<String> {
        let sql = match self {
            TenantDb::Sqlite { .. } => "SELECT name AS v FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations' ORDER BY name",
            TenantDb::Postgres { .. } => "SELECT tablename::text AS v FROM pg_tables WHERE schemaname = current_schema() AND tablename <> '__diesel_schema_migrations' ORDER BY tablename",
        };
        self.strings(sql)
    }

    pub fn columns(&mut self, table: &str) -> Vec<String> {
        let sql = match self {
            TenantDb::Sqlite { .. } => format!("SELECT name AS v FROM pragma_table_info('{table}') ORDER BY cid"),
            TenantDb::Postgres { .. } => format!(
                "SELECT column_name::text AS v FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
            ),
        };
        self.strings(&sql)
    }

    /// Every object of the schema, one normalised line each, sorted.
    pub fn schema_dump(&mut self) -> Vec<String> {
        let queries: &[&str] = match self {
            TenantDb::Sqlite { .. } => &[
                "SELECT type || ' ' || name || ' ON ' || tbl_name || ': ' || COALESCE(sql, '') AS v FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations'",
            ],
            TenantDb::Postgres { .. } => &[
                // The rank among live columns, not attnum: PostgreSQL never
                // reuses a dropped column's number.
                "SELECT 'column ' || table_name || '.' || column_name || ' #' || row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position) || ' ' || data_type || '/' || udt_name || ' null=' || is_nullable || ' default=' || COALESCE(column_default, '') || ' identity=' || is_identity AS v FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> '__diesel_schema_migrations'",
                "SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) AS v FROM pg_constraint WHERE connamespace = current_schema()::regnamespace AND conrelid::regclass::text <> '__diesel_schema_migrations'",
                "SELECT 'index ' || indexname || ' ' || indexdef AS v FROM pg_indexes WHERE schemaname = current_schema() AND tablename <> '__diesel_schema_migrations'",
                "SELECT 'view ' || viewname || ' ' || definition AS v FROM pg_views WHERE schemaname = current_schema()",
                "SELECT 'matview ' || matviewname || ' ' || definition AS v FROM pg_matviews WHERE schemaname = current_schema()",
                "SELECT 'trigger ' || pg_get_triggerdef(t.oid) AS v FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace",
                "SELECT 'function ' || p.proname || ' ' || pg_get_functiondef(p.oid) AS v FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace",
                "SELECT 'enum ' || t.typname || ' ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) AS v FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = current_schema()::regnamespace GROUP BY t.typname",
                "SELECT 'sequence ' || sequencename AS v FROM pg_sequences WHERE schemaname = current_schema()",
            ],
        };
        let mut lines: Vec<String> = queries
            .iter()
            .flat_map(|q| self.strings(q))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        lines.sort();
        lines
    }

    /// Every row of `table` as text, sorted.
    pub fn digest(&mut self, table: &str) -> Vec<String> {
        self.digest_masked(table, false)
    }

    /// Every row of `table` as text, sorted; with `mask_times`, columns named
    /// `*_at` read as a constant (rows a migration backfills get the clock's
    /// time, which differs between two runs).
    pub fn digest_masked(&mut self, table: &str, mask_times: bool) -> Vec<String> {
        let cols = self.columns(table);
        let value = |c: &String, quoted: String| {
            if mask_times && c.ends_with("_at") {
                "'<time>'".to_string()
            } else {
                quoted
            }
        };
        let sql = match self {
            TenantDb::Sqlite { .. } => {
                let expr = cols
                    .iter()
                    .map(|c| value(c, format!("quote(\"{c}\")")))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                format!("SELECT {expr} AS v FROM \"{table}\"")
            }
            TenantDb::Postgres { .. } => {
                let expr = cols
                    .iter()
                    .map(|c| value(c, format!("COALESCE(\"{c}\"::text, '<null>')")))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                format!("SELECT {expr} AS v FROM \"{table}\"")
            }
        };
        let mut rows = self.strings(&sql);
        rows.sort();
        rows
    }

    /// Every base table's rows.
    pub fn data(&mut self) -> Vec<(String, Vec<String>)> {
        self.data_masking(&[])
    }

    /// Every base table's rows, with the `*_at` columns of `masked` tables
    /// read as a constant.
    pub fn data_masking(&mut self, masked: &[String]) -> Vec<(String, Vec<String>)> {
        self.tables()
            .into_iter()
            .map(|t| {
                let d = self.digest_masked(&t, masked.contains(&t));
                (t, d)
            })
            .collect()
    }
}

/// The catalogue's versions, oldest first.
pub fn versions() -> Vec<String> {
    tenantplane_migrations::catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .collect()
}

/// The last baseline (phase 0) version: fixtures load after it.
pub fn baseline_head() -> String {
    tenantplane_migrations::catalogue::phase_version(0)
        .expect("phase 0")
        .to_string()
}

/// Asserts two sorted line lists are equal, printing only the differences.
pub fn assert_same(left: &[String], right: &[String], what: &str) {
    if left == right {
        return;
    }
    let only_left: Vec<&String> = left.iter().filter(|l| !right.contains(l)).collect();
    let only_right: Vec<&String> = right.iter().filter(|r| !left.contains(r)).collect();
    panic!("{what}\n  only before/first: {only_left:#?}\n  only after/second: {only_right:#?}");
}

/// The same for table data.
pub fn assert_same_data(
    left: &[(String, Vec<String>)],
    right: &[(String, Vec<String>)],
    what: &str,
) {
    let flat = |d: &[(String, Vec<String>)]| -> Vec<String> {
        d.iter()
            .flat_map(|(t, rows)| rows.iter().map(move |r| format!("{t}: {r}")))
            .collect()
    };
    assert_same(&flat(left), &flat(right), what);
}
