//! Verification probes: the seed checklist's "test CRUD flows covering new
//! columns". After a tenant is migrated, each probe whose migration the schema
//! has inserts, reads back and updates through that migration's tables and
//! columns. All probes of one run share one transaction that is always rolled
//! back, so a probe never leaves data behind. On SQLite each statement runs as
//! the probe reaches it; on PostgreSQL the probes are written into one
//! PL/pgSQL block that runs in one round trip.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use crate::catalogue;

/// A connection to the tenant schema being probed.
pub enum ProbeConn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe {probe} failed: {message}")]
    Failed {
        probe: &'static str,
        message: String,
    },
}

#[derive(QueryableByName)]
struct V {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// A row a probe inserted: its id, already read back (SQLite), or the
/// PL/pgSQL variable that holds it once the block runs (PostgreSQL).
#[derive(Debug, Clone)]
enum Id {
    Read(i64),
    Var(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Read(id) => write!(f, "{id}"),
            Id::Var(name) => f.write_str(name),
        }
    }
}

/// How the probes' statements reach the database.
enum Mode<'c> {
    /// SQLite: each statement runs when the probe reaches it (in-process,
    /// a statement costs microseconds).
    Now(&'c mut SqliteConnection),
    /// PostgreSQL: the statements are collected into one PL/pgSQL block that
    /// runs in one round trip instead of ~130 (two per statement). Across a
    /// 2.4 ms round trip that took the probes from 190 to 28 ms per tenant;
    /// on loopback both cost ~17 ms, PostgreSQL loading its caches for the
    /// tenant's tables (docs/benchmarks.md). With `pg: false` the block
    /// is SQLite-flavoured text that never runs: how `Probe::tables`
    /// reads what a probe names on either backend.
    Block { body: String, vars: usize, pg: bool },
}

/// The message a failed check gives, the same on both backends.
fn mismatch(want: &str, got: Option<&str>, sql: &str) -> String {
    let got = got.map_or_else(|| "NULL".to_string(), |g| format!("'{g}'"));
    format!("expected '{want}', got {got} from: {sql}")
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What the probes need of a connection.
struct Ctx<'c> {
    mode: Mode<'c>,
    /// The shop and cashier most probes share (each row a probe writes is
    /// its own, so they cannot see each other); probes that count rows per
    /// shop or write the shop's one settings row make their own.
    shared: Option<(Id, Id)>,
}

