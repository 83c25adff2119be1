//! `tenantplane bench`: the rollout engine against a sequential loop of the
//! stock diesel CLI, on the same kind of tenant databases, in one run.
//!
//! 1. Provision N phase-0 tenants for the engine (control rows + real tenant
//!    databases) and M identical phase-0 databases for the baseline. Not timed
//!    as part of the comparison.
//! 2. Engine: one rollout `target: head, selector: all`, run by an in-process
//!    worker, timed from `rollouts::create` until it reads `succeeded`.
//! 3. Baseline: `bash -c 'for f in …; do diesel migration run … || exit 1; done'`
//!    over the M baseline databases, timed.
//! 4. A second rollout to head over the same N tenants (a no-op), timed.
//! 5. Peak RSS (`VmHWM`).
//!
//! See `docs/benchmarks.md` for what the figures mean and the measured ones.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{NaiveDateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use tenantplane_control_db::db::write_tx;
use tenantplane_control_db::schema::{tasks, tenants};
use tenantplane_control_db::{Actor, ControlConnection, ControlDb};
use tenantplane_fleet::servers::{self, DatabaseServer, NewServer};
use tenantplane_fleet::tenant_db::{self, TenantConnection, TenantDbLocation};
use tenantplane_fleet::tenant_run::{self, RunOptions};
use tenantplane_migrations::catalogue;
use tenantplane_rollout::rollouts::{self, Created, RolloutRequest, Selector};
use tenantplane_worker::{WorkerConfig, WorkerHandle};
use uuid::Uuid;

use crate::cpu_meter::CpuMeter;

