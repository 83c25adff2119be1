//! `tenantplane-bench fleet`: what a rollout costs the control database as
//! the fleet grows, at 1,000 tenants (the baseline) and at `--tenants`
//! (100,000 by default), each size in its own child process so that each
//! peak RSS is its own.
//!
//! Per size, on a fresh control DB (SQLite file or PostgreSQL database) with
//! tenant rows only (no tenant databases: none of the measured steps opens
//! one):
//! 1. a **no-op rollout** to head over tenants already at head: from
//!    `rollouts::create` until it reads `succeeded` (it finishes at creation);
//! 2. **rollout creation** over the same tenants set back to phase 0: one
//!    pending task per tenant;
//! 3. **`GET /v1/rollouts/{id}` latency** (`rollouts::get`, what the API
//!    handler runs) while a worker churns through the tasks (each fails at
//!    once: the tenant database does not exist, so the claims and
//!    completions run at full speed and the counters are updated under
//!    load);
//! 4. **peak RSS** (`VmHWM`).
//!
//! The parent prints both sizes and the ratios. See `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use tenantplane_api_types::rollouts::RolloutRequest;
use tenantplane_control_db::schema::tenants;
use tenantplane_control_db::{Actor, ControlDb};
use tenantplane_fleet::servers;
use tenantplane_fleet::tenant_db::TenantDbLocation;
use tenantplane_fleet::urls;
use tenantplane_migrations::catalogue;
use tenantplane_rollout::rollouts::{self, Created};
use tenantplane_worker::WorkerConfig;
use uuid::Uuid;

use crate::control_rows;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Control {
    Sqlite,
    Postgres,
}

/// Options of `tenantplane-bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The large fleet.
    #[arg(long, default_value_t = 100_000)]
    tenants: usize,
    /// The baseline fleet, measured in the same run.
    #[arg(long, default_value_t = 1_000)]
    baseline_tenants: usize,
    /// Where the control database lives.
    #[arg(long, value_enum, default_value_t = Control::Sqlite)]
    control: Control,
    /// PostgreSQL server; the bench creates and drops its own database there.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// How long to read the rollout while the worker churns.
    #[arg(long, default_value_t = 10)]
    churn_s: u64,
    /// Worker threads churning meanwhile (on 2 cores, 8 of them and their
    /// PostgreSQL backends make a read wait for a time slice now and then).
    #[arg(long, default_value_t = 8)]
    churn_threads: usize,
    /// Run one size in this process and print its figures as JSON (used by
    /// the parent run).
    #[arg(long, hide = true)]
    child: bool,
}

/// The figures of one fleet size.
#[derive(Debug, Serialize, Deserialize)]
struct Figures {
    tenants: usize,
    noop_s: f64,
    create_s: f64,
    /// `rollouts::get` latencies in ms while the worker churned.
    get_ms: Vec<f64>,
    /// Tasks the worker finished while they were read.
    churned: i64,
    peak_rss_kib: u64,
}

pub fn run(args: FleetArgs) -> Result<()> {
    ensure!(
        args.tenants >= 1 && args.baseline_tenants >= 1,
        "--tenants must be at least 1"
    );
    if args.child {
        let figures = measure(&args)?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let child = |n: usize| -> Result<Figures> {
        eprintln!("fleet of {n} tenants (control DB: {:?})", args.control);
        let out = Command::new(&exe)
            // Each churned task fails with a warning: keep stderr readable.
            .env("TENANTPLANE_LOG", "error")
            .args(["fleet", "--child", "--tenants", &n.to_string()])
            .args(["--control", control_name(args.control)])
            .args([
                "--pg-url",
                &args.pg_url,
                "--churn-s",
                &args.churn_s.to_string(),
                "--churn-threads",
                &args.churn_threads.to_string(),
            ])
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running the child bench")?;
        if !out.status.success() {
            bail!("the {n}-tenant run failed ({})", out.status);
        }
        serde_json::from_slice(&out.stdout).context("reading the child's figures")
    };
    let small = child(args.baseline_tenants)?;
    let large = child(args.tenants)?;
    report(&small, &large);
    Ok(())
}

fn control_name(c: Control) -> &'static str {
    match c {
        Control::Sqlite => "sqlite",
        Control::Postgres => "postgres",
    }
}

fn report(small: &Figures, large: &Figures) {
    let pct = |v: &[f64], p: f64| -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", small.tenants, large.tenants, "ratio"
    );
    let line = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{what:<34} {:>10.3}{unit} {:>10.3}{unit} {:>7.2}x",
            a,
            b,
            b / a
        );
    };
    line("no-op rollout", small.noop_s, large.noop_s, " s");
    line("rollout creation", small.create_s, large.create_s, " s");
    for (name, p) in [
        ("GET rollout p50", 0.5),
        ("GET rollout p99", 0.99),
        ("GET rollout max", 1.0),
    ] {
        line(name, pct(&small.get_ms, p), pct(&large.get_ms, p), "ms");
    }
    println!(
        "{:<34} {:>12} {:>12}",
        "GET reads / tasks churned meanwhile",
        format!("{}/{}", small.get_ms.len(), small.churned),
        format!("{}/{}", large.get_ms.len(), large.churned)
    );
    line(
        "peak RSS (MiB)",
        small.peak_rss_kib as f64 / 1024.0,
        large.peak_rss_kib as f64 / 1024.0,
        "  ",
    );
}

