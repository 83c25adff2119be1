//! `tenantplane-bench scale-out`: one rollout to head over the same fleet,
//! run by 1, 2 and 4 worker processes (the same threads per process) on one
//! PostgreSQL control database; tenants/second, the speed-up over one
//! process, the machine's CPU utilisation, and what each tenant costs the
//! control database (transactions, rows, backend CPU).
//!
//! 1. Fresh databases on `--pg-url`: a control database and three tenant
//!    databases (one schema per tenant), plus a SQLite server in a scratch
//!    directory. A quarter of the tenants on SQLite, the rest spread evenly
//!    over the three PostgreSQL databases, all at phase 0 (not timed).
//! 2. For each process count P: create the rollout (`concurrency` = P ×
//!    threads, no per-server limit beyond it), start P worker processes
//!    (`procs.rs`), wait for `succeeded`; then 11 s for the statistics to
//!    arrive and 5 s idle, to tell the per-tenant cost from the
//!    per-process background (relay, scheduler, job runner, heartbeats).
//!    Then the fleet goes back to phase 0 (not timed) for the next P.
//! 3. The table, and the control database's capacity implied by the
//!    measured per-tenant cost (docs/scale-out.md).

mod procs;
mod stats;

pub use procs::{worker_main, WorkerArgs};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::servers::{self, DatabaseServer, NewServer};
use tenantplane_fleet::tenant_db::{TenantConnection, TenantDbLocation};
use tenantplane_migrations::catalogue;
use tenantplane_rollout::rollouts::{self, Created, RolloutRequest, Selector};
use uuid::Uuid;

use crate::control_rows::insert_tenants;
use crate::cpu_meter::CpuMeter;
use procs::WorkerProc;
use stats::DbCounters;

/// How the workers' control-DB sessions are told apart from the bench's own.
const APP_NAME: &str = "tp_scale_worker";
/// Idle time measured after each run: the per-process background rate.
const IDLE: Duration = Duration::from_secs(5);
/// Time for the backends' statistics to arrive: a busy backend reports at
/// most once a second, and one that went idle with counts pending reports
/// them after 10 s (PostgreSQL 15's `PGSTAT_IDLE_INTERVAL`); measured idle
/// rates were 7 times too high with 2 s, as the run's last counts landed
/// in the idle window.
const SETTLE: Duration = Duration::from_secs(11);

/// Options of `tenantplane-bench scale-out`.
#[derive(Debug, clap::Args)]
pub struct ScaleOutArgs {
    /// Tenants in all: a quarter on SQLite, the rest over 3 PostgreSQL
    /// databases.
    #[arg(long, default_value_t = 400)]
    tenants: usize,
    /// Worker process counts to compare, in order (the first is the
    /// baseline of the speed-up).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    processes: Vec<usize>,
    /// Executor threads per worker process.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Control-DB pool size per worker process.
    #[arg(long, default_value_t = 8)]
    pool: u32,
    /// PostgreSQL server; the bench creates and drops its own databases.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Parent of the scratch directory (SQLite tenants).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the databases and the scratch directory.
    #[arg(long)]
    keep: bool,
}

/// One measured run.
struct Run {
    processes: usize,
    secs: f64,
    busy_share: f64,
    /// The run's control-DB counters, background subtracted.
    cost: DbCounters,
    control_cpu_ms: f64,
    worker_cpu_ms: f64,
    idle_xacts_per_s: f64,
}

