//! `tenantplane-bench rollout`: the rollout engine against a sequential loop
//! of the stock diesel CLI, on the same kind of tenant databases, in one run.
//!
//! 1. Provision N phase-0 tenants for the engine (control rows + real tenant
//!    databases) and M identical phase-0 databases for the baseline. Not timed
//!    as part of the comparison (`provision`).
//! 2. Engine: one rollout `target: head, selector: all`, run by an in-process
//!    worker, timed from `rollouts::create` until it reads `succeeded`
//!    (`engine`).
//! 3. Baselines: `bash -c 'while read d; do diesel migration run … || exit 1; done'`
//!    over M baseline databases, then `xargs -P <cores> diesel migration run`
//!    over M others (what a careful operator runs), both timed (`baseline`).
//! 4. A second rollout to head over the same N tenants (a no-op), timed.
//! 5. Peak RSS (`VmHWM`).
//! 6. Optionally, the parts of one tenant run (`breakdown`).
//!
//! See `docs/benchmarks.md` for what the figures mean and the measured ones.

mod baseline;
mod breakdown;
mod engine;
mod progress;
mod provision;
mod scratch;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::servers::{self, NewServer};
use tenantplane_migrations::catalogue;
use tenantplane_worker::WorkerConfig;

pub(crate) use provision::pg_schema;
use scratch::Scratch;

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

/// Options of `tenantplane-bench rollout`.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
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
    fn resolve(args: RolloutArgs) -> Result<Settings> {
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
            None => baseline::find_diesel().context(
                "the stock diesel CLI was not found on PATH nor in ~/.cargo/bin; pass --diesel PATH",
            )?,
        };
        // The source tree's folder: this crate sits at crates/bench.
        let migration_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .context("no workspace directory above the bench crate")?
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

/// Entry point of the subcommand.
pub fn run(args: RolloutArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    let mut scratch = Scratch::create(&settings)?;
    let result = bench(&settings, &scratch);
    let cleaned = scratch.cleanup();
    result?;
    cleaned
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
    let diesel_version = baseline::diesel_version(&s.diesel)?;
    baseline::check_migration_dir(&s.migration_dir)?;
    let steps = catalogue::versions()
        .iter()
        .filter(|m| m.version.as_str() > s.phase0)
        .count();
    eprintln!(
        "tenantplane-bench rollout: backend {}, control database {}, {} engine tenants, {} baseline tenants, \
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
    let parallel_list = scratch.dir.join("baseline-parallel.txt");
    let lists = [baseline_list.as_path(), parallel_list.as_path()];
    match s.backend {
        Backend::Sqlite => provision::sqlite(s, scratch, &db, &server, &lists)?,
        Backend::Postgres => provision::postgres(s, &db, &server, &lists)?,
    }
    let provision_secs = provision_started.elapsed().as_secs_f64();
    let hwm_provisioned = peak_rss_kib()?;
    eprintln!(
        "provisioning done in {provision_secs:.1} s; peak RSS so far {:.1} MiB",
        mib(hwm_provisioned)
    );

    // 2. Engine.
    let mut engine = engine::run(s, &db, &actor)?;
    // Stopped so that an idle worker does not share the cores with the loop.
    engine.worker.stop();
    engine::verify(s, &db, &server)?;
    let hwm_engine = peak_rss_kib()?;
    eprintln!(
        "peak RSS after the engine rollout: {:.1} MiB",
        mib(hwm_engine)
    );

    // 3. Baselines: the sequential loop, then the CLI on every core.
    let baseline = baseline::run(s, scratch, &layout, &baseline_list, steps, None)?;
    baseline::verify(s, &layout, &baseline_list)?;
    let parallel = baseline::run(s, scratch, &layout, &parallel_list, steps, Some(cores))?;
    baseline::verify(s, &layout, &parallel_list)?;

    // 4. No-op rollout, with a worker running as in production (it has
    // nothing to do: every task is skipped when the rollout is created).
    let mut worker = engine::start_worker(s, &db)?;
    let noop = engine::run_noop(s, &db, &actor)?;
    worker.stop();

    // 5. Peak RSS.
    let hwm = peak_rss_kib()?;

    // Optional: where the time of one tenant run goes (after the peak RSS, so
    // that it does not count).
    let parts = if s.breakdown > 0 {
        breakdown::run(s, scratch, &server)?
    } else {
        Vec::new()
    };

    let engine_tps = s.tenants as f64 / engine.secs;
    let baseline_tps = s.baseline as f64 / baseline.secs;
    let date = Utc::now().format("%Y-%m-%d %H:%M UTC");
    println!("tenantplane-bench rollout ({date}), {cores} cores");
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
    let parallel_tps = s.baseline as f64 / parallel.secs;
    println!(
        "parallel diesel CLI (xargs -P {cores}): {} tenants in {:.2} s = {parallel_tps:.1} tenants/s",
        s.baseline, parallel.secs
    );
    let ratio = engine_tps / baseline_tps;
    println!("ratio {ratio:.1}x (engine tenants/s / diesel CLI loop tenants/s)");
    println!(
        "ratio {:.2}x (engine tenants/s / parallel diesel CLI tenants/s)",
        engine_tps / parallel_tps
    );
    println!(
        "CPU per tenant, whole machine (/proc/stat busy time): engine {:.1} ms, diesel CLI loop {:.1} ms, parallel diesel CLI {:.1} ms",
        engine.cpu_secs * 1000.0 / s.tenants as f64,
        baseline.cpu_secs * 1000.0 / s.baseline as f64,
        parallel.cpu_secs * 1000.0 / s.baseline as f64
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
            "one tenant run, single-threaded, mean of {} fresh databases each, at phase 0 or migrated untimed to phase 4 first (wall, whole-machine CPU):",
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The process's peak resident set size in KiB.
pub(crate) fn peak_rss_kib() -> Result<u64> {
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