impl Ctx<'_> {
    fn pg(&self) -> bool {
        matches!(self.mode, Mode::Block { pg: true, .. })
    }

    /// Marks where the next probe's statements start (for the error).
    fn start(&mut self, probe: &str) {
        if let Mode::Block { body, .. } = &mut self.mode {
            body.push_str(&format!("tp_probe := {};\n", literal(probe)));
        }
    }

    fn exec(&mut self, sql: &str) -> Result<(), String> {
        match &mut self.mode {
            Mode::Now(c) => c.batch_execute(sql).map_err(|e| format!("{e} (in: {sql})")),
            Mode::Block { body, .. } => {
                body.push_str(sql);
                body.push_str(";\n");
                Ok(())
            }
        }
    }

    /// The first row's `v`, as text (SQLite).
    fn value(c: &mut SqliteConnection, sql: &str) -> Result<Option<String>, String> {
        let rows: Vec<V> = diesel::sql_query(sql)
            .load(c)
            .map_err(|e| format!("{e} (in: {sql})"))?;
        Ok(rows.into_iter().next().and_then(|r| r.v))
    }

    /// Runs a query only to see that it runs (its result is not checked).
    fn read(&mut self, sql: &str) -> Result<(), String> {
        match &mut self.mode {
            Mode::Now(c) => Self::value(c, sql).map(drop),
            Mode::Block { body, .. } => {
                body.push_str(&format!("PERFORM 1 FROM ({sql}) AS q;\n"));
                Ok(())
            }
        }
    }

    /// Runs an `INSERT` and gives the new row's id.
    fn insert(&mut self, sql: &str) -> Result<Id, String> {
        match &mut self.mode {
            Mode::Now(c) => {
                let id = Self::value(c, &format!("{sql} RETURNING CAST(id AS TEXT) AS v"))?;
                id.and_then(|s| s.parse().ok())
                    .map(Id::Read)
                    .ok_or_else(|| format!("no id returned by: {sql}"))
            }
            Mode::Block { body, vars, .. } => {
                *vars += 1;
                let var = format!("tp_id{vars}");
                body.push_str(&format!("{sql} RETURNING id INTO {var};\n"));
                Ok(Id::Var(var))
            }
        }
    }

    /// The first row's `v` must be `want`.
    fn check(&mut self, sql: &str, want: &str) -> Result<(), String> {
        match &mut self.mode {
            Mode::Now(c) => {
                let got = Self::value(c, sql)?;
                if got.as_deref() == Some(want) {
                    Ok(())
                } else {
                    Err(mismatch(want, got.as_deref(), sql))
                }
            }
            Mode::Block { body, .. } => {
                let (want, text) = (literal(want), literal(sql));
                body.push_str(&format!(
                    "SELECT q.v INTO tp_got FROM ({sql}) AS q LIMIT 1;\n\
                     IF tp_got IS DISTINCT FROM {want} THEN\n\
                     RAISE EXCEPTION USING MESSAGE = format('expected %L, got %s from: %s', \
                     {want}::text, COALESCE(quote_literal(tp_got), 'NULL'), {text}::text);\n\
                     END IF;\n"
                ));
                Ok(())
            }
        }
    }

    /// The shared shop and cashier to hang a probe's rows on: two inserts
    /// per run instead of two per probe.
    fn shop_and_user(&mut self) -> Result<(Id, Id), String> {
        if let Some(ids) = &self.shared {
            return Ok(ids.clone());
        }
        let ids = self.own_shop_and_user("shared")?;
        self.shared = Some(ids.clone());
        Ok(ids)
    }

    /// A shop and a cashier of the probe's own.
    fn own_shop_and_user(&mut self, tag: &str) -> Result<(Id, Id), String> {
        let shop = self.insert(&format!(
            "INSERT INTO shop_profile (name) VALUES ('probe {tag}')"
        ))?;
        let user = self.insert(&format!(
            "INSERT INTO users (username, password_hash, role) VALUES ('probe-{tag}', 'x', 'cashier')"
        ))?;
        Ok((shop, user))
    }

    fn sale(&mut self, shop: &Id, user: &Id, phone: &str, total: i64) -> Result<Id, String> {
        self.insert(&format!(
            "INSERT INTO sales (shop_id, user_id, customer_phone, total_minor, currency, sold_at) \
             VALUES ({shop}, {user}, '{phone}', {total}, 'USD', '2026-05-04 10:15:00')"
        ))
    }
}

type ProbeFn = fn(&mut Ctx) -> Result<(), String>;

/// One probe: the feature it checks (its required migration comes from the
/// catalogue) and the check.
pub struct Probe {
    /// A catalogue feature, or `baseline` for the phase-0 tables.
    pub name: &'static str,
    run: ProbeFn,
}

impl Probe {
    /// The migration version the probe needs.
    pub fn requires(&self) -> Option<&'static str> {
        match self.name {
            "baseline" => catalogue::phase_version(0),
            name => catalogue::feature(name).and_then(|f| f.requires),
        }
    }

    pub fn phase(&self) -> u8 {
        catalogue::feature(self.name).map_or(0, |f| f.phase)
    }

    /// The tenant tables the probe's statements name, on either backend.
    /// The shared shop and cashier are left out: whichever probe runs
    /// first inserts them, and `baseline` proves those tables itself.
    pub fn tables(&self) -> &'static [&'static str] {
        static TABLES: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
        let all = TABLES.get_or_init(|| PROBES.iter().map(named_tables).collect());
        PROBES
            .iter()
            .position(|p| p.name == self.name)
            .and_then(|i| all.get(i))
            .map_or(catalogue::all_tables(), Vec::as_slice)
    }
}