pub fn run(args: ScaleOutArgs) -> Result<()> {
    ensure!(args.tenants >= 8, "--tenants must be at least 8");
    ensure!(
        !args.processes.is_empty() && args.processes.iter().all(|&p| p >= 1),
        "--processes must list counts of at least 1"
    );
    ensure!(
        args.threads >= 1 && args.pool >= 2,
        "--threads >= 1, --pool >= 2"
    );
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let names: Vec<String> = ["control", "pg1", "pg2", "pg3"]
        .iter()
        .map(|n| format!("tp_scale_{tag}_{n}"))
        .collect();
    let mut admin = PgConnection::establish(&args.pg_url)
        .with_context(|| format!("connecting to {}", args.pg_url))?;
    for n in &names {
        admin
            .batch_execute(&format!("CREATE DATABASE \"{n}\""))
            .with_context(|| format!("creating database {n}"))?;
    }
    let scratch = tempfile::Builder::new()
        .prefix("tp_scale_")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let result = bench(&args, &names, scratch.path(), &mut admin);
    if args.keep {
        let kept = scratch.keep();
        eprintln!("kept {} and databases {names:?}", kept.display());
    } else {
        for n in &names {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"));
        }
    }
    result
}

fn url_of(pg_url: &str, db: &str) -> Result<String> {
    let (base, _) = pg_url
        .rsplit_once('/')
        .context("--pg-url must name a database")?;
    Ok(format!("{base}/{db}"))
}

fn bench(
    args: &ScaleOutArgs,
    names: &[String],
    scratch: &Path,
    admin: &mut PgConnection,
) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let control_url = url_of(&args.pg_url, &names[0])?;
    let worker_url = format!("{control_url}?application_name={APP_NAME}");
    let db = ControlDb::open_with(&control_url, Some(4)).context("opening the control database")?;
    let actor = Actor::system("bench");
    let phase0 = catalogue::phase_version(0).context("no phase 0")?;
    let steps = catalogue::versions()
        .iter()
        .filter(|m| m.version.as_str() > phase0)
        .count();

    // 1. The fleet (not timed).
    let provisioned = Instant::now();
    servers::ensure_default(&db, scratch).context("registering the SQLite server")?;
    let sqlite = servers::find(&mut *db.conn()?, servers::DEFAULT_SERVER)?;
    let mut pg_servers = Vec::new();
    for (i, name) in names[1..].iter().enumerate() {
        let view = servers::register(
            &db,
            &actor,
            NewServer {
                name: Some(format!("pg{}", i + 1)),
                kind: "postgres".into(),
                url: url_of(&args.pg_url, name)?,
                isolation: Some("schema".into()),
                capacity: Some(1_000_000),
            },
        )?;
        pg_servers.push(servers::find(&mut *db.conn()?, &view.id)?);
    }
    let on_sqlite = args.tenants / 4;
    let on_pg = args.tenants - on_sqlite;
    provision_sqlite(&db, &sqlite, scratch, on_sqlite, phase0)?;
    for (i, server) in pg_servers.iter().enumerate() {
        let n = on_pg / 3 + usize::from(i < on_pg % 3);
        provision_pg(&db, server, n, phase0, (i + 1) * 1_000_000)?;
    }
    eprintln!(
        "provisioned {} tenants ({on_sqlite} SQLite, {on_pg} PostgreSQL over 3 databases) in {:.1} s",
        args.tenants,
        provisioned.elapsed().as_secs_f64()
    );

    // 2. One run per process count.
    let mut poll = PgConnection::establish(&control_url)?;
    let mut runs: Vec<Run> = Vec::new();
    for (k, &p) in args.processes.iter().enumerate() {
        let before = stats::counters(admin, &names[0])?;
        let cpu = CpuMeter::start()?;
        let started = Instant::now();
        let rid = create(&db, &actor, "head", p * args.threads)?;
        let mut workers = (0..p)
            .map(|_| WorkerProc::spawn(&worker_url, args.threads, args.pool))
            .collect::<Result<Vec<_>>>()?;
        for w in &mut workers {
            w.wait_ready()?;
        }
        let polls = wait_done(&mut poll, &rid, args.tenants)?;
        let secs = started.elapsed().as_secs_f64();
        let busy = cpu.busy_secs()?;
        std::thread::sleep(SETTLE);
        let settled = stats::counters(admin, &names[0])?;
        let backends_settled = stats::backends_cpu_secs(admin, APP_NAME)?;
        let workers_settled: f64 = workers.iter().map(|w| w.cpu_secs()).sum::<Result<f64>>()?;
        let at_settled = started.elapsed().as_secs_f64();
        std::thread::sleep(IDLE);
        let idle = stats::counters(admin, &names[0])?.minus(settled);
        let idle_backends = stats::backends_cpu_secs(admin, APP_NAME)? - backends_settled;
        let idle_workers: f64 =
            workers.iter().map(|w| w.cpu_secs()).sum::<Result<f64>>()? - workers_settled;
        let idle_s = IDLE.as_secs_f64();
        // The run's cost: everything up to `settled`, minus this bench's
        // own status polls (one transaction each) and the idle background
        // rate over the time the workers ran.
        let total = settled.minus(before);
        let background = |per_s: f64| per_s * at_settled;
        let n = args.tenants as f64;
        let cost = DbCounters {
            xacts: ((total.xacts - polls) as f64 - background(idle.xacts as f64 / idle_s))
                .max(0.0)
                .round() as i64,
            rows_read: (total.rows_read as f64 - background(idle.rows_read as f64 / idle_s))
                .max(0.0) as i64,
            rows_written: (total.rows_written as f64
                - background(idle.rows_written as f64 / idle_s))
            .max(0.0) as i64,
        };
        let run = Run {
            processes: p,
            secs,
            busy_share: busy / (secs * cores as f64),
            cost,
            control_cpu_ms: (backends_settled - background(idle_backends / idle_s)).max(0.0)
                * 1000.0
                / n,
            worker_cpu_ms: (workers_settled - background(idle_workers / idle_s)).max(0.0) * 1000.0
                / n,
            idle_xacts_per_s: idle.xacts as f64 / idle_s / p as f64,
        };
        eprintln!(
            "{p} worker process(es): {} tenants in {secs:.1} s = {:.1} tenants/s",
            args.tenants,
            n / secs
        );
        runs.push(run);
        // Back to phase 0 for the next run (not timed).
        if k + 1 < args.processes.len() {
            let back = create(&db, &actor, "phase:0", p * args.threads)?;
            wait_done(&mut poll, &back, args.tenants)?;
        }
        for w in &mut workers {
            w.stop()?;
        }
    }
    report(args, cores, steps, &runs);
    Ok(())
}

