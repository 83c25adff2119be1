//! The test environment and the helpers that read a tenant database whole.

use std::collections::BTreeMap;
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use tenantplane_control_db::audit::Actor;
use tenantplane_control_db::schema::tenants;
use tenantplane_control_db::ControlDb;
use tenantplane_fleet::registry::{self, NewTenant, Tenant};
use tenantplane_fleet::servers::{self, NewServer};
use tenantplane_fleet::tenant_db::{db_name, TenantConnection, TenantDbLocation};
use tenantplane_migrations::catalogue;
use tenantplane_testkit::{fixture, TestPg};
use uuid::Uuid;

use crate::manifest::ServerKind;
use crate::store::FileStore;

pub struct Env {
    _dir: tempfile::TempDir,
    pub db: ControlDb,
    pub store: FileStore,
    pub kind: ServerKind,
    pub server: String,
    // Dropped last: the tenant databases go with it.
    pub pg: Option<TestPg>,
}

pub fn actor() -> Actor {
    Actor {
        id: "operator:test".into(),
        ..Actor::default()
    }
}

impl Env {
    /// `None` (the test skips) when the kind needs PostgreSQL and it is
    /// unreachable (see `TestPg::new`).
    pub fn new(kind: ServerKind) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let db = ControlDb::open(&format!(
            "sqlite://{}",
            dir.path().join("control.db").display()
        ))
        .unwrap();
        servers::ensure_default(&db, dir.path()).unwrap();
        let store = FileStore::new(dir.path().join("backups")).unwrap();
        let (pg, server) = match kind {
            ServerKind::Sqlite => (None, servers::DEFAULT_SERVER.to_string()),
            ServerKind::PgSchema | ServerKind::PgDatabase => {
                let pg = TestPg::new()?;
                let isolation = if kind == ServerKind::PgSchema {
                    "schema"
                } else {
                    "database"
                };
                servers::register(
                    &db,
                    &actor(),
                    NewServer {
                        name: Some("pg".into()),
                        kind: "postgres".into(),
                        url: pg.url(),
                        isolation: Some(isolation.into()),
                        capacity: None,
                    },
                )
                .unwrap();
                (Some(pg), "pg".to_string())
            }
        };
        Some(Env {
            _dir: dir,
            db,
            store,
            kind,
            server,
            pg,
        })
    }

    /// A tenant at head holding the phase-0 fixture (loaded at phase 0,
    /// then migrated: the backfills ran on it like on a real shop).
    pub fn tenant(&self, slug: &str, shops: u32, sales_per_shop: u32) -> Tenant {
        self.tenant_with(slug, shops, sales_per_shop, BTreeMap::new())
    }

    pub fn tenant_with(
        &self,
        slug: &str,
        shops: u32,
        sales_per_shop: u32,
        labels: BTreeMap<String, String>,
    ) -> Tenant {
        let t = registry::create(
            &self.db,
            &actor(),
            NewTenant {
                slug: slug.into(),
                name: format!("Shop {slug}"),
                plan: None,
                labels,
                contact_email: None,
                server: Some(self.server.clone()),
                schema: Some("phase:0".into()),
            },
        )
        .unwrap();
        self.track(&t.id);
        let mut c = self.conn(&t.id);
        let f = fixture::phase0(shops, sales_per_shop);
        exec(&mut c, &f.sql);
        if self.kind != ServerKind::Sqlite {
            exec(&mut c, fixture::PG_RESET_SEQUENCES);
        }
        let head = catalogue::head();
        c.migrate_to(head).unwrap();
        self.set_version(&t.id, head);
        registry::get(&self.db, &t.id).unwrap()
    }

    /// Drops a PostgreSQL tenant's own database with the test database.
    pub fn track(&self, tenant_id: &str) {
        if let (Some(pg), ServerKind::PgDatabase) = (&self.pg, self.kind) {
            pg.also_drop(&db_name(&Uuid::parse_str(tenant_id).unwrap()));
        }
    }

    pub fn set_version(&self, tenant_id: &str, v: Option<&str>) {
        diesel::update(tenants::table.find(tenant_id))
            .set(tenants::schema_version.eq(v))
            .execute(&mut *self.db.conn().unwrap())
            .unwrap();
    }

    pub fn location(&self, tenant_id: &str) -> TenantDbLocation {
        let mut conn = self.db.conn().unwrap();
        crate::backup::locate(&mut conn, tenant_id, true)
            .unwrap()
            .location
    }

    pub fn conn(&self, tenant_id: &str) -> TenantConnection {
        self.location(tenant_id).connect().unwrap()
    }

    /// The bodies of the outbox events of `kind`, oldest first.
    pub fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        use tenantplane_control_db::schema::outbox;
        let bodies: Vec<String> = outbox::table
            .filter(outbox::kind.eq(kind))
            .order(outbox::created_at)
            .select(outbox::body)
            .load(&mut *self.db.conn().unwrap())
            .unwrap();
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    pub fn store_path(&self, key: &str) -> std::path::PathBuf {
        self.store.path_of(key).unwrap()
    }
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