/// Renders a probe's statements for both backends (nothing runs) and keeps
/// the words that are tenant tables. A probe that cannot render (none can:
/// rendering only appends text) names every table.
fn named_tables(p: &Probe) -> Vec<&'static str> {
    let mut text = String::new();
    for pg in [false, true] {
        let mut ctx = Ctx {
            mode: Mode::Block {
                body: String::new(),
                vars: 0,
                pg,
            },
            shared: Some((Id::Var("tp_shop".into()), Id::Var("tp_user".into()))),
        };
        if (p.run)(&mut ctx).is_err() {
            return catalogue::all_tables().to_vec();
        }
        if let Mode::Block { body, .. } = ctx.mode {
            text.push_str(&body);
        }
    }
    let words: BTreeSet<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_ascii_lowercase)
        .collect();
    catalogue::all_tables()
        .iter()
        .copied()
        .filter(|t| words.contains(*t))
        .collect()
}

/// Which probes a run proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeSet {
    /// None (a move or restore checks rows instead).
    Off,
    /// What the run changed: the probes of the features whose migrations
    /// it applied or reverted, and every probe that names a table one of
    /// those migrations changed (`catalogue::tables_changed_by`). The
    /// others were proven by the run that brought their migrations, in the
    /// same transaction, and nothing since has changed their tables.
    #[default]
    Changed,
    /// Every probe of the version reached (a rollout's `verify`).
    Full,
}

/// The probes a run from `start` that reached `reached` must pass.
pub fn select(set: ProbeSet, start: Option<&str>, reached: Option<&str>) -> Vec<&'static Probe> {
    match set {
        ProbeSet::Off => Vec::new(),
        ProbeSet::Full => probes_for(reached),
        ProbeSet::Changed => {
            // `None` (an empty schema) sorts before every version.
            let (low, high) = if start <= reached {
                (start, reached)
            } else {
                (reached, start)
            };
            let crossed: Vec<&'static str> = catalogue::versions()
                .iter()
                .map(|m| m.version.as_str())
                .filter(|v| Some(*v) > low && Some(*v) <= high)
                .collect();
            let changed: BTreeSet<&str> = crossed
                .iter()
                .flat_map(|v| catalogue::tables_changed_by(v).iter().copied())
                .collect();
            probes_for(reached)
                .into_iter()
                .filter(|p| {
                    p.requires().is_some_and(|r| crossed.contains(&r))
                        || p.tables().iter().any(|t| changed.contains(t))
                })
                .collect()
        }
    }
}

pub const PROBES: &[Probe] = &[
    Probe {
        name: "baseline",
        run: baseline,
    },
    Probe {
        name: "invoice_numbering",
        run: invoice_numbering,
    },
    Probe {
        name: "branding",
        run: branding,
    },
    Probe {
        name: "audit_diff",
        run: audit_diff,
    },
    Probe {
        name: "day_end_lock",
        run: day_end_lock,
    },
    Probe {
        name: "expense_categories",
        run: expense_categories,
    },
    Probe {
        name: "sales_heatmap",
        run: sales_heatmap,
    },
    Probe {
        name: "customer_metrics",
        run: customer_metrics,
    },
    Probe {
        name: "recommendations",
        run: recommendations,
    },
    Probe {
        name: "ai_assistant",
        run: ai_assistant,
    },
    Probe {
        name: "credit_reminders",
        run: credit_reminders,
    },
    Probe {
        name: "staff_roles",
        run: staff_roles,
    },
    Probe {
        name: "user_invites",
        run: user_invites,
    },
    Probe {
        name: "webhooks",
        run: webhooks,
    },
    Probe {
        name: "audit_exports",
        run: audit_exports,
    },
    Probe {
        name: "sale_locks",
        run: sale_locks,
    },
];

/// The probes a schema at `version` must pass.
pub fn probes_for(version: Option<&str>) -> Vec<&'static Probe> {
    let Some(version) = version else {
        return Vec::new();
    };
    PROBES
        .iter()
        .filter(|p| p.requires().is_some_and(|r| r <= version))
        .collect()
}

