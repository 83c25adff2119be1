//! `tenantplane-bench backup`: the backup engine against a sequential loop of
//! the stock CLI (`pg_dump -n <schema> -Fc` / `sqlite3 <file> ".backup …"`),
//! on the same tenant databases, in one run; then the restore drill.
//!
//! 1. Provision N tenants at head with fixture data (`provision`), a SQLite
//!    control database and a `FileStore` in the scratch directory. Not timed.
//! 2. Engine: T threads, each calling `tenantplane_backup::create` on the
//!    next tenant; tenants/second. Then the drill: T threads calling
//!    `tenantplane_backup::verify` on every backup; tenants/second. Every
//!    backup must end `completed`, then `verified`.
//! 3. Baseline: the CLI loop over the first M tenants (`baseline`).
//! 4. Every tenant's live database is fingerprinted before the engine and
//!    after the drill and the loop; they must be equal.
//!
//! See `docs/benchmarks.md` for the measured figures.

mod baseline;
mod provision;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use tenantplane_backup::{FileStore, Reason};
use tenantplane_control_db::schema::backups;
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::servers::{self, DatabaseServer, NewServer};
use tenantplane_fleet::tenant_db::{self, TenantDbLocation};
use tenantplane_fleet::urls;
use tenantplane_migrations::catalogue;
use uuid::Uuid;

use crate::cpu_meter::CpuMeter;
use crate::rollout::Backend;

/// Options of `tenantplane-bench backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where the tenant databases live: SQLite files or PostgreSQL schemas.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Tenants the engine backs up (and the drill verifies).
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Tenants the CLI loop backs up (default: min(tenants, 200)).
    #[arg(long)]
    baseline_tenants: Option<usize>,
    /// Engine threads (default: 2 per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Shops per tenant in the fixture.
    #[arg(long, default_value_t = 2)]
    shops: u32,
    /// Sales per shop in the fixture.
    #[arg(long, default_value_t = 50)]
    sales: u32,
    /// PostgreSQL server; the bench creates and drops its own database there.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Parent directory of the scratch directory (default: the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the scratch directory and database (for inspection).
    #[arg(long)]
    keep: bool,
}

/// The options, resolved.
pub(super) struct Settings {
    backend: Backend,
    tenants: usize,
    baseline: usize,
    threads: usize,
    shops: u32,
    sales: u32,
    pg_url: String,
    parent: PathBuf,
    keep: bool,
    phase0: &'static str,
    head: &'static str,
}