/// Tenant rows inserted per statement, and tenants provisioned per batch.
const CHUNK: usize = 500;
/// How often the engine phase reads the rollout's state.
const POLL: Duration = Duration::from_millis(20);
/// How often it reads the whole rollout (counts) for the progress lines.
const FULL_READ: Duration = Duration::from_secs(1);
/// Tenant databases whose applied versions are checked after the engine run.
const SAMPLE: i64 = 25;
/// A rollout that finishes no tenant for this long fails the bench.
const STALL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// One SQLite file per tenant.
    Sqlite,
    /// One PostgreSQL schema per tenant, all in one database.
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Options of `tenantplane bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where the tenant databases live: SQLite files or PostgreSQL schemas.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Tenants the engine migrates.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Databases the diesel CLI loop migrates (default: min(tenants, 200)).
    #[arg(long)]
    baseline_tenants: Option<usize>,
    /// Worker executor threads (default: the worker's, 4 per core).
    #[arg(long)]
    threads: Option<usize>,
    /// The rollout's concurrency (default: the number of worker threads).
    #[arg(long)]
    concurrency: Option<u32>,
    /// Where the control database lives (default: the same as --backend; a
    /// PostgreSQL control database goes into schema `tp_control` of the
    /// bench database).
    #[arg(long, value_enum)]
    control: Option<Backend>,
    /// PostgreSQL server; the bench creates and drops its own database there.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Parent directory of the scratch directory (default: the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The stock diesel CLI (default: `diesel` on PATH, else ~/.cargo/bin/diesel).
    #[arg(long)]
    diesel: Option<PathBuf>,
    /// Keep the scratch directory and database (for inspection).
    #[arg(long)]
    keep: bool,
    /// Also time the parts of one tenant run, single-threaded, on this many
    /// extra phase-0 databases per part (0 = skip).
    #[arg(long, default_value_t = 0)]
    breakdown: usize,
}

/// The options, resolved.
struct Settings {
    backend: Backend,
    control: Backend,
    tenants: usize,
    baseline: usize,
    threads: usize,
    concurrency: u32,
    pg_url: String,
    parent: PathBuf,
    diesel: PathBuf,
    keep: bool,
    breakdown: usize,
    /// The tenant migration folder the diesel CLI runs.
    migration_dir: PathBuf,
    phase0: &'static str,
    head: &'static str,
}

impl Settings {
    fn resolve(args: BenchArgs) -> Result<Settings> {
        ensure!(args.tenants >= 1, "--tenants must be at least 1");
        let baseline = args.baseline_tenants.unwrap_or(args.tenants.min(200));
        ensure!(baseline >= 1, "--baseline-tenants must be at least 1");
        // The worker's own default, so that the bench measures what runs.
        let threads = args
            .threads
            .unwrap_or_else(|| WorkerConfig::default().threads);
        ensure!(threads >= 1, "--threads must be at least 1");
        let concurrency = args
            .concurrency
            .unwrap_or_else(|| u32::try_from(threads).unwrap_or(u32::MAX).min(1024));
        let parent = match args.dir {
            Some(d) => std::path::absolute(&d)
                .with_context(|| format!("resolving --dir {}", d.display()))?,
            None => std::env::temp_dir(),
        };
        let diesel = match args.diesel {
            Some(p) => p,
            None => find_diesel().context(
                "the stock diesel CLI was not found on PATH nor in ~/.cargo/bin; pass --diesel PATH",
            )?,
        };
        let migration_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations/tenant")
            .join(args.backend.name());
        let phase0 = catalogue::phase_version(0).context("the catalogue has no phase 0")?;
        let head = catalogue::head().context("the catalogue is empty")?;
        Ok(Settings {
            backend: args.backend,
            control: args.control.unwrap_or(args.backend),
            tenants: args.tenants,
            baseline,
            threads,
            concurrency,
            pg_url: args.pg_url,
            parent,
            diesel,
            keep: args.keep,
            breakdown: args.breakdown,
            migration_dir,
            phase0,
            head,
        })
    }

    fn needs_pg(&self) -> bool {
        self.backend == Backend::Postgres || self.control == Backend::Postgres
    }
}

fn find_diesel() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("diesel"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".cargo/bin/diesel");
        p.is_file().then_some(p)
    })
}

/// Entry point of the subcommand.
pub fn run(args: BenchArgs) -> Result<()> {
    init_logging();
    let settings = Settings::resolve(args)?;
    let mut scratch = Scratch::create(&settings)?;
    let result = bench(&settings, &scratch);
    let cleaned = scratch.cleanup();
    result?;
    cleaned
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANTPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Ignore a second initialisation (never happens from main).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The scratch directory and database: removed at the end, also on error.
struct Scratch {
    dir: PathBuf,
    /// (admin URL, database name) of the bench database.
    pg: Option<(String, String)>,
    keep: bool,
    done: bool,
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
            done: false,
        };
        if s.needs_pg() {
            let name = format!("tp_bench_{tag}");
            let mut admin = PgConnection::establish(&s.pg_url)
                .with_context(|| format!("connecting to {}", tenant_db::redact_url(&s.pg_url)))?;
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .with_context(|| format!("creating database {name}"))?;
            scratch.pg = Some((s.pg_url.clone(), name));
        }
        Ok(scratch)
    }

    /// URL of the bench database.
    fn pg_db_url(&self) -> Result<String> {
        let (admin, name) = self.pg.as_ref().context("no bench database")?;
        tenant_db::with_database(admin, name).map_err(|e| anyhow!("--pg-url: {e}"))
    }

    fn cleanup(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        if self.keep {
            eprintln!("kept scratch directory {}", self.dir.display());
            if let Some((_, name)) = &self.pg {
                eprintln!("kept database {name}");
            }
            return Ok(());
        }
        let mut failures = Vec::new();
        if let Some((admin, name)) = &self.pg {
            let dropped = PgConnection::establish(admin)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                failures.push(format!("dropping database {name}: {e}"));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            failures.push(format!("removing {}: {e}", self.dir.display()));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("cleanup failed: {}", failures.join("; "))
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("{e:#}");
        }
    }
}

/// Stops the worker when dropped, so an error never leaves executors running
/// against a database that is about to be dropped.
struct Worker(Option<WorkerHandle>);

impl Worker {
    fn stop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.stop();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Progress lines on stderr: at every 10 % and at most every 5 s otherwise.
struct Progress {
    label: String,
    total: usize,
    started: Instant,
    last: Instant,
    next_tenth: usize,
}

impl Progress {
    fn new(label: impl Into<String>, total: usize) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.into(),
            total,
            started: now,
            last: now,
            next_tenth: 1,
        }
    }

    fn update(&mut self, done: usize) {
        let tenth = (done * 10).checked_div(self.total).unwrap_or(10);
        if tenth >= self.next_tenth || self.last.elapsed() >= Duration::from_secs(5) {
            self.next_tenth = tenth + 1;
            self.last = Instant::now();
            eprintln!(
                "{}: {done}/{} ({:.1} s)",
                self.label,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Where the tenants and baseline databases of this run live.
struct Layout {
    control_url: String,
    /// Bench database URL (PostgreSQL runs).
    pg_db_url: Option<String>,
}

fn layout(s: &Settings, scratch: &Scratch) -> Result<Layout> {
    let pg_db_url = if s.needs_pg() {
        Some(scratch.pg_db_url()?)
    } else {
        None
    };
    let control_url = match s.control {
        Backend::Sqlite => format!("sqlite://{}", scratch.dir.join("control.db").display()),
        Backend::Postgres => {
            let url = pg_db_url.as_deref().context("no bench database")?;
            let mut conn =
                PgConnection::establish(url).context("connecting to the bench database")?;
            conn.batch_execute("CREATE SCHEMA tp_control")
                .context("creating schema tp_control")?;
            with_search_path(url, "tp_control")
        }
    };
    Ok(Layout {
        control_url,
        pg_db_url,
    })
}

/// The URL with `options=-csearch_path=<schema>` (libpq applies it at
/// connect time, so every connection of a pool gets it).
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

fn bench(s: &Settings, scratch: &Scratch) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let diesel_version = diesel_version(&s.diesel)?;
    check_migration_dir(&s.migration_dir)?;
    let steps = catalogue::versions()
        .iter()
        .filter(|m| m.version.as_str() > s.phase0)
        .count();
    eprintln!(
        "tenantplane bench: backend {}, control database {}, {} engine tenants, {} baseline tenants, \
         {} worker threads, rollout concurrency {}, scratch {}",
        s.backend.name(),
        s.control.name(),
        s.tenants,
        s.baseline,
        s.threads,
        s.concurrency,
        scratch.dir.display()
    );
    let layout = layout(s, scratch)?;
    let db = ControlDb::open(&layout.control_url).context("opening the control database")?;
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
            let url = layout.pg_db_url.clone().context("no bench database")?;
            let view = servers::register(
                &db,
                &actor,
                NewServer {
                    name: Some("bench-pg".to_string()),
                    kind: "postgres".to_string(),
                    url,
                    isolation: Some("schema".to_string()),
                    capacity: Some(i32::try_from(s.tenants.max(10_000)).unwrap_or(i32::MAX)),
                },
            )
            .context("registering the PostgreSQL server")?;
            servers::find(&mut *db.conn()?, &view.id).context("reading the PostgreSQL server")?
        }
    };
    let baseline_list = scratch.dir.join("baseline.txt");
    match s.backend {
        Backend::Sqlite => provision_sqlite(s, scratch, &db, &server, &baseline_list)?,
        Backend::Postgres => provision_pg(s, &db, &server, &baseline_list)?,
    }
    let provision_secs = provision_started.elapsed().as_secs_f64();
    let hwm_provisioned = peak_rss_kib()?;
    eprintln!(
        "provisioning done in {provision_secs:.1} s; peak RSS so far {:.1} MiB",
        mib(hwm_provisioned)
    );

    // 2. Engine.
    let mut engine = run_engine(s, &db, &actor)?;
    // Stopped so that an idle worker does not share the cores with the loop.
    engine.worker.stop();
    verify_engine(s, &db, &server)?;
    let hwm_engine = peak_rss_kib()?;
    eprintln!(
        "peak RSS after the engine rollout: {:.1} MiB",
        mib(hwm_engine)
    );

    // 3. Baseline.
    let baseline = run_baseline(s, scratch, &layout, &baseline_list, steps)?;
    verify_baseline(s, &layout, &baseline_list)?;

    // 4. No-op rollout, with a worker running as in production (it has
    // nothing to do: every task is skipped when the rollout is created).
    let mut worker = start_worker(s, &db)?;
    let noop = run_noop(s, &db, &actor)?;
    worker.stop();

    // 5. Peak RSS.
    let hwm = peak_rss_kib()?;

    // Optional: where the time of one tenant run goes (after the peak RSS, so
    // that it does not count).
    let parts = if s.breakdown > 0 {
        breakdown(s, scratch, &server)?
    } else {
        Vec::new()
    };

    let engine_tps = s.tenants as f64 / engine.secs;
    let baseline_tps = s.baseline as f64 / baseline.secs;
    let date = Utc::now().format("%Y-%m-%d %H:%M UTC");
    println!("tenantplane bench ({date}), {cores} cores");
    println!(
        "backend {} ({}), control database {}, {steps} migrations per tenant (phase 0 {} -> head {}), {diesel_version}",
        s.backend.name(),
        match s.backend {
            Backend::Sqlite => "one file per tenant",
            Backend::Postgres => "one schema per tenant",
        },
        s.control.name(),
        s.phase0,
        s.head
    );
    println!(
        "provisioning (not measured): {} engine tenants + {} baseline databases in {provision_secs:.1} s",
        s.tenants, s.baseline
    );
    println!(
        "engine: {} tenants in {:.2} s = {engine_tps:.0} tenants/s ({} worker threads, concurrency {}; rollout create {:.2} s; \
         tenant runs {:.1} thread-s of {:.1}; status polls {} x, {:.2} s)",
        s.tenants,
        engine.secs,
        s.threads,
        s.concurrency,
        engine.create_secs,
        engine.task_secs,
        engine.secs * s.threads as f64,
        engine.polls,
        engine.poll_secs,
    );
    println!(
        "diesel CLI loop: {} tenants in {:.2} s = {baseline_tps:.1} tenants/s",
        s.baseline, baseline.secs
    );
    let ratio = engine_tps / baseline_tps;
    println!("ratio {ratio:.1}x (engine tenants/s / diesel CLI loop tenants/s)");
    println!(
        "CPU per tenant, whole machine (/proc/stat busy time): engine {:.1} ms, diesel CLI loop {:.1} ms",
        engine.cpu_secs * 1000.0 / s.tenants as f64,
        baseline.cpu_secs * 1000.0 / s.baseline as f64
    );
    println!(
        "no-op rollout to head over {} tenants (all at head): {:.3} s ({} skipped)",
        s.tenants, noop.secs, noop.skipped
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB (after provisioning {:.1} MiB, after the engine rollout {:.1} MiB)",
        mib(hwm),
        mib(hwm_provisioned),
        mib(hwm_engine)
    );
    if !parts.is_empty() {
        println!(
            "one tenant run, single-threaded, mean of {} fresh phase-0 databases each (wall, whole-machine CPU):",
            s.breakdown
        );
        for part in &parts {
            println!(
                "  {:8.2} ms {:8.2} ms CPU  {}",
                part.wall_ms, part.cpu_ms, part.what
            );
        }
        if let Some(floor) = parts.iter().find(|p| p.floor).filter(|p| p.cpu_ms > 0.0) {
            let diesel_ms = baseline.secs * 1000.0 / s.baseline as f64;
            let ceiling = cores as f64 * diesel_ms / floor.cpu_ms;
            println!(
                "ceiling of the ratio on this machine: {cores} cores x {diesel_ms:.2} ms per diesel CLI tenant / \
                 {:.2} ms CPU that the migrations alone cost per tenant = {ceiling:.1}x; the engine reached {ratio:.1}x ({:.0} % of it)",
                floor.cpu_ms,
                100.0 * ratio / ceiling
            );
        }
    }
    Ok(())
}

fn diesel_version(diesel: &Path) -> Result<String> {
    let out = Command::new(diesel)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", diesel.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed: {}",
        diesel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    Ok(format!("diesel CLI {version}"))
}

/// The folder the diesel CLI runs must be the one this build embeds.
fn check_migration_dir(dir: &Path) -> Result<()> {
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading the tenant migrations at {}", dir.display()))?
    {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let version = name.split('_').next().unwrap_or("").replace('-', "");
        on_disk.push(version);
    }
    on_disk.sort();
    let embedded: Vec<&str> = catalogue::versions()
        .iter()
        .map(|m| m.version.as_str())
        .collect();
    ensure!(
        on_disk == embedded,
        "{} does not hold the migrations this binary embeds (rebuild, or run from the source tree)",
        dir.display()
    );
    Ok(())
}

#[derive(Insertable)]
#[diesel(table_name = tenants)]
struct BenchTenant {
    id: String,
    slug: String,
    name: String,
    status: &'static str,
    server_id: String,
    schema_version: &'static str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// Inserts the control rows of provisioned tenants (status `active`, at
/// phase 0), in one statement.
fn insert_tenants(
    db: &ControlDb,
    server: &DatabaseServer,
    phase0: &'static str,
    first: usize,
    ids: &[Uuid],
) -> Result<()> {
    let now = Utc::now().naive_utc();
    let rows: Vec<BenchTenant> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| BenchTenant {
            id: id.to_string(),
            slug: format!("bench-{:07}", first + i + 1),
            name: format!("Bench shop {}", first + i + 1),
            status: "active",
            server_id: server.id.clone(),
            schema_version: phase0,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let mut conn = db.conn()?;
    write_tx(&mut conn, None, |c| {
        let insert = diesel::insert_into(tenants::table).values(&rows);
        match c {
            ControlConnection::Sqlite(c) => insert.execute(c)?,
            ControlConnection::Postgres(c) => insert.execute(c)?,
        };
        Ok(())
    })
    .context("inserting tenant rows")
}

/// Provisions `total` databases in batches of [`CHUNK`]: `make` creates one
/// database on one of the `workers` (one thread each); `after` sees each
/// batch's ids once all of them exist.
fn provision_batches<W: Send>(
    label: &str,
    total: usize,
    workers: &mut [W],
    make: impl Fn(&mut W, &Uuid) -> Result<()> + Sync,
    mut after: impl FnMut(usize, &[Uuid]) -> Result<()>,
) -> Result<()> {
    let mut progress = Progress::new(label, total);
    let make = &make;
    let mut done = 0;
    while done < total {
        let ids: Vec<Uuid> = (0..CHUNK.min(total - done))
            .map(|_| Uuid::new_v4())
            .collect();
        let per = ids.len().div_ceil(workers.len().max(1));
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = workers
                .iter_mut()
                .zip(ids.chunks(per))
                .map(|(w, part)| {
                    scope.spawn(move || -> Result<()> {
                        for id in part {
                            make(w, id)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a provisioning thread panicked"))??;
            }
            Ok(())
        })?;
        after(done, &ids)?;
        done += ids.len();
        progress.update(done);
    }
    Ok(())
}

/// SQLite: one phase-0 template made the way `registry::create` makes a
/// tenant database (create with WAL, connect, migrate), copied per tenant.
fn provision_sqlite(
    s: &Settings,
    scratch: &Scratch,
    db: &ControlDb,
    server: &DatabaseServer,
    baseline_list: &Path,
) -> Result<()> {
    let template_dir = scratch.dir.join("template");
    std::fs::create_dir_all(&template_dir)?;
    let template = template_dir.join("t_template.db");
    let location = TenantDbLocation::SqliteFile {
        path: template.clone(),
    };
    location
        .create()
        .map_err(|e| anyhow!("creating the template database: {e}"))?;
    {
        let mut conn = location
            .connect()
            .map_err(|e| anyhow!("opening the template database: {e}"))?;
        conn.migrate_to(Some(s.phase0))
            .context("migrating the template database to phase 0")?;
        if let TenantConnection::Sqlite(c) = &mut conn {
            c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
                .context("checkpointing the template database")?;
        }
    }
    let mut wal = template.clone().into_os_string();
    wal.push("-wal");
    ensure!(
        !Path::new(&wal).exists(),
        "the template database left a WAL file behind; copies would miss its content"
    );

    let copy_to = |path: &Path| -> Result<()> {
        std::fs::copy(&template, path)
            .map(drop)
            .with_context(|| format!("copying the template to {}", path.display()))
    };
    let mut workers = vec![(); 2];
    provision_batches(
        "provisioning engine tenants",
        s.tenants,
        &mut workers,
        |_, id| match TenantDbLocation::new(server, id) {
            TenantDbLocation::SqliteFile { path } => copy_to(&path),
            other => bail!("unexpected location {other:?} for a SQLite server"),
        },
        |first, ids| insert_tenants(db, server, s.phase0, first, ids),
    )?;

    let baseline_dir = scratch.dir.join("baseline");
    std::fs::create_dir_all(&baseline_dir)?;
    let mut list = BufWriter::new(File::create(baseline_list)?);
    provision_batches(
        "provisioning baseline databases",
        s.baseline,
        &mut workers,
        |_, id| copy_to(&baseline_dir.join(format!("{}.db", tenant_db::db_name(id)))),
        |_, ids| {
            for id in ids {
                let path = baseline_dir.join(format!("{}.db", tenant_db::db_name(id)));
                writeln!(list, "{}", path.display())?;
            }
            Ok(())
        },
    )?;
    list.flush()?;
    Ok(())
}

/// PostgreSQL: every schema created and migrated to phase 0 by the engine's
/// own migration code (no copies: PostgreSQL has no schema clone).
fn provision_pg(
    s: &Settings,
    db: &ControlDb,
    server: &DatabaseServer,
    baseline_list: &Path,
) -> Result<()> {
    let url = &server.url;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut conn = PgConnection::establish(url).context("connecting to the bench database")?;
        // Provisioning only: no need to wait for each commit's flush.
        conn.batch_execute("SET synchronous_commit = off")?;
        workers.push(TenantConnection::Postgres(conn));
    }
    let phase0 = s.phase0;
    let make = |conn: &mut TenantConnection, id: &Uuid| -> Result<()> {
        let schema = tenant_db::db_name(id);
        if let TenantConnection::Postgres(pg) = conn {
            pg.batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\""
            ))
            .with_context(|| format!("creating schema {schema}"))?;
        }
        conn.migrate_to(Some(phase0))
            .with_context(|| format!("migrating schema {schema} to phase 0"))?;
        Ok(())
    };
    provision_batches(
        "provisioning engine tenants",
        s.tenants,
        &mut workers,
        make,
        |first, ids| insert_tenants(db, server, s.phase0, first, ids),
    )?;
    let mut list = BufWriter::new(File::create(baseline_list)?);
    provision_batches(
        "provisioning baseline schemas",
        s.baseline,
        &mut workers,
        make,
        |_, ids| {
            for id in ids {
                writeln!(list, "{}", tenant_db::db_name(id))?;
            }
            Ok(())
        },
    )?;
    list.flush()?;
    Ok(())
}

fn rollout_to_head(s: &Settings) -> RolloutRequest {
    RolloutRequest {
        target: "head".to_string(),
        selector: Selector {
            all: Some(true),
            ..Selector::default()
        },
        waves: None,
        concurrency: Some(s.concurrency),
        per_server_concurrency: None,
        max_attempts: None,
        backoff: None,
        timeout_s: None,
        failure_budget: None,
        verify: None,
        dry_run: None,
        priority: None,
    }
}

fn start_worker(s: &Settings, db: &ControlDb) -> Result<Worker> {
    let config = WorkerConfig {
        threads: s.threads,
        ..WorkerConfig::default()
    };
    let handle = tenantplane_worker::start(db.clone(), config).context("starting the worker")?;
    Ok(Worker(Some(handle)))
}

struct EngineRun {
    secs: f64,
    /// Busy CPU seconds of the whole machine during the run.
    cpu_secs: f64,
    create_secs: f64,
    /// Sum of the tasks' durations (tenant runs as the executor times them).
    task_secs: f64,
    polls: u64,
    poll_secs: f64,
    worker: Worker,
}

fn run_engine(s: &Settings, db: &ControlDb, actor: &Actor) -> Result<EngineRun> {
    eprintln!("engine: rollout to head over {} tenants", s.tenants);
    let started = Instant::now();
    let cpu = CpuMeter::start()?;
    let created =
        rollouts::create(db, actor, rollout_to_head(s)).context("creating the rollout")?;
    let create_secs = started.elapsed().as_secs_f64();
    let Created::Rollout(rollout) = created else {
        bail!("rollouts::create returned a plan, not a rollout");
    };
    // Started right after the rollout exists: an idle executor backs off up
    // to 2 s between polls, which would otherwise add up to 2 s of nothing.
    let worker = start_worker(s, db)?;
    let mut progress = Progress::new("engine", s.tenants);
    let waited = wait_for(db, &rollout.id, &mut progress)?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu.busy_secs()?;
    ensure!(
        waited.succeeded == s.tenants as i64,
        "the rollout succeeded with {} of {} tenants migrated",
        waited.succeeded,
        s.tenants
    );
    // Sum of the task durations, as a plain BIGINT on both backends.
    let task_ms: i64 = tasks::table
        .filter(tasks::rollout_id.eq(&rollout.id))
        .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT)",
        ))
        .first(&mut db.conn()?)
        .context("summing the task durations")?;
    Ok(EngineRun {
        secs,
        cpu_secs,
        create_secs,
        task_secs: task_ms as f64 / 1000.0,
        polls: waited.polls,
        poll_secs: waited.poll_secs,
        worker,
    })
}

struct Waited {
    succeeded: i64,
    skipped: i64,
    polls: u64,
    poll_secs: f64,
}

/// Waits until the rollout is `succeeded`; any other end fails with a few
/// task errors.
///
/// The state is read every [`POLL`] with `rollouts::find_row` (a primary-key
/// read). `rollouts::get`, which also counts the tasks and aggregates their
/// times, is read only every [`FULL_READ`] for progress and once at the end:
/// at 10,000 tenants one `get` costs several milliseconds of control-database
/// work, and calling it every 20 ms took a large share of a 2-core machine
/// away from the engine being measured.
fn wait_for(db: &ControlDb, id: &str, progress: &mut Progress) -> Result<Waited> {
    let mut polls = 0u64;
    let mut poll_time = Duration::ZERO;
    let mut last_done = -1i64;
    let mut last_change = Instant::now();
    let mut last_full: Option<Instant> = None;
    loop {
        let t = Instant::now();
        let state = {
            let mut conn = db.conn()?;
            rollouts::find_row(&mut conn, id)
                .context("reading the rollout")?
                .state
        };
        let full = state != "running" || last_full.is_none_or(|f| f.elapsed() >= FULL_READ);
        let r = if full {
            last_full = Some(Instant::now());
            Some(rollouts::get(db, id).context("reading the rollout")?)
        } else {
            None
        };
        poll_time += t.elapsed();
        polls += 1;
        let Some(r) = r else {
            std::thread::sleep(POLL);
            continue;
        };
        let c = &r.counts;
        let done = c.succeeded + c.failed + c.skipped + c.cancelled;
        match r.state.as_str() {
            "succeeded" => {
                progress.update(done as usize);
                return Ok(Waited {
                    succeeded: c.succeeded,
                    skipped: c.skipped,
                    polls,
                    poll_secs: poll_time.as_secs_f64(),
                });
            }
            "running" => {}
            other => {
                let errors = task_errors(db, id);
                bail!(
                    "the rollout ended {other} ({}): {} succeeded, {} failed, {} pending; {errors}",
                    r.halt_reason.as_deref().unwrap_or("no reason given"),
                    c.succeeded,
                    c.failed,
                    c.pending
                );
            }
        }
        if done != last_done {
            last_done = done;
            last_change = Instant::now();
            progress.update(done as usize);
        } else if last_change.elapsed() > STALL {
            let errors = task_errors(db, id);
            bail!(
                "the rollout made no progress for {} s ({} of {} done); {errors}",
                STALL.as_secs(),
                done,
                r.total
            );
        }
        std::thread::sleep(POLL);
    }
}

/// A few task errors of a rollout, for a failure message.
fn task_errors(db: &ControlDb, id: &str) -> String {
    let mut lines = Vec::new();
    for state in ["failed", "pending", "running"] {
        match rollouts::tasks_page(db, id, Some(state), 200, None) {
            Ok(page) => lines.extend(
                page.items
                    .into_iter()
                    .filter_map(|t| t.last_error.map(|e| format!("{} ({state}): {e}", t.slug))),
            ),
            Err(e) => lines.push(format!("cannot read {state} tasks: {e}")),
        }
        if lines.len() >= 5 {
            break;
        }
    }
    lines.truncate(5);
    if lines.is_empty() {
        "no task error recorded".to_string()
    } else {
        format!("task errors: {}", lines.join(" | "))
    }
}

/// Every tenant's control row is at head, and a random sample of tenant
/// databases holds every catalogue version.
fn verify_engine(s: &Settings, db: &ControlDb, server: &DatabaseServer) -> Result<()> {
    let mut conn = db.conn()?;
    let total: i64 = tenants::table.count().get_result(&mut conn)?;
    let at_head: i64 = tenants::table
        .filter(tenants::schema_version.eq(s.head))
        .count()
        .get_result(&mut conn)?;
    ensure!(
        total == s.tenants as i64 && at_head == total,
        "control database: {at_head} of {total} tenants at head {} (expected {})",
        s.head,
        s.tenants
    );
    let sample: Vec<String> = tenants::table
        .select(tenants::id)
        .order(diesel::dsl::sql::<diesel::sql_types::Double>("random()"))
        .limit(SAMPLE)
        .load(&mut conn)?;
    drop(conn);
    let all: Vec<String> = catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .collect();
    for id in &sample {
        let uuid = Uuid::parse_str(id).with_context(|| format!("tenant id {id}"))?;
        let location = TenantDbLocation::new(server, &uuid);
        let applied = location
            .connect()
            .map_err(|e| anyhow!("connecting to tenant {id}: {e}"))?
            .applied_versions()
            .with_context(|| format!("reading the versions of tenant {id}"))?;
        ensure!(
            applied == all,
            "tenant {id}: its database has {} of {} versions",
            applied.len(),
            all.len()
        );
    }
    eprintln!(
        "engine verified: {total} control rows at head, {} sampled tenant databases hold all {} versions",
        sample.len(),
        all.len()
    );
    Ok(())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The diesel CLI loop, timed. Its stdout is read to print progress.
fn run_baseline(
    s: &Settings,
    scratch: &Scratch,
    layout: &Layout,
    list: &Path,
    steps: usize,
) -> Result<Timed> {
    let diesel = sh_quote(&s.diesel.to_string_lossy());
    let migrations = sh_quote(&s.migration_dir.to_string_lossy());
    let script = match s.backend {
        Backend::Sqlite => format!(
            "for f in {dir}/*.db; do {diesel} migration run --migration-dir {migrations} \
             --database-url \"$f\" || exit 1; done",
            dir = sh_quote(&scratch.dir.join("baseline").to_string_lossy()),
        ),
        Backend::Postgres => {
            let url = layout.pg_db_url.as_deref().context("no bench database")?;
            let prefix = with_search_path(url, "");
            format!(
                "for s in $(cat {list}); do {diesel} migration run --migration-dir {migrations} \
                 --database-url {prefix}\"$s\" || exit 1; done",
                list = sh_quote(&list.to_string_lossy()),
                prefix = sh_quote(&prefix),
            )
        }
    };
    eprintln!(
        "diesel CLI loop over {} databases: bash -c '{script}'",
        s.baseline
    );
    let log_path = scratch.dir.join("baseline.stderr");
    let log = File::create(&log_path)?;
    let started = Instant::now();
    let cpu = CpuMeter::start()?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        // Not the source tree: no diesel.toml is picked up.
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting bash")?;
    let stdout = child.stdout.take().context("no stdout of bash")?;
    let mut progress = Progress::new("diesel CLI loop", s.baseline);
    let mut ran = 0usize;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the diesel CLI output")?;
        if line.starts_with("Running migration") {
            ran += 1;
            if steps > 0 && ran % steps == 0 {
                progress.update(ran / steps);
            }
        }
    }
    let status = child.wait().context("waiting for the diesel CLI loop")?;
    let timed = Timed {
        secs: started.elapsed().as_secs_f64(),
        cpu_secs: cpu.busy_secs()?,
    };
    if !status.success() {
        let mut err = String::new();
        File::open(&log_path)?.read_to_string(&mut err)?;
        let tail: Vec<&str> = err.lines().rev().take(10).collect();
        bail!(
            "the diesel CLI loop failed ({status}) after {ran} migrations: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    ensure!(
        ran == steps * s.baseline,
        "the diesel CLI loop ran {ran} migrations, expected {}",
        steps * s.baseline
    );
    Ok(timed)
}

/// Wall-clock and whole-machine busy CPU seconds of one measured part.
struct Timed {
    secs: f64,
    cpu_secs: f64,
}

/// Every baseline database holds every version, inside its own schema on
/// PostgreSQL (and nothing landed in `public`).
fn verify_baseline(s: &Settings, layout: &Layout, list: &Path) -> Result<()> {
    let all: Vec<String> = catalogue::versions()
        .iter()
        .map(|m| m.version.clone())
        .collect();
    let reader = BufReader::new(File::open(list)?);
    let mut checked = 0;
    for line in reader.lines() {
        let entry = line?;
        let location = match s.backend {
            Backend::Sqlite => TenantDbLocation::SqliteFile {
                path: PathBuf::from(&entry),
            },
            Backend::Postgres => TenantDbLocation::PgSchema {
                server_url: layout.pg_db_url.clone().context("no bench database")?,
                schema: entry.clone(),
            },
        };
        let applied = location
            .connect()
            .map_err(|e| anyhow!("connecting to baseline database {entry}: {e}"))?
            .applied_versions()
            .with_context(|| format!("reading the versions of baseline database {entry}"))?;
        ensure!(
            applied == all,
            "baseline database {entry}: {} of {} versions",
            applied.len(),
            all.len()
        );
        checked += 1;
    }
    ensure!(checked == s.baseline, "{checked} baseline databases listed");
    if let (Backend::Postgres, Some(url)) = (s.backend, &layout.pg_db_url) {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = PgConnection::establish(url)?;
        let in_public: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace",
        )
        .get_result(&mut conn)?;
        ensure!(
            in_public.n == 0,
            "{} relations landed in schema public",
            in_public.n
        );
    }
    eprintln!(
        "baseline verified: {checked} databases hold all {} versions{}",
        all.len(),
        if s.backend == Backend::Postgres {
            " in their own schemas, nothing in public"
        } else {
            ""
        }
    );
    Ok(())
}

struct Noop {
    secs: f64,
    skipped: i64,
}

fn run_noop(s: &Settings, db: &ControlDb, actor: &Actor) -> Result<Noop> {
    let started = Instant::now();
    let created =
        rollouts::create(db, actor, rollout_to_head(s)).context("creating the no-op rollout")?;
    let Created::Rollout(rollout) = created else {
        bail!("rollouts::create returned a plan, not a rollout");
    };
    let mut progress = Progress::new("no-op rollout", s.tenants);
    let waited = wait_for(db, &rollout.id, &mut progress)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        waited.skipped + waited.succeeded == s.tenants as i64,
        "the no-op rollout covered {} of {} tenants",
        waited.skipped + waited.succeeded,
        s.tenants
    );
    Ok(Noop {
        secs,
        skipped: waited.skipped,
    })
}

/// A fresh phase-0 database outside the fleet (for the breakdown).
fn fresh_phase0(
    s: &Settings,
    scratch: &Scratch,
    server: &DatabaseServer,
) -> Result<(Uuid, TenantDbLocation)> {
    let id = Uuid::new_v4();
    let location = match s.backend {
        Backend::Sqlite => {
            let dir = scratch.dir.join("breakdown");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.db", tenant_db::db_name(&id)));
            std::fs::copy(scratch.dir.join("template").join("t_template.db"), &path)
                .with_context(|| format!("copying the template to {}", path.display()))?;
            TenantDbLocation::SqliteFile { path }
        }
        Backend::Postgres => {
            let location = TenantDbLocation::PgSchema {
                server_url: server.url.clone(),
                schema: tenant_db::db_name(&id),
            };
            location
                .create()
                .map_err(|e| anyhow!("creating a schema: {e}"))?;
            location
                .connect()
                .map_err(|e| anyhow!("connecting to a fresh schema: {e}"))?
                .migrate_to(Some(s.phase0))
                .context("migrating a fresh schema to phase 0")?;
            location
        }
    };
    Ok((id, location))
}

/// Mean milliseconds per tenant of the parts of a tenant run, each timed on
/// its own fresh phase-0 databases, one at a time. Every part includes
/// connecting and closing.
fn breakdown(
    s: &Settings,
    scratch: &Scratch,
    server: &DatabaseServer,
) -> Result<Vec<BreakdownPart>> {
    type Part = fn(&mut TenantConnection, &Uuid, &'static str) -> Result<()>;
    fn nothing(_: &mut TenantConnection, _: &Uuid, _: &'static str) -> Result<()> {
        Ok(())
    }
    fn migrate_only(c: &mut TenantConnection, _: &Uuid, head: &'static str) -> Result<()> {
        c.migrate_to(Some(head)).map(drop).context("migrating")
    }
    fn engine_run(
        c: &mut TenantConnection,
        id: &Uuid,
        head: &'static str,
        probes: bool,
    ) -> Result<()> {
        let opts = RunOptions {
            target: Some(head.to_string()),
            probes,
            timeout: Duration::from_secs(300),
            lock_wait: Duration::from_secs(1),
            lock_key: tenant_run::lock_key(&id.to_string()),
        };
        match tenant_run::run_on(c, &opts).error {
            None => Ok(()),
            Some(e) => bail!("tenant run failed: {}", e.message),
        }
    }
    fn without_probes(c: &mut TenantConnection, id: &Uuid, head: &'static str) -> Result<()> {
        engine_run(c, id, head, false)
    }
    fn with_probes(c: &mut TenantConnection, id: &Uuid, head: &'static str) -> Result<()> {
        engine_run(c, id, head, true)
    }
    // (what, the part, whether it is the floor: the least any engine must
    // do per tenant — connect, run the migrations once in one transaction,
    // record their versions).
    let parts: [(&str, Part, bool); 4] = [
        ("connect + close", nothing, false),
        (
            "migrations, one transaction each (as the diesel CLI runs them), in-process",
            migrate_only,
            false,
        ),
        (
            "tenant_run::run_on without probes (one outer transaction, savepoints)",
            without_probes,
            true,
        ),
        (
            "tenant_run::run_on with probes (what a worker runs)",
            with_probes,
            false,
        ),
    ];
    let mut out = Vec::new();
    for (what, part, floor) in parts {
        let mut wall = Duration::ZERO;
        let mut cpu_secs = 0.0;
        for _ in 0..s.breakdown {
            let (id, location) = fresh_phase0(s, scratch, server)?;
            let started = Instant::now();
            let cpu = CpuMeter::start()?;
            let mut conn = location.connect().map_err(|e| anyhow!("connecting: {e}"))?;
            part(&mut conn, &id, s.head).with_context(|| format!("breakdown: {what}"))?;
            drop(conn);
            cpu_secs += cpu.busy_secs()?;
            wall += started.elapsed();
        }
        out.push(BreakdownPart {
            what,
            wall_ms: wall.as_secs_f64() * 1000.0 / s.breakdown as f64,
            cpu_ms: cpu_secs * 1000.0 / s.breakdown as f64,
            floor,
        });
    }
    Ok(out)
}

/// Mean cost per tenant of one part of a tenant run.
struct BreakdownPart {
    what: &'static str,
    wall_ms: f64,
    cpu_ms: f64,
    /// The part that bounds any engine: see [`breakdown`].
    floor: bool,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The process's peak resident set size in KiB.
fn peak_rss_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn adds_the_search_path_option() {
        assert_eq!(
            with_search_path("postgres://h/db", "t_1"),
            "postgres://h/db?options=-csearch_path%3Dt_1"
        );
        assert_eq!(
            with_search_path("postgres://h/db?sslmode=disable", "t_1"),
            "postgres://h/db?sslmode=disable&options=-csearch_path%3Dt_1"
        );
    }
}