/// Runs every probe for `version` (see `run_probes`).
pub fn run(conn: ProbeConn<'_>, version: Option<&str>) -> Result<Vec<&'static str>, ProbeError> {
    run_probes(conn, &probes_for(version))
}

/// Runs `probes` in order inside a transaction that is always rolled back
/// (a savepoint when the caller already has a transaction open); returns
/// the names of the probes that passed (all of them, or an error). No
/// probes: nothing runs, not even the transaction.
pub fn run_probes(
    conn: ProbeConn<'_>,
    probes: &[&'static Probe],
) -> Result<Vec<&'static str>, ProbeError> {
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let mut outcome: Result<Vec<&'static str>, ProbeError> = Ok(Vec::new());
    // Always rolled back: probes never leave data behind.
    let rolled_back = match conn {
        ProbeConn::Sqlite(c) => c.transaction(|c| {
            outcome = each(
                probes,
                &mut Ctx {
                    mode: Mode::Now(c),
                    shared: None,
                },
            );
            Err::<(), _>(diesel::result::Error::RollbackTransaction)
        }),
        ProbeConn::Postgres(c) => c.transaction(|c| {
            let mut ctx = Ctx {
                mode: Mode::Block {
                    body: String::new(),
                    vars: 0,
                    pg: true,
                },
                shared: None,
            };
            outcome = each(probes, &mut ctx);
            if let (Ok(_), Mode::Block { body, vars, .. }) = (&outcome, &ctx.mode) {
                if let Err(e) = c.batch_execute(&pg_block(body, *vars)) {
                    outcome = Err(block_error(&e.to_string()));
                }
            }
            Err::<(), _>(diesel::result::Error::RollbackTransaction)
        }),
    };
    match rolled_back {
        Err(diesel::result::Error::RollbackTransaction) | Ok(()) => outcome,
        Err(e) => Err(ProbeError::Failed {
            probe: "rollback",
            message: e.to_string(),
        }),
    }
}

/// Runs (SQLite) or writes into the block (PostgreSQL) every probe in order.
fn each(probes: &[&'static Probe], ctx: &mut Ctx) -> Result<Vec<&'static str>, ProbeError> {
    let mut passed = Vec::with_capacity(probes.len());
    for p in probes {
        ctx.start(p.name);
        (p.run)(ctx).map_err(|message| ProbeError::Failed {
            probe: p.name,
            message,
        })?;
        passed.push(p.name);
    }
    Ok(passed)
}

/// What a failure inside the PL/pgSQL block starts with, before the probe's
/// name.
const BLOCK_ERROR: &str = "tenantplane probe ";

/// The probes' statements as one PL/pgSQL block. A failing statement or
/// check raises an error naming the probe it belongs to.
fn pg_block(body: &str, vars: usize) -> String {
    let ids: String = (1..=vars).map(|i| format!("tp_id{i} bigint;\n")).collect();
    format!(
        "DO $tp_probes$\nDECLARE\ntp_probe text := '';\ntp_got text;\n{ids}BEGIN\n{body}\
         EXCEPTION WHEN OTHERS THEN\n\
         RAISE EXCEPTION USING MESSAGE = {prefix} || tp_probe || ': ' || SQLERRM;\n\
         END\n$tp_probes$",
        prefix = literal(BLOCK_ERROR)
    )
}

/// The probe error of a failed block, attributed to the probe it names.
fn block_error(message: &str) -> ProbeError {
    let named = message.find(BLOCK_ERROR).and_then(|at| {
        let rest = &message[at + BLOCK_ERROR.len()..];
        let (name, detail) = rest.split_once(": ")?;
        let probe = PROBES.iter().find(|p| p.name == name)?;
        Some(ProbeError::Failed {
            probe: probe.name,
            message: detail.trim_end().to_string(),
        })
    });
    named.unwrap_or_else(|| ProbeError::Failed {
        probe: "probes",
        message: message.to_string(),
    })
}

fn baseline(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    c.exec(&format!(
        "INSERT INTO settings (shop_id, currency, tax_rate_bp) VALUES ({shop}, 'EUR', 1900)"
    ))?;
    let sale = c.sale(&shop, &user, "+100", 1234)?;
    c.exec(&format!(
        "UPDATE sales SET note = 'probe', total_minor = 1500 WHERE id = {sale}"
    ))?;
    c.check(
        &format!(
            "SELECT note || ':' || CAST(total_minor AS TEXT) AS v FROM sales WHERE id = {sale}"
        ),
        "probe:1500",
    )?;
    c.insert(&format!(
        "INSERT INTO expenses (shop_id, user_id, amount_minor, currency, category, spent_at) VALUES ({shop}, {user}, 999, 'EUR', 'Rent', '2026-05-04 09:00:00')"
    ))?;
    let credit = c.insert(&format!(
        "INSERT INTO credits (shop_id, customer_name, amount_minor, currency) VALUES ({shop}, 'Probe Debtor', 700, 'EUR')"
    ))?;
    c.exec(&format!(
        "UPDATE credits SET paid_minor = 200, status = 'open' WHERE id = {credit}"
    ))?;
    c.check(
        &format!(
            "SELECT CAST(amount_minor - paid_minor AS TEXT) AS v FROM credits WHERE id = {credit}"
        ),
        "500",
    )?;
    let audit = c.insert(&format!(
        "INSERT INTO audit_log (user_id, action, details) VALUES ({user}, 'probe', 'x')"
    ))?;
    c.check(
        &format!("SELECT action AS v FROM audit_log WHERE id = {audit}"),
        "probe",
    )
}

fn invoice_numbering(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.own_shop_and_user("invoice")?;
    let first = c.sale(&shop, &user, "", 100)?;
    let second = c.sale(&shop, &user, "", 200)?;
    c.check(
        &format!("SELECT CAST(invoice_number AS TEXT) AS v FROM sales WHERE id = {first}"),
        "1",
    )?;
    c.check(
        &format!("SELECT CAST(invoice_number AS TEXT) AS v FROM sales WHERE id = {second}"),
        "2",
    )?;
    c.exec(&format!(
        "UPDATE sales SET note = 'numbered' WHERE id = {second}"
    ))?;
    c.check(&format!("SELECT CAST(count(DISTINCT invoice_number) AS TEXT) AS v FROM sales WHERE shop_id = {shop}"), "2")
}

fn branding(c: &mut Ctx) -> Result<(), String> {
    let (shop, _) = c.shop_and_user()?;
    let blob = if c.pg() {
        "'\\xdeadbeef'::bytea"
    } else {
        "X'DEADBEEF'"
    };
    c.exec(&format!(
        "UPDATE shop_profile SET logo_path = '/logo.png', primary_colour = '#112233', secondary_colour = '#445566', \
         invoice_prefix = 'INV-', watermark_path = '/wm.png', signature_blob = {blob} WHERE id = {shop}"
    ))?;
    c.check(
        &format!(
            "SELECT logo_path || primary_colour || secondary_colour || invoice_prefix || watermark_path || CAST(length(signature_blob) AS TEXT) AS v \
             FROM shop_profile WHERE id = {shop}"
        ),
        "/logo.png#112233#445566INV-/wm.png4",
    )
}

fn audit_diff(c: &mut Ctx) -> Result<(), String> {
    let (_, user) = c.shop_and_user()?;
    let id = c.insert(&format!(
        "INSERT INTO audit_log (user_id, action, resource_type, resource_id, before_state, after_state, ip_address, user_agent) \
         VALUES ({user}, 'sale.update', 'sale', '42', '{{\"total\":1}}', '{{\"total\":2}}', '203.0.113.9', 'probe')"
    ))?;
    c.exec(&format!(
        "UPDATE audit_log SET user_agent = 'probe/2' WHERE id = {id}"
    ))?;
    c.check(
        &format!("SELECT resource_type || ':' || resource_id || ':' || after_state || ':' || ip_address || ':' || user_agent AS v FROM audit_log WHERE id = {id}"),
        "sale:42:{\"total\":2}:203.0.113.9:probe/2",
    )
}

fn day_end_lock(c: &mut Ctx) -> Result<(), String> {
    let (shop, _) = c.own_shop_and_user("lock")?;
    c.exec(&format!(
        "INSERT INTO settings (shop_id, locked_until) VALUES ({shop}, '2026-05-04 23:59:59')"
    ))?;
    c.exec(&format!(
        "UPDATE settings SET locked_until = '2026-05-05 23:59:59' WHERE shop_id = {shop}"
    ))?;
    c.check(&format!("SELECT CAST(count(*) AS TEXT) AS v FROM settings WHERE shop_id = {shop} AND locked_until > '2026-05-05 00:00:00'"), "1")
}

fn expense_categories(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    let cat = c.insert(&format!(
        "INSERT INTO expense_categories (shop_id, name, color, rules_json) VALUES ({shop}, 'Probe', '#abcdef', '{{\"match\":\"probe\"}}')"
    ))?;
    c.insert(&format!(
        "INSERT INTO expenses (shop_id, user_id, amount_minor, currency, spent_at, category_id) VALUES ({shop}, {user}, 5, 'USD', '2026-05-04 09:00:00', {cat})"
    ))?;
    c.exec(&format!(
        "UPDATE expense_categories SET color = '#000000' WHERE id = {cat}"
    ))?;
    c.check(
        &format!("SELECT c.name || c.color AS v FROM expenses e JOIN expense_categories c ON c.id = e.category_id WHERE e.shop_id = {shop}"),
        "Probe#000000",
    )
}

fn sales_heatmap(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.own_shop_and_user("heatmap")?;
    c.sale(&shop, &user, "", 300)?;
    if c.pg() {
        // A materialized view: readable, and refreshable concurrently
        // (which needs a unique index).
        c.read("SELECT CAST(count(*) AS TEXT) AS v FROM sales_heatmap WHERE day_of_week BETWEEN 0 AND 6 AND hour_of_day BETWEEN 0 AND 23")?;
        c.check(
            // Asked of this schema's view directly: a scan of pg_indexes
            // crosses every tenant schema of the database and grows with it.
            "SELECT CAST(count(*) AS TEXT) AS v FROM pg_index WHERE indrelid = 'sales_heatmap'::regclass AND indisunique",
            "1",
        )
    } else {
        c.check(&format!("SELECT CAST(sale_count AS TEXT) || ':' || CAST(total_minor AS TEXT) AS v FROM sales_heatmap WHERE shop_id = {shop}"), "1:300")
    }
}

fn customer_metrics(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    c.sale(&shop, &user, "+1999", 500)?;
    c.sale(&shop, &user, "+1999", 250)?;
    c.check(
        &format!("SELECT CAST(visit_count AS TEXT) || ':' || CAST(lifetime_value_minor AS TEXT) AS v FROM customer_metrics WHERE shop_id = {shop} AND customer_phone = '+1999'"),
        "2:750",
    )
}

fn recommendations(c: &mut Ctx) -> Result<(), String> {
    let (shop, _) = c.shop_and_user()?;
    let id = c.insert(&format!(
        "INSERT INTO recommendations (shop_id, kind, subject_key, payload, expires_at) VALUES ({shop}, 'restock', 'sku-1', '{{\"qty\":3}}', '2026-06-01 00:00:00')"
    ))?;
    c.exec(&format!(
        "UPDATE recommendations SET payload = '{{\"qty\":4}}' WHERE id = {id}"
    ))?;
    c.check(
        &format!("SELECT payload AS v FROM recommendations WHERE id = {id}"),
        "{\"qty\":4}",
    )
}

fn ai_assistant(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    let session = c.insert(&format!(
        "INSERT INTO assistant_sessions (user_id, shop_id, title) VALUES ({user}, {shop}, 'probe')"
    ))?;
    c.insert(&format!("INSERT INTO assistant_messages (session_id, role, content) VALUES ({session}, 'user', 'hello')"))?;
    c.insert(&format!("INSERT INTO assistant_messages (session_id, role, content) VALUES ({session}, 'assistant', 'hi')"))?;
    c.exec(&format!(
        "UPDATE assistant_sessions SET title = 'probed' WHERE id = {session}"
    ))?;
    c.check(
        &format!("SELECT s.title || ':' || CAST(count(m.id) AS TEXT) AS v FROM assistant_sessions s JOIN assistant_messages m ON m.session_id = s.id WHERE s.id = {session} GROUP BY s.title"),
        "probed:2",
    )
}

fn credit_reminders(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    let credit = c.insert(&format!(
        "INSERT INTO credits (shop_id, customer_name, customer_phone, amount_minor, currency) VALUES ({shop}, 'Debtor', '+1888', 900, 'USD')"
    ))?;
    c.exec(&format!(
        "UPDATE credits SET last_reminder_at = '2026-05-04 12:00:00', reminder_count = reminder_count + 1, reminder_opt_out = TRUE WHERE id = {credit}"
    ))?;
    c.insert(&format!(
        "INSERT INTO reminder_log (credit_id, channel, recipient, status, triggered_by) VALUES ({credit}, 'whatsapp', '+1888', 'sent', {user})"
    ))?;
    c.check(
        &format!(
            "SELECT CAST(c.reminder_count AS TEXT) || ':' || CASE WHEN c.reminder_opt_out THEN 'out' ELSE 'in' END || ':' || l.status AS v \
             FROM credits c JOIN reminder_log l ON l.credit_id = c.id WHERE c.id = {credit}"
        ),
        "1:out:sent",
    )
}

fn staff_roles(c: &mut Ctx) -> Result<(), String> {
    let user = c.insert("INSERT INTO users (username, password_hash, role) VALUES ('probe-manager', 'x', 'manager')")?;
    c.exec(&format!(
        "UPDATE users SET last_login_at = '2026-05-04 08:00:00', role = 'owner' WHERE id = {user}"
    ))?;
    c.check(
        &format!("SELECT CAST(role AS TEXT) || ':' || CAST(count(last_login_at) AS TEXT) AS v FROM users WHERE id = {user} GROUP BY role"),
        "owner:1",
    )
}

fn user_invites(c: &mut Ctx) -> Result<(), String> {
    let (_, user) = c.shop_and_user()?;
    let invite = c.insert(&format!(
        "INSERT INTO user_invites (email, role, token_hash, invited_by, expires_at) VALUES ('new@shop.example', 'cashier', 'probe-hash', {user}, '2026-06-01 00:00:00')"
    ))?;
    c.exec(&format!("UPDATE user_invites SET accepted_at = '2026-05-05 00:00:00', accepted_user_id = {user} WHERE id = {invite}"))?;
    c.check(&format!("SELECT email || ':' || CAST(role AS TEXT) AS v FROM user_invites WHERE id = {invite} AND accepted_at IS NOT NULL"), "new@shop.example:cashier")
}

fn webhooks(c: &mut Ctx) -> Result<(), String> {
    let (_, user) = c.shop_and_user()?;
    let hook = c.insert(&format!(
        "INSERT INTO api_webhooks (event, target_url, secret, created_by) VALUES ('sale.created', 'https://hooks.example/x', 's3cret', {user})"
    ))?;
    let event = c.insert(&format!("INSERT INTO webhook_events (webhook_id, event, payload) VALUES ({hook}, 'sale.created', '{{}}')"))?;
    c.exec(&format!(
        "UPDATE webhook_events SET attempts = attempts + 1, status = 'failed', last_error = 'timeout', next_attempt_at = '2026-05-04 10:00:00', last_response_code = 504 WHERE id = {event}"
    ))?;
    c.check(
        &format!("SELECT h.status || ':' || e.status || ':' || CAST(e.attempts AS TEXT) AS v FROM webhook_events e JOIN api_webhooks h ON h.id = e.webhook_id WHERE e.id = {event}"),
        "active:failed:1",
    )
}

fn audit_exports(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    let export = c.insert(&format!(
        "INSERT INTO exports (requested_by, shop_id, kind, export_token, expires_at) VALUES ({user}, {shop}, 'audit_log', 'probe-token', '2026-06-01 00:00:00')"
    ))?;
    c.exec(&format!("UPDATE exports SET status = 'ready', file_path = '/exports/x.csv', completed_at = '2026-05-04 10:00:00' WHERE id = {export}"))?;
    c.check(
        &format!("SELECT export_token || ':' || status AS v FROM exports WHERE id = {export}"),
        "probe-token:ready",
    )
}

fn sale_locks(c: &mut Ctx) -> Result<(), String> {
    let (shop, user) = c.shop_and_user()?;
    let sale = c.sale(&shop, &user, "", 100)?;
    c.exec(&format!(
        "UPDATE sales SET locked_by = {user}, locked_at = '2026-05-04 23:00:00' WHERE id = {sale}"
    ))?;
    c.check(&format!("SELECT CAST(count(*) AS TEXT) AS v FROM sales WHERE id = {sale} AND locked_by = {user} AND locked_at IS NOT NULL"), "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_errors_name_their_probe() {
        let e = block_error(
            "tenantplane probe branding: column \"logo_path\" of relation \"shop_profile\" does not exist",
        );
        let ProbeError::Failed { probe, message } = e;
        assert_eq!(probe, "branding");
        assert_eq!(
            message,
            "column \"logo_path\" of relation \"shop_profile\" does not exist"
        );
        // Not ours (a cancelled statement is not caught by the block).
        let ProbeError::Failed { probe, message } =
            block_error("canceling statement due to statement timeout");
        assert_eq!(probe, "probes");
        assert!(message.contains("statement timeout"));
        // A name that is not a probe is not trusted.
        let ProbeError::Failed { probe, .. } = block_error("tenantplane probe nope: x");
        assert_eq!(probe, "probes");
    }

    #[test]
    fn the_block_declares_every_id_it_uses() {
        let block = pg_block(
            "INSERT INTO t (a) VALUES (1) RETURNING id INTO tp_id2;\n",
            2,
        );
        assert!(block.contains("tp_id1 bigint;") && block.contains("tp_id2 bigint;"));
        assert!(block.starts_with("DO $tp_probes$") && block.ends_with("$tp_probes$"));
    }

    #[test]
    fn every_feature_with_a_migration_has_a_probe() {
        for f in catalogue::FEATURES.iter().filter(|f| f.requires.is_some()) {
            assert!(
                PROBES.iter().any(|p| p.name == f.name),
                "{} has no probe",
                f.name
            );
        }
        for p in PROBES {
            assert!(
                p.requires().is_some(),
                "probe {} needs no migration",
                p.name
            );
        }
    }

    fn names(probes: &[&'static Probe]) -> Vec<&'static str> {
        probes.iter().map(|p| p.name).collect()
    }

    #[test]
    fn probes_name_the_tables_they_use_without_the_shared_rows() {
        let of = |name: &str| {
            PROBES
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.tables().to_vec())
                .unwrap_or_default()
        };
        assert_eq!(of("branding"), ["shop_profile"]);
        assert_eq!(of("recommendations"), ["recommendations"]);
        let baseline = of("baseline");
        for t in ["sales", "expenses", "credits", "audit_log"] {
            assert!(baseline.contains(&t), "baseline uses {t}: {baseline:?}");
        }
        // Its own shop and cashier, not the shared ones.
        assert!(of("invoice_numbering").contains(&"users"));
        for p in PROBES {
            assert!(!p.tables().is_empty(), "{} names no table", p.name);
        }
    }

    #[test]
    fn a_run_proves_what_it_changed_and_full_proves_everything() {
        let v = |n| catalogue::phase_version(n);
        let head = catalogue::head();
        // Nothing crossed, nothing to prove.
        assert!(select(ProbeSet::Changed, head, head).is_empty());
        assert!(select(ProbeSet::Off, v(0), head).is_empty());
        assert_eq!(
            names(&select(ProbeSet::Full, head, head)),
            names(&probes_for(head))
        );
        // Phase 0 to head changes a table of every probe.
        assert_eq!(
            names(&select(ProbeSet::Changed, v(0), head)),
            names(&probes_for(head))
        );
        assert_eq!(names(&select(ProbeSet::Changed, None, v(0))), ["baseline"]);
        // Phase 7 brings exports and sale locks, and changes `sales`: the
        // probes that write sales run again, branding and the others not.
        let phase7 = names(&select(ProbeSet::Changed, v(6), head));
        for p in [
            "audit_exports",
            "sale_locks",
            "baseline",
            "invoice_numbering",
        ] {
            assert!(phase7.contains(&p), "{p} in {phase7:?}");
        }
        for p in ["branding", "recommendations", "webhooks", "ai_assistant"] {
            assert!(!phase7.contains(&p), "{p} not in {phase7:?}");
        }
        assert!(phase7.len() < PROBES.len());
        // Rolled back: what is left of the tables the reverted migrations
        // changed, never the probes of features that are gone.
        let back = names(&select(ProbeSet::Changed, head, v(6)));
        assert!(back.contains(&"baseline"), "{back:?}");
        assert!(!back.contains(&"sale_locks") && !back.contains(&"audit_exports"));
    }

    /// Every migration, applied alone, proves the features it brings.
    #[test]
    fn each_migration_proves_its_own_features() {
        for m in catalogue::versions() {
            let before = catalogue::previous(&m.version);
            let chosen = names(&select(ProbeSet::Changed, before, Some(&m.version)));
            for p in PROBES
                .iter()
                .filter(|p| p.requires() == Some(m.version.as_str()))
            {
                assert!(chosen.contains(&p.name), "{} after {}", p.name, m.name);
            }
        }
    }
}