fn create(db: &ControlDb, actor: &Actor, target: &str, concurrency: usize) -> Result<String> {
    let c = u32::try_from(concurrency.min(1024)).unwrap_or(1024);
    let req = RolloutRequest {
        target: target.into(),
        selector: Selector {
            all: Some(true),
            ..Selector::default()
        },
        waves: None,
        concurrency: Some(c),
        per_server_concurrency: Some(c),
        max_attempts: None,
        backoff: None,
        timeout_s: None,
        failure_budget: None,
        verify: None,
        dry_run: None,
        priority: None,
        backup: None,
        restore_on_failure: None,
        allow_drift: None,
    };
    match rollouts::create(db, actor, req).map_err(|e| anyhow!("creating the rollout: {e}"))? {
        Created::Rollout(r) => Ok(r.id),
        Created::Plan(_) => bail!("a plan instead of a rollout"),
    }
}

/// Reads the rollout's state every 100 ms on its own connection (one
/// transaction per read, subtracted from the counts) until it is not
/// running; fails unless it succeeded. Returns the number of reads.
fn wait_done(poll: &mut PgConnection, id: &str, tenants: usize) -> Result<i64> {
    #[derive(QueryableByName)]
    struct State {
        #[diesel(sql_type = Text)]
        state: String,
    }
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let s: State = diesel::sql_query("SELECT state FROM rollouts WHERE id = $1")
            .bind::<Text, _>(id)
            .get_result(poll)?;
        reads += 1;
        match s.state.as_str() {
            "running" => {}
            "succeeded" => return Ok(reads),
            other => bail!("rollout {id} over {tenants} tenants ended {other}"),
        }
        ensure!(
            Instant::now() < deadline,
            "rollout {id} did not finish in an hour"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SQLite tenants: a phase-0 template file copied per tenant.
fn provision_sqlite(
    db: &ControlDb,
    server: &DatabaseServer,
    scratch: &Path,
    n: usize,
    phase0: &'static str,
) -> Result<()> {
    let template = scratch.join("t_template.db");
    let location = TenantDbLocation::SqliteFile {
        path: template.clone(),
    };
    location.create().map_err(|e| anyhow!("template: {e}"))?;
    {
        let mut conn = location.connect().map_err(|e| anyhow!("template: {e}"))?;
        conn.migrate_to(Some(phase0))?;
        if let TenantConnection::Sqlite(c) = &mut conn {
            c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
    }
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        match TenantDbLocation::new(server, id) {
            TenantDbLocation::SqliteFile { path } => {
                std::fs::copy(&template, &path)
                    .with_context(|| format!("copying to {}", path.display()))?;
            }
            other => bail!("unexpected location {other:?}"),
        }
    }
    insert_tenants(db, server, phase0, 0, &ids)
}

/// PostgreSQL tenants: a schema each, migrated to phase 0, 4 at a time.
fn provision_pg(
    db: &ControlDb,
    server: &DatabaseServer,
    n: usize,
    phase0: &'static str,
    first: usize,
) -> Result<()> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let per = ids.len().div_ceil(4).max(1);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = ids
            .chunks(per)
            .map(|part| {
                s.spawn(move || -> Result<()> {
                    for id in part {
                        crate::rollout::pg_schema(server, id, phase0)?;
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
    insert_tenants(db, server, phase0, first, &ids)
}

fn report(args: &ScaleOutArgs, cores: usize, steps: usize, runs: &[Run]) {
    let date = Utc::now().format("%Y-%m-%d %H:%M UTC");
    println!("tenantplane-bench scale-out ({date}), {cores} cores");
    println!(
        "{} tenants ({} SQLite files, {} PostgreSQL schemas over 3 databases), {steps} migrations each \
         (phase 0 -> head); PostgreSQL control database; {} executor threads and a control pool of {} per process",
        args.tenants,
        args.tenants / 4,
        args.tenants - args.tenants / 4,
        args.threads,
        args.pool
    );
    println!(
        "{:>9} {:>8} {:>10} {:>8} {:>8} {:>13} {:>12} {:>12} {:>14} {:>13} {:>15}",
        "processes",
        "threads",
        "tenants/s",
        "speed-up",
        "CPU busy",
        "ctl xacts/t",
        "ctl rows r/t",
        "ctl rows w/t",
        "ctl CPU ms/t",
        "worker ms/t",
        "idle xacts/s/p"
    );
    let base = runs.first().map(|r| args.tenants as f64 / r.secs);
    for r in runs {
        let tps = args.tenants as f64 / r.secs;
        println!(
            "{:>9} {:>8} {:>10.1} {:>7.2}x {:>7.0}% {:>13.1} {:>12.1} {:>12.1} {:>14.2} {:>13.1} {:>15.1}",
            r.processes,
            r.processes * args.threads,
            tps,
            base.map(|b| tps / b).unwrap_or(1.0),
            r.busy_share * 100.0,
            r.cost.xacts as f64 / args.tenants as f64,
            r.cost.rows_read as f64 / args.tenants as f64,
            r.cost.rows_written as f64 / args.tenants as f64,
            r.control_cpu_ms,
            r.worker_cpu_ms,
            r.idle_xacts_per_s
        );
    }
    // What one control-DB core could feed, at the measured cost.
    let costs: Vec<f64> = runs
        .iter()
        .map(|r| r.control_cpu_ms)
        .filter(|c| *c > 0.0)
        .collect();
    if !costs.is_empty() {
        let mean = costs.iter().sum::<f64>() / costs.len() as f64;
        println!(
            "control DB: {mean:.2} ms of backend CPU per tenant (mean over the runs) = at most {:.0} tenants/s per \
             control-DB core before the control DB is the bottleneck",
            1000.0 / mean
        );
    }
}