/// Where the peak resident set grew: printed after each step.
fn peak_mib() -> Result<f64> {
    Ok(crate::rollout::peak_rss_kib()? as f64 / 1024.0)
}

/// One size, in this process.
fn measure(args: &FleetArgs) -> Result<Figures> {
    let tag = Uuid::new_v4().simple().to_string()[..12].to_string();
    let dir = std::env::temp_dir().join(format!("tp_bench_fleet_{tag}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pg = match args.control {
        Control::Postgres => {
            let database = TenantDbLocation::PgDatabase {
                server_url: args.pg_url.clone(),
                database: format!("tp_bench_fleet_{tag}"),
            };
            database.create().with_context(|| {
                format!("creating a database on {}", urls::redact_url(&args.pg_url))
            })?;
            Some(database)
        }
        Control::Sqlite => None,
    };
    let result = measure_in(args, &dir, pg.as_ref());
    if let Some(database) = &pg {
        if let Err(e) = database.drop_if_exists() {
            eprintln!("dropping the bench database: {e}");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("removing {}: {e}", dir.display());
    }
    result
}

fn measure_in(
    args: &FleetArgs,
    dir: &std::path::Path,
    pg: Option<&TenantDbLocation>,
) -> Result<Figures> {
    let control_url = match pg {
        Some(TenantDbLocation::PgDatabase {
            server_url,
            database,
        }) => urls::with_database(server_url, database)
            .map_err(|e| anyhow::anyhow!("--pg-url: {e}"))?,
        _ => format!("sqlite://{}", dir.join("control.db").display()),
    };
    let db = ControlDb::open(&control_url).context("opening the control database")?;
    let actor = Actor::system("bench");
    servers::ensure_default(&db, &PathBuf::from(dir)).context("the SQLite server")?;
    let server = servers::find(&mut *db.conn()?, servers::DEFAULT_SERVER)?;
    let head = catalogue::head().context("no migrations")?;
    let phase0 = catalogue::phase_version(0).context("no phase 0")?;
    let ids: Vec<Uuid> = (0..args.tenants).map(|_| Uuid::new_v4()).collect();
    let started = Instant::now();
    control_rows::insert_tenants(&db, &server, head, 0, &ids)?;
    eprintln!(
        "  {} tenant rows in {:.1} s (peak RSS so far {:.1} MiB)",
        ids.len(),
        started.elapsed().as_secs_f64(),
        peak_mib()?
    );

    let request = || -> Result<RolloutRequest> {
        Ok(serde_json::from_value(serde_json::json!({
            "target": "head", "selector": {"all": true}, "max_attempts": 1, "concurrency": 8,
            "failure_budget": {"max_failed_percent": 100}
        }))?)
    };

    // 1. No-op: every tenant is at head.
    let t = Instant::now();
    let Created::Rollout(noop) = rollouts::create(&db, &actor, request()?)? else {
        bail!("a plan instead of a rollout")
    };
    ensure!(
        noop.state == "succeeded",
        "the no-op rollout is {}",
        noop.state
    );
    let noop_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  no-op rollout: {noop_s:.3} s (peak RSS so far {:.1} MiB)",
        peak_mib()?
    );

    // 2. Creation of a rollout with a pending task per tenant.
    diesel::update(tenants::table)
        .set(tenants::schema_version.eq(phase0))
        .execute(&mut *db.conn()?)?;
    let t = Instant::now();
    let Created::Rollout(r) = rollouts::create(&db, &actor, request()?)? else {
        bail!("a plan instead of a rollout")
    };
    let create_s = t.elapsed().as_secs_f64();
    ensure!(
        r.counts.pending as usize == args.tenants,
        "pending: {:?}",
        r.counts
    );
    eprintln!(
        "  rollout creation: {create_s:.3} s (peak RSS so far {:.1} MiB)",
        peak_mib()?
    );

    // 3. Reads while a worker churns through the tasks.
    let worker = tenantplane_worker::start(
        db.clone(),
        WorkerConfig {
            threads: args.churn_threads.max(1),
            poll: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
    )
    .context("starting the worker")?;
    let mut get_ms = Vec::new();
    let until = Instant::now() + Duration::from_secs(args.churn_s);
    let mut last = *r;
    while Instant::now() < until {
        let t = Instant::now();
        last = rollouts::get(&db, &last.id)?;
        get_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.stop();
    let churned = last.counts.failed + last.counts.succeeded;
    eprintln!(
        "  {} reads while {churned} tasks finished (peak RSS {:.1} MiB)",
        get_ms.len(),
        peak_mib()?
    );
    Ok(Figures {
        tenants: args.tenants,
        noop_s,
        create_s,
        get_ms,
        churned,
        peak_rss_kib: crate::rollout::peak_rss_kib()?,
    })
}