impl Settings {
    fn resolve(args: BackupArgs) -> Result<Settings> {
        ensure!(args.tenants >= 1, "--tenants must be at least 1");
        let baseline = args.baseline_tenants.unwrap_or(args.tenants.min(200));
        ensure!(
            (1..=args.tenants).contains(&baseline),
            "--baseline-tenants must be between 1 and --tenants (the loop backs up the same tenants)"
        );
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let threads = args.threads.unwrap_or(cores * 2);
        ensure!(threads >= 1, "--threads must be at least 1");
        let parent = match args.dir {
            Some(d) => std::path::absolute(&d)
                .with_context(|| format!("resolving --dir {}", d.display()))?,
            None => std::env::temp_dir(),
        };
        Ok(Settings {
            backend: args.backend,
            tenants: args.tenants,
            baseline,
            threads,
            shops: args.shops,
            sales: args.sales,
            pg_url: args.pg_url,
            parent,
            keep: args.keep,
            phase0: catalogue::phase_version(0).context("the catalogue has no phase 0")?,
            head: catalogue::head().context("the catalogue is empty")?,
        })
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The scratch directory and (PostgreSQL runs) the bench database, removed
/// at the end, also on error.
struct Scratch {
    dir: PathBuf,
    pg: Option<TenantDbLocation>,
    keep: bool,
}

impl Scratch {
    fn create(s: &Settings) -> Result<Scratch> {
        let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = s.parent.join(format!("tp_bench_{tag}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating scratch directory {}", dir.display()))?;
        let mut scratch = Scratch {
            dir,
            pg: None,
            keep: s.keep,
        };
        if s.backend == Backend::Postgres {
            let database = TenantDbLocation::PgDatabase {
                server_url: s.pg_url.clone(),
                database: format!("tp_bench_{tag}"),
            };
            database.create().with_context(|| {
                format!(
                    "creating the bench database on {}",
                    urls::redact_url(&s.pg_url)
                )
            })?;
            scratch.pg = Some(database);
        }
        Ok(scratch)
    }

    fn pg_db_url(&self) -> Result<String> {
        let Some(TenantDbLocation::PgDatabase {
            server_url,
            database,
        }) = &self.pg
        else {
            bail!("no bench database");
        };
        urls::with_database(server_url, database).map_err(|e| anyhow!("--pg-url: {e}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept scratch directory {}", self.dir.display());
            return;
        }
        if let Some(database) = &self.pg {
            if let Err(e) = database.drop_if_exists() {
                eprintln!("dropping the bench database: {:#}", anyhow!(e));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// Entry point of the subcommand.
pub fn run(args: BackupArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    let scratch = Scratch::create(&settings)?;
    bench(&settings, &scratch)
}

/// One timed phase over all tenants.
struct Timed {
    secs: f64,
    cpu_secs: f64,
}

/// Runs `each` on every item with `threads` threads; returns the results in
/// item order.
fn timed_parallel<T: Sync, R: Send>(
    label: &str,
    threads: usize,
    items: &[T],
    each: impl Fn(&T) -> Result<R> + Sync,
) -> Result<(Timed, Vec<R>)> {
    let next = AtomicUsize::new(0);
    let (each, next) = (&each, &next);
    let cpu = CpuMeter::start()?;
    let started = Instant::now();
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| -> Result<Vec<(usize, R)>> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> Result<Vec<(usize, R)>> {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(mine);
                        };
                        mine.push((i, each(item)?));
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| anyhow!("a {label} thread panicked"))??,
            );
        }
        Ok(all)
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu.busy_secs()?;
    out.sort_by_key(|(i, _)| *i);
    eprintln!("{label}: {} in {secs:.2} s", items.len());
    Ok((
        Timed { secs, cpu_secs },
        out.into_iter().map(|(_, r)| r).collect(),
    ))
}

/// A fingerprint of every tenant's live database: SQLite, the main file's
/// bytes and modification time (and whether a WAL file exists); PostgreSQL,
/// per schema the relations with their file nodes and the statistics
/// system's counts of inserted, updated and deleted rows.
fn fingerprint(
    s: &Settings,
    server: &DatabaseServer,
    ids: &[Uuid],
) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    match s.backend {
        Backend::Sqlite => {
            for id in ids {
                let TenantDbLocation::SqliteFile { path } = TenantDbLocation::new(server, id)
                else {
                    bail!("not a SQLite tenant");
                };
                let mut h = DefaultHasher::new();
                std::fs::read(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .hash(&mut h);
                std::fs::metadata(&path)?.modified()?.hash(&mut h);
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                std::path::Path::new(&wal).exists().hash(&mut h);
                out.insert(tenant_db::db_name(id), h.finish());
            }
        }
        Backend::Postgres => {
            #[derive(QueryableByName)]
            struct Rel {
                #[diesel(sql_type = Text)]
                schema: String,
                #[diesel(sql_type = Text)]
                rel: String,
                #[diesel(sql_type = BigInt)]
                node: i64,
                #[diesel(sql_type = BigInt)]
                writes: i64,
            }
            let mut conn =
                PgConnection::establish(&server.url).context("connecting to the bench database")?;
            let rels: Vec<Rel> = diesel::sql_query(
                "SELECT n.nspname::text AS schema, c.relname::text AS rel, c.relfilenode::bigint AS node, \
                 coalesce(st.n_tup_ins + st.n_tup_upd + st.n_tup_del, -1)::bigint AS writes \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_stat_user_tables st ON st.relid = c.oid \
                 WHERE n.nspname LIKE 't\\_%' ORDER BY 1, 2",
            )
            .load(&mut conn)
            .context("reading the tenant schemas' relations")?;
            let mut per: BTreeMap<String, DefaultHasher> = BTreeMap::new();
            for r in rels {
                let h = per.entry(r.schema).or_default();
                (r.rel, r.node, r.writes).hash(h);
            }
            out = per.into_iter().map(|(k, h)| (k, h.finish())).collect();
            ensure!(
                out.len() == ids.len(),
                "expected {} tenant schemas, found {}",
                ids.len(),
                out.len()
            );
        }
    }
    Ok(out)
}

fn count_state(db: &ControlDb, state: &str) -> Result<i64> {
    let mut conn = db.conn()?;
    let n: i64 = backups::table
        .filter(backups::state.eq(state))
        .count()
        .get_result(&mut *conn)
        .context("counting backups")?;
    Ok(n)
}

fn bench(s: &Settings, scratch: &Scratch) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    eprintln!(
        "tenantplane-bench backup: backend {}, {} tenants ({} shops x {} sales), {} baseline tenants, {} threads, scratch {}",
        s.backend_name(),
        s.tenants,
        s.shops,
        s.sales,
        s.baseline,
        s.threads,
        scratch.dir.display()
    );
    let control_url = format!("sqlite://{}", scratch.dir.join("control.db").display());
    let db = ControlDb::open(&control_url).context("opening the control database")?;
    let store =
        FileStore::new(scratch.dir.join("store")).map_err(|e| anyhow!("the file store: {e}"))?;
    let actor = Actor::system("bench");

    // 1. Provisioning (not part of the comparison).
    let provision_started = Instant::now();
    let server = match s.backend {
        Backend::Sqlite => {
            servers::ensure_default(&db, &scratch.dir).context("registering the SQLite server")?;
            servers::find(&mut *db.conn()?, servers::DEFAULT_SERVER)
                .context("reading the SQLite server")?
        }
        Backend::Postgres => {
            let view = servers::register(
                &db,
                &actor,
                NewServer {
                    name: Some("bench-pg".to_string()),
                    kind: "postgres".to_string(),
                    url: scratch.pg_db_url()?,
                    isolation: Some("schema".to_string()),
                    capacity: Some(i32::try_from(s.tenants.max(10_000)).unwrap_or(i32::MAX)),
                },
            )
            .context("registering the PostgreSQL server")?;
            servers::find(&mut *db.conn()?, &view.id).context("reading the PostgreSQL server")?
        }
    };
    let ids = provision::tenants(s, &scratch.dir, &db, &server)?;
    let provision_secs = provision_started.elapsed().as_secs_f64();
    eprintln!("provisioning done in {provision_secs:.1} s");
    let before = fingerprint(s, &server, &ids)?;

    // 2. Engine, then the drill.
    let keys: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let (engine, made) = timed_parallel("engine backups", s.threads, &keys, |tenant| {
        tenantplane_backup::create_by(&db, &store, tenant, Reason::Manual, &actor)
            .map_err(|e| anyhow!("backing up tenant {tenant}: {e:#}"))
    })?;
    let completed = made.iter().filter(|b| b.state == "completed").count();
    let bytes: i64 = made.iter().filter_map(|b| b.size_bytes).sum();
    ensure!(
        completed == s.tenants,
        "{completed} of {} backups ended completed",
        s.tenants
    );
    let backup_ids: Vec<String> = made.iter().map(|b| b.id.clone()).collect();
    let (drill, checked) = timed_parallel("restore drill", s.threads, &backup_ids, |id| {
        tenantplane_backup::verify(&db, &store, id)
            .map_err(|e| anyhow!("verifying backup {id}: {e:#}"))
    })?;
    let verified = checked.iter().filter(|b| b.state == "verified").count();
    let verified_rows = count_state(&db, "verified")?;
    ensure!(
        verified == s.tenants && usize::try_from(verified_rows).ok() == Some(s.tenants),
        "{verified} of {} backups ended verified ({verified_rows} rows say so)",
        s.tenants
    );

    // 3. Baseline over the first M tenants.
    let base = baseline::run(s, &scratch.dir, &server, &ids[..s.baseline])?;

    // 4. Nothing touched the live databases.
    let after = fingerprint(s, &server, &ids)?;
    let changed = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .count();
    ensure!(
        changed == 0,
        "{changed} tenants' live databases changed during the run"
    );
    if s.backend == Backend::Postgres {
        ensure!(
            after.len() == s.tenants,
            "scratch schemas left behind: {} tenant-like schemas",
            after.len()
        );
    }

    let engine_tps = s.tenants as f64 / engine.secs;
    let drill_tps = s.tenants as f64 / drill.secs;
    let base_tps = s.baseline as f64 / base.secs;
    let date = Utc::now().format("%Y-%m-%d %H:%M UTC");
    let cli = match s.backend {
        Backend::Sqlite => "sqlite3 .backup loop",
        Backend::Postgres => "pg_dump -Fc loop",
    };
    println!("tenantplane-bench backup ({date}), {cores} cores");
    println!(
        "backend {} ({}), tenants at head {} with fixture data ({} shops x {} sales), control database sqlite, file store",
        s.backend_name(),
        match s.backend {
            Backend::Sqlite => "one file per tenant",
            Backend::Postgres => "one schema per tenant",
        },
        s.head,
        s.shops,
        s.sales
    );
    println!(
        "provisioning (not measured): {} tenants in {provision_secs:.1} s",
        s.tenants
    );
    println!(
        "engine backups: {} tenants in {:.2} s = {engine_tps:.1} tenants/s ({} threads; {:.1} KiB per artifact; all completed)",
        s.tenants,
        engine.secs,
        s.threads,
        bytes as f64 / 1024.0 / s.tenants as f64
    );
    println!(
        "{cli}: {} tenants in {:.2} s = {base_tps:.1} tenants/s ({:.1} KiB per file)",
        s.baseline,
        base.secs,
        base.bytes as f64 / 1024.0 / s.baseline as f64
    );
    println!(
        "ratio {:.1}x (engine tenants/s / {cli} tenants/s)",
        engine_tps / base_tps
    );
    println!(
        "restore drill (verify): {} backups in {:.2} s = {drill_tps:.1} tenants/s ({} threads; all verified)",
        s.tenants, drill.secs, s.threads
    );
    println!(
        "CPU per tenant, whole machine (/proc/stat busy time): engine {:.1} ms, {cli} {:.1} ms, drill {:.1} ms",
        engine.cpu_secs * 1000.0 / s.tenants as f64,
        base.cpu_secs * 1000.0 / s.baseline as f64,
        drill.cpu_secs * 1000.0 / s.tenants as f64
    );
    println!(
        "live tenant databases unchanged: {} of {} (fingerprints before the engine and after the loop)",
        s.tenants - changed,
        s.tenants
    );
    Ok(())
}