pub fn exec(c: &mut TenantConnection, sql: &str) {
    match c {
        TenantConnection::Sqlite(c) => c.batch_execute(sql),
        TenantConnection::Postgres(c) => c.batch_execute(sql),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A query whose one column is `v`, as text.
pub fn strings(c: &mut TenantConnection, sql: &str) -> Vec<String> {
    let rows: Vec<TextRow> = match c {
        TenantConnection::Sqlite(c) => diesel::sql_query(sql).load(c),
        TenantConnection::Postgres(c) => diesel::sql_query(sql).load(c),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|r| r.v.unwrap_or_else(|| "<null>".into()))
        .collect()
}

pub fn int(c: &mut TenantConnection, sql: &str) -> i64 {
    strings(c, sql)
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer from {sql}"))
}

fn is_pg(c: &TenantConnection) -> bool {
    matches!(c, TenantConnection::Postgres(_))
}

/// Base tables, diesel's bookkeeping and SQLite's AUTOINCREMENT counters
/// included (both must come back exactly).
pub fn tables(c: &mut TenantConnection) -> Vec<String> {
    let sql = if is_pg(c) {
        "SELECT tablename::text AS v FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
    } else {
        "SELECT name AS v FROM sqlite_master WHERE type = 'table' AND (name NOT LIKE 'sqlite_%' OR name = 'sqlite_sequence') ORDER BY 1"
    };
    strings(c, sql)
}

fn columns(c: &mut TenantConnection, table: &str) -> Vec<String> {
    let sql = if is_pg(c) {
        format!("SELECT column_name::text AS v FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position")
    } else {
        format!("SELECT name AS v FROM pragma_table_info('{table}') ORDER BY cid")
    };
    strings(c, &sql)
}

/// Every row of a table as text, sorted.
pub fn rows(c: &mut TenantConnection, table: &str) -> Vec<String> {
    let cols = columns(c, table);
    let pg = is_pg(c);
    let expr = cols
        .iter()
        .map(|col| {
            if pg {
                format!("COALESCE(\"{col}\"::text, '<null>')")
            } else {
                format!("quote(\"{col}\")")
            }
        })
        .collect::<Vec<_>>()
        .join(" || '|' || ");
    let mut out = strings(c, &format!("SELECT {expr} AS v FROM \"{table}\""));
    out.sort();
    out
}

/// Every object of the schema, one normalised line each, sorted; the
/// tenant's own schema name reads as `<schema>` so two tenants compare.
pub fn schema_dump(c: &mut TenantConnection) -> Vec<String> {
    let queries: &[&str] = if is_pg(c) {
        &[
            "SELECT 'column ' || table_name || '.' || column_name || ' #' || row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position) || ' ' || data_type || '/' || udt_name || ' null=' || is_nullable || ' default=' || COALESCE(column_default, '') || ' identity=' || is_identity AS v FROM information_schema.columns WHERE table_schema = current_schema()",
            "SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) AS v FROM pg_constraint WHERE connamespace = current_schema()::regnamespace",
            "SELECT 'index ' || indexname || ' ' || indexdef AS v FROM pg_indexes WHERE schemaname = current_schema()",
            "SELECT 'view ' || viewname || ' ' || definition AS v FROM pg_views WHERE schemaname = current_schema()",
            "SELECT 'matview ' || matviewname || ' ' || definition AS v FROM pg_matviews WHERE schemaname = current_schema()",
            "SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text AS v FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace",
            "SELECT 'function ' || p.proname || ' ' || pg_get_functiondef(p.oid) AS v FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace",
            "SELECT 'enum ' || t.typname || ' ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) AS v FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = current_schema()::regnamespace GROUP BY t.typname",
            "SELECT 'sequence ' || sequencename AS v FROM pg_sequences WHERE schemaname = current_schema()",
            // The schema itself: its owner and grants come back too.
            "SELECT 'schema owner=' || pg_get_userbyid(nspowner) || ' acl=' || COALESCE(nspacl::text, '') AS v FROM pg_namespace WHERE nspname = current_schema()",
        ]
    } else {
        &["SELECT type || ' ' || name || ' ON ' || tbl_name || ': ' || COALESCE(sql, '') AS v FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"]
    };
    let schema = if is_pg(c) {
        strings(c, "SELECT current_schema()::text AS v").pop()
    } else {
        None
    };
    let mut lines: Vec<String> = queries
        .iter()
        .flat_map(|q| strings(c, q))
        .map(|l| {
            let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
            match &schema {
                Some(s) => l.replace(&format!("{s}."), "<schema>."),
                None => l,
            }
        })
        .collect();
    if schema.is_some() {
        // Each sequence's state exactly (`pg_sequences` hides it until the
        // first nextval).
        for name in strings(
            c,
            "SELECT sequencename::text AS v FROM pg_sequences WHERE schemaname = current_schema()",
        ) {
            lines.extend(strings(
                c,
                &format!("SELECT 'sequence {name} ' || last_value || ' ' || is_called AS v FROM \"{name}\""),
            ));
        }
    }
    lines.sort();
    lines
}

/// A tenant database whole: schema and every table's rows.
#[derive(Debug, PartialEq)]
pub struct State {
    pub schema: Vec<String>,
    pub data: Vec<(String, Vec<String>)>,
}

pub fn state(c: &mut TenantConnection) -> State {
    let data = tables(c).into_iter().map(|t| {
        let r = rows(c, &t);
        (t, r)
    });
    let data = data.collect();
    State {
        schema: schema_dump(c),
        data,
    }
}

/// Asserts two states are equal, printing only the differences.
pub fn assert_same(left: &State, right: &State, what: &str) {
    let flat = |s: &State| -> Vec<String> {
        s.schema
            .iter()
            .cloned()
            .chain(
                s.data
                    .iter()
                    .flat_map(|(t, rows)| rows.iter().map(move |r| format!("{t}: {r}"))),
            )
            .collect()
    };
    let (l, r) = (flat(left), flat(right));
    if l == r {
        return;
    }
    let only_l: Vec<&String> = l.iter().filter(|x| !r.contains(x)).take(20).collect();
    let only_r: Vec<&String> = r.iter().filter(|x| !l.contains(x)).take(20).collect();
    panic!("{what}\n  only in the first: {only_l:#?}\n  only in the second: {only_r:#?}");
}

/// Sets a file's modification time `secs` seconds into the past.
pub fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}
